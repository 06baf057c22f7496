"""The app factory. The lifespan opens the service (store, tracker rebuilt from it, balancer,
predictor); nothing is read or built at import."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlb.api.errors import install_error_handlers
from agentlb.api.routes import agents, ops, selection
from agentlb.api.schemas import ErrorPublic, SelectAgentRequest, ValidationErrorPublic
from agentlb.errors import ModelLoadError
from agentlb.service import AgentLBService
from agentlb.settings import Settings, load_settings

log = logging.getLogger("agentlb.api")

DESCRIPTION = """Selects which AI agent in a fleet gets the next task.

Loop: `POST /load-balancing/select-agent` → run the task on the selected agent →
`POST /load-balancing/update-performance` with the returned `task_id`.

With `AGENTLB_API_KEY` set, send `Authorization: Bearer <key>` (health and metrics are open);
with `AGENTLB_ADMIN_KEY` set, registry, weight and model changes need the admin key.
"""


class BodySizeLimit:
    """Refuse request bodies above `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        limit = self.max_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, f"request body larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"error": "http_error", "detail": f"request body larger than {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _document_error_bodies(app: FastAPI) -> None:
    """Make the OpenAPI schema describe the error bodies the app really sends.

    FastAPI documents 422 as its own `HTTPValidationError` ({"detail": [{"loc", "msg"}]}),
    but api/errors.py answers `{"error", "detail": [{"field", "reason"}]}` (or, for a domain
    rule such as invalid weights, `{"error", "detail": "..."}`); schema-driven
    clients and fuzzers (schemathesis) check responses against the document, so it must match.
    Every other documented 4xx/5xx gets the common `ErrorPublic` body, and operations with a
    body document 400 (unparseable JSON) and 413 (BodySizeLimit). `select-agent` reads its body
    itself (routes/selection.py), so its schema is added here."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        template = "#/components/schemas/{model}"
        for model in (ErrorPublic, ValidationErrorPublic, SelectAgentRequest):
            schema = model.model_json_schema(ref_template=template)
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" in operation:
                    responses = operation.setdefault("responses", {})
                    responses.setdefault("400", {"description": "The body is not parseable JSON"})
                    responses.setdefault("413", {"description": "The body is larger than the size limit"})
                for code, response in operation.get("responses", {}).items():
                    if code == "422":  # a field problem, or a domain one (invalid weights...)
                        either = {
                            "anyOf": [
                                {"$ref": template.format(model="ValidationErrorPublic")},
                                {"$ref": template.format(model="ErrorPublic")},
                            ]
                        }
                        response["content"] = {"application/json": {"schema": either}}
                    elif code[0] in "45" and "content" not in response:
                        ref = {"$ref": template.format(model="ErrorPublic")}
                        response["content"] = {"application/json": {"schema": ref}}
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


async def _poll_model(service: AgentLBService, interval_s: float) -> None:
    """Hot reload: a model that never refreshes itself would serve a stale champion."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_in_threadpool(service.poll_model)
        except ModelLoadError as exc:
            log.warning(
                "model reload failed; current predictor kept",
                extra={"event": "model_reload_failed", "reason": str(exc)},
            )


def create_app(settings: Settings | None = None, service: AgentLBService | None = None) -> FastAPI:
    """Build the API. Pass `service` to serve an already-open service (it is then not closed
    by the app); otherwise the lifespan opens one from `settings` and closes it at shutdown."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            app.state.service = service
            yield
            return
        opened = await run_in_threadpool(AgentLBService.open, settings)
        app.state.service = opened
        poller = (
            asyncio.create_task(_poll_model(opened, settings.model_poll_interval_s))
            if settings.model_poll_interval_s > 0
            else None
        )
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            opened.close()

    app = FastAPI(
        title="agentlb",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    _document_error_bodies(app)
    app.include_router(selection.router)
    app.include_router(agents.router)
    app.include_router(ops.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app
