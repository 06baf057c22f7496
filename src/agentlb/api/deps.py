"""Annotated dependencies: the service, the settings and the two access levels.

Access rules (issue 4): with `AGENTLB_API_KEY` set every endpoint but health and metrics needs
`Authorization: Bearer <key>`; with `AGENTLB_ADMIN_KEY` set, registry changes, weight changes
and model reloads need the admin key. The admin key is accepted wherever the API key is.
Keys are compared in constant time and never logged. The dependencies are `async def`: they
do no I/O, and a sync dependency would cost a threadpool hop on every request.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from agentlb.errors import AuthenticationError, PermissionDeniedError
from agentlb.service import AgentLBService
from agentlb.settings import Settings

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


async def require_client(settings: SettingsDep, credentials: Credentials) -> str:
    """Who is calling: "admin", "client" or "anonymous" (when no API key is configured)."""
    token = _presented(credentials)
    if _matches(token, settings.admin_key):
        return "admin"
    if settings.api_key is None:
        return "anonymous"
    if _matches(token, settings.api_key):
        return "client"
    raise AuthenticationError(
        "missing API key: send 'Authorization: Bearer <key>'" if token is None else "invalid API key"
    )


async def require_admin(settings: SettingsDep, credentials: Credentials) -> str:
    """Registry, weight and model changes: the admin key when one is configured, else the
    same rule as every other endpoint."""
    if settings.admin_key is None:
        return await require_client(settings, credentials)
    token = _presented(credentials)
    if _matches(token, settings.admin_key):
        return "admin"
    if token is None:
        raise AuthenticationError("missing admin key: send 'Authorization: Bearer <admin key>'")
    if _matches(token, settings.api_key):
        raise PermissionDeniedError("this action needs the admin key")
    raise AuthenticationError("invalid admin key")


ClientDep = Annotated[str, Depends(require_client)]
AdminDep = Annotated[str, Depends(require_admin)]
