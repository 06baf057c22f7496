"""Annotated dependencies: the service, the settings and the two access levels.

Access rules (issue 4): with `AGENTLB_API_KEY` set every endpoint but health and metrics needs
`Authorization: Bearer <key>`; with `AGENTLB_ADMIN_KEY` set, registry changes, weight changes
and model reloads need the admin key. The admin key is accepted wherever the API key is.
Keys are compared in constant time and never logged. The dependencies are `async def`: they
do no I/O, and a sync dependency would cost a threadpool hop on every request.

The hot path, `select-agent`, applies the same rules without dependency injection
(`bearer_token`, `client_role`, `json_body`): FastAPI's request handling (dependency solving,
body decoding) was about a fifth of a select request's CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import hmac
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr, ValidationError

from agentlb.errors import AuthenticationError, PermissionDeniedError
from agentlb.service import AgentLBService
from agentlb.settings import Settings

BodyT = TypeVar("BodyT", bound=BaseModel)

bearer = HTTPBearer(auto_error=False, description="API key, or the admin key for admin actions")


async def get_service(request: Request) -> AgentLBService:
    service: AgentLBService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[AgentLBService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(presented: str | None, key: SecretStr | None) -> bool:
    if presented is None or key is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), key.get_secret_value().encode("utf-8"))


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return credentials.credentials


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, read as `HTTPBearer` reads it."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        return None
    return token


def auth_and_content_type(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The Authorization and Content-Type headers in one pass over the raw ASGI headers (the
    `Headers` mapping raises and catches a KeyError for each header that is absent)."""
    authorization = content_type = None
    for name, value in headers:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    return authorization, content_type


def client_role(settings: Settings, token: str | None) -> str:
    """Who is calling: "admin", "client" or "anonymous" (when no API key is configured)."""
    if _matches(token, settings.admin_key):
        return "admin"
    if settings.api_key is None:
        return "anonymous"
    if _matches(token, settings.api_key):
        return "client"
    raise AuthenticationError(
        "missing API key: send 'Authorization: Bearer <key>'" if token is None else "invalid API key"
    )


def admin_role(settings: Settings, token: str | None) -> str:
    """Registry, weight and model changes: the admin key when one is configured, else the
    same rule as every other endpoint."""
    if settings.admin_key is None:
        return client_role(settings, token)
    if _matches(token, settings.admin_key):
        return "admin"
    if token is None:
        raise AuthenticationError("missing admin key: send 'Authorization: Bearer <admin key>'")
    if _matches(token, settings.api_key):
        raise PermissionDeniedError("this action needs the admin key")
    raise AuthenticationError("invalid admin key")


async def require_client(settings: SettingsDep, credentials: Credentials) -> str:
    return client_role(settings, _presented(credentials))


async def require_admin(settings: SettingsDep, credentials: Credentials) -> str:
    return admin_role(settings, _presented(credentials))


ClientDep = Annotated[str, Depends(require_client)]
AdminDep = Annotated[str, Depends(require_admin)]


def json_body(model: type[BodyT], raw: bytes, content_type: str | None) -> BodyT:
    """Validate a JSON request body as FastAPI would, for routes that read the body
    themselves: problems raise `RequestValidationError`, so they get the same 422 (field and
    reason) as on every other route."""
    if content_type and "json" not in content_type.split(";", 1)[0].lower():
        raise _invalid_body(f"Content-Type must be application/json, not {content_type!r}")
    if not raw.strip():
        raise _invalid_body("Field required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_context=False, include_input=False)
        if problems[0]["type"] == "json_invalid" and not _is_utf8(raw):
            raise HTTPException(400, "cannot parse the body: it is not UTF-8 encoded JSON") from None
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in problems]
        ) from None


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _invalid_body(reason: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": reason, "type": "value_error"}])
