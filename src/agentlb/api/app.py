"""The app factory. The lifespan opens the service (store, tracker rebuilt from it, balancer,
predictor); nothing is read or built at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlb.api.errors import http_error_handler, install_error_handlers
from agentlb.api.routes import agents, experiments, ops, selection
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


# Collect the youngest generation every 20,000 container allocations instead of 700: a select
# request allocates hundreds, and with CPython's default each full collection (over the whole
# heap: the fleet's in-flight tasks, states and columns) came often enough to set the p99.
GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    """Garbage-collector settings for a serving process, applied once the app is imported and
    built (`agentlb serve`, the load test): everything alive then (modules, settings, the app)
    is moved out of the collector's scans (`gc.freeze`), and collections run less often
    (GC_THRESHOLDS). Load test, hybrid over 100 agents: select p99 125 -> 44 ms, p50 and
    throughput unchanged (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _body_too_large(max_bytes: int) -> StarletteHTTPException:
    return StarletteHTTPException(413, f"request body larger than {max_bytes} bytes")


def _too_large(scope: Scope, max_bytes: int) -> StarletteHTTPException | None:
    """The 413 for a request whose Content-Length is above `max_bytes`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = 0
            if declared > max_bytes:
                return _body_too_large(max_bytes)
    return None


class BodySizeLimit:
    """Refuse request bodies above `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = _too_large(scope, self.max_bytes)
        if refused is not None:
            response = await http_error_handler(Request(scope), refused)
            await response(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _body_too_large(limit)
            return message

        await self.app(scope, limited, send)


async def _read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes | None:
    """The whole request body, within `max_bytes` (else a 413); None if the client left."""
    refused = _too_large(scope, max_bytes)
    if refused is not None:
        raise refused
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _body_too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class AgentLBApp(FastAPI):
    """FastAPI, with the select-agent hot path served ahead of the middleware stack.

    `POST /load-balancing/select-agent` goes straight to its handler (`answer_select`) with
    the same body-size limit, access rule, body schema and error responses (the app's own
    exception handlers answer its errors) as the documented route, which still serves it when
    `fast_select` is off (create_app turns it off when CORS middleware is configured, since
    that adds headers to responses). Skipped: seven middleware layers, the router's path
    matching and FastAPI's per-request bookkeeping: a quarter of a select request's CPU
    (docs/benchmarks.md)."""

    fast_select = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_select
            and scope["type"] == "http"
            and scope["path"] == selection.SELECT_PATH
            and scope["method"] == "POST"
        ):
            await self._select(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _select(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        try:
            raw = await _read_body(scope, receive, self.state.settings.max_body_bytes)
            if raw is None:
                return
            response = await selection.answer_select(self.state, scope["headers"], raw)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # uvicorn answers 500 and logs it, as after ServerErrorMiddleware
            response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        for cls in type(exc).__mro__:
            if cls in self.exception_handlers:
                return self.exception_handlers[cls]
        return None


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


async def _experiment_upkeep(service: AgentLBService, interval_s: float) -> None:
    """Stop conditions of running experiments (tasks, time, a decisive result)."""
    while True:
        await asyncio.sleep(interval_s)
        await run_in_threadpool(service.experiments.upkeep)


def create_app(settings: Settings | None = None, service: AgentLBService | None = None) -> AgentLBApp:
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
        background = []
        if settings.model_poll_interval_s > 0:
            background.append(asyncio.create_task(_poll_model(opened, settings.model_poll_interval_s)))
        if settings.experiment_upkeep_interval_s > 0:
            background.append(
                asyncio.create_task(_experiment_upkeep(opened, settings.experiment_upkeep_interval_s))
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            opened.close()

    app = AgentLBApp(
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
    app.include_router(experiments.router)
    if settings.cors_origins:
        app.fast_select = False
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def create_worker_app() -> AgentLBApp:
    """The app of one of `agentlb serve --workers N`'s worker processes (uvicorn's factory):
    settings from the environment, JSON logs, the serving garbage-collector settings."""
    from agentlb.observability import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_gc()
    return app
