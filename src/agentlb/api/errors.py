"""Every exception → HTTP status mapping, in one place.

Body shape for every error: `{"error": <kind>, "detail": <message>, ...extra}`; validation
errors list `{"field", "reason"}` pairs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentlb.errors import (
    AgentLBError,
    AllAgentsEjectedError,
    AuthenticationError,
    BenchmarkLimitError,
    ConflictingAgentError,
    ConflictingOutcomeError,
    DuplicateTaskError,
    ExperimentError,
    FleetFileError,
    HistoryValidationError,
    InvalidOutcomeError,
    InvalidWeightsError,
    ModelLoadError,
    NoEligibleAgentError,
    PermissionDeniedError,
    ReservationLostError,
    SimulationError,
    StoreUnavailableError,
    TaskAlreadyCompletedError,
    UnknownAgentError,
    UnknownExperimentError,
    UnknownStrategyError,
    UnknownTaskError,
)

log = logging.getLogger("agentlb.api")

# Most specific first: the first isinstance match wins.
STATUS_BY_ERROR: tuple[tuple[type[AgentLBError], int, str], ...] = (
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (UnknownAgentError, 404, "unknown_agent"),
    (UnknownTaskError, 404, "unknown_task"),
    (UnknownExperimentError, 404, "unknown_experiment"),
    (NoEligibleAgentError, 409, "no_eligible_agent"),
    (ConflictingOutcomeError, 409, "conflicting_outcome"),
    (ConflictingAgentError, 409, "conflicting_agent"),
    (DuplicateTaskError, 409, "duplicate_task"),
    (TaskAlreadyCompletedError, 409, "task_already_completed"),
    (UnknownStrategyError, 422, "unknown_strategy"),
    (ExperimentError, 422, "invalid_experiment"),
    (InvalidWeightsError, 422, "invalid_weights"),
    (InvalidOutcomeError, 422, "invalid_outcome"),
    (BenchmarkLimitError, 422, "benchmark_limit"),
    (SimulationError, 422, "invalid_simulation"),
    (HistoryValidationError, 422, "invalid_history"),
    (FleetFileError, 422, "invalid_fleet"),
    (AllAgentsEjectedError, 503, "all_agents_ejected"),
    (ReservationLostError, 503, "capacity_race_lost"),
    (StoreUnavailableError, 503, "store_unavailable"),
    (ModelLoadError, 503, "model_unavailable"),
)


def status_for(exc: AgentLBError) -> tuple[int, str]:
    for error_type, status, kind in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status, kind
    return 500, "internal_error"


def _extra(exc: AgentLBError) -> dict[str, Any]:
    if isinstance(exc, NoEligibleAgentError):
        return {"missing_capabilities": exc.missing_capabilities}
    if isinstance(exc, UnknownStrategyError):
        return {"valid_strategies": exc.valid}
    if isinstance(exc, ConflictingOutcomeError):
        return {"task_id": exc.task_id, "fields": exc.fields}
    if isinstance(exc, UnknownAgentError):
        return {"agent_id": exc.agent_id}
    if isinstance(exc, UnknownExperimentError):
        return {"experiment_id": exc.experiment_id}
    if isinstance(exc, (UnknownTaskError, DuplicateTaskError, TaskAlreadyCompletedError)):
        return {"task_id": exc.task_id}
    return {}


async def agentlb_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentLBError)
    status, kind = status_for(exc)
    if isinstance(exc, ExperimentError):  # a field problem: the validation error's shape
        return JSONResponse(
            {"error": kind, "detail": [{"field": exc.field, "reason": exc.reason}]}, status_code=status
        )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.warning(
            "request failed",
            extra={"event": "request_failed", "error": kind, "path": request.url.path, "reason": str(exc)},
        )
    return JSONResponse(
        {"error": kind, "detail": str(exc), **_extra(exc)}, status_code=status, headers=headers
    )


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        if location and location[0] == "body":
            location = location[1:]
        problems.append({"field": ".".join(location) or "body", "reason": str(error.get("msg", "invalid"))})
    return JSONResponse({"error": "validation_error", "detail": problems}, status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"error": "http_error", "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AgentLBError, agentlb_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
