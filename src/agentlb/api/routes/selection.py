"""Selection, outcomes, weights, statistics and per-agent metrics (product spec paths)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from agentlb.api.deps import (
    AdminDep,
    ClientDep,
    ServiceDep,
    auth_and_content_type,
    bearer_token,
    client_role,
    json_body,
)
from agentlb.api.schemas import (
    AgentMetricsPublic,
    BenchmarkCreate,
    LoadMetricsPublic,
    ModelPublic,
    PerformanceReceipt,
    PerformanceUpdate,
    SelectAgentRequest,
    SelectAgentResponse,
    StatisticsPublic,
    WeightsPublic,
    WeightsUpdate,
)
from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.service import AgentLBService

router = APIRouter(prefix="/load-balancing", tags=["load balancing"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    422: {"description": "Invalid body: each problem names the field and the reason"},
}


class DirectRoute(APIRoute):
    """A documented route whose endpoint is the request handler itself: `endpoint(request)`
    returns the response, with no dependency solving, body decoding or response
    validation by FastAPI (the endpoint does its own). Exception handlers still apply."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


SELECT_PATH = "/load-balancing/select-agent"


async def select_agent(request: Request) -> Response:
    """Choose an agent for a task. The task counts as in flight on that agent until its
    outcome is reported to `update-performance` with the returned `task_id`."""
    return await answer_select(request.app.state, request.scope["headers"], await request.body())


async def answer_select(state: Any, headers: list[tuple[bytes, bytes]], raw: bytes) -> Response:
    """The select-agent request, from its raw headers and body to the response.

    Every request is counted (`load_balancer_select_requests_total`), and those answered
    without a selection by error type: a service that stops selecting while orchestrators
    call is then visible. The hot path: the access rule and the body schema of every other
    route, applied without FastAPI's request handling, which was about a fifth of a select request's CPU
    (docs/benchmarks.md). It runs from this route (DirectRoute, documented by `openapi_extra`
    below) and, ahead of the middleware stack, from `AgentLBApp` (api/app.py)."""
    try:
        response = await _answer_select(state, headers, raw)
    except Exception as exc:
        state.service.metrics.state.count_select(exc)
        raise
    state.service.metrics.state.count_select(None)
    return response


async def _answer_select(state: Any, headers: list[tuple[bytes, bytes]], raw: bytes) -> Response:
    authorization, content_type = auth_and_content_type(headers)
    client_role(state.settings, bearer_token(authorization))
    body = json_body(SelectAgentRequest, raw, content_type)
    service: AgentLBService = state.service
    task_kwargs = {} if body.task_id is None else {"task_id": body.task_id}
    task = TaskRequest(
        task_type=body.task_type,
        required_capabilities=frozenset(body.required_capabilities),
        requirements=dict(body.task_requirements),
        deadline_s=body.deadline_s,
        **task_kwargs,
    )
    # The selection runs on the event loop, not in the threadpool: it is CPU only, and thread
    # hand-offs under the GIL cost more than they save (docs/benchmarks.md). The request then
    # awaits the group commit of its dispatch record while the loop serves other requests.
    # A database that fails pauses dispatch writes (see AgentLBService.enqueue_dispatch).
    result = await service.select_async(
        task, body.strategy, body.top_k, client_task_id=body.task_id is not None
    )
    # Serialised straight from the result; `response_model` below still documents the body.
    return Response(SelectAgentResponse.json_of(result), media_type="application/json")


router.add_api_route(
    SELECT_PATH.removeprefix(router.prefix),
    select_agent,
    methods=["POST"],
    route_class_override=DirectRoute,
    response_model=SelectAgentResponse,
    responses={
        **_ERRORS,
        409: {
            "description": "No enabled agent has the required capabilities (they are named), "
            "or the task id is already in flight / completed"
        },
        503: {"description": "Every capable agent is ejected and panic mode is off"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SelectAgentRequest"}}},
        },
        "security": [{"HTTPBearer": []}],
    },
)


@router.post(
    "/update-performance",
    response_model=PerformanceReceipt,
    responses={
        **_ERRORS,
        404: {"description": "Unknown agent, or a task id that was never dispatched (or expired)"},
        409: {
            "description": "A different outcome is already recorded for this task, or the task "
            "was dispatched to another agent"
        },
        503: {"description": "The database is unavailable; nothing was recorded, retry later"},
    },
)
def update_performance(body: PerformanceUpdate, service: ServiceDep, _: ClientDep) -> PerformanceReceipt:
    """Report a finished task; a 200 means the outcome is committed to the database.

    **With `task_id`** (recommended): closes exactly that dispatch. Sending the same outcome
    again is harmless (`duplicate: true`); a different outcome for the same task is a 409.

    **Without `task_id`**: the agent's oldest in-flight task (of `task_type`, when given) is
    closed and the outcome is stored under that task's id, returned as `task_id`. If the agent
    has nothing in flight, the outcome only updates its statistics and gets a new id. Retries
    without a task id cannot be recognised as duplicates, and a 503 from the database can leave
    the in-flight count already decremented: send task ids to keep counts exact.
    """
    outcome = TaskOutcome(
        agent_id=body.agent_id,
        duration_s=body.task_duration,
        success=body.success,
        task_id=body.task_id,
        task_type=body.task_type,
        cpu_usage=body.cpu_usage,
        memory_usage=body.memory_usage,
        error=body.error,
    )
    receipt = service.report_outcome(outcome)
    return PerformanceReceipt(
        task_id=receipt.task_id,
        agent_id=receipt.agent_id,
        duplicate=receipt.duplicate,
        closed_dispatch=receipt.closed_dispatch,
        ejected=receipt.ejected,
    )


@router.get("/statistics", response_model=StatisticsPublic, responses={401: _ERRORS[401]})
def statistics(service: ServiceDep, _: ClientDep) -> StatisticsPublic:
    """Strategy distribution, fallback rate, utilisation, load variance, over-utilised agents,
    prediction accuracy per model version, and a summary per agent. Selection counts are since
    this process started; prediction accuracy comes from the stored history."""
    stats = service.statistics()
    stats["agents"] = [LoadMetricsPublic.of(m) for m in stats["agents"]]
    return StatisticsPublic(**stats)


@router.post(
    "/configure-weights",
    response_model=WeightsPublic,
    responses={**_ERRORS, 403: {"description": "Needs the admin key"}},
)
def configure_weights(body: WeightsUpdate, service: ServiceDep, who: AdminDep) -> WeightsPublic:
    """Set the hybrid strategy's component weights: validated, normalised to sum 1, persisted,
    effective for the next selection, and logged."""
    previous = service.balancer.hybrid_weights
    applied = service.configure_weights(body.weights, changed_by=who)
    return WeightsPublic(weights=applied, previous=previous)


@router.get(
    "/agent/{agent_id}/metrics",
    response_model=AgentMetricsPublic,
    responses={401: _ERRORS[401], 404: {"description": "Unknown agent"}},
)
def agent_metrics(agent_id: str, service: ServiceDep, _: ClientDep) -> AgentMetricsPublic:
    """The agent's live load metrics and a summary of its recent stored history."""
    metrics, history = service.agent_metrics(agent_id)
    return AgentMetricsPublic(agent_id=agent_id, metrics=LoadMetricsPublic.of(metrics), history=history)


@router.post(
    "/model/reload",
    response_model=ModelPublic,
    responses={
        **_ERRORS,
        403: {"description": "Needs the admin key"},
        503: {"description": "The model could not be loaded; the current predictor stays"},
    },
)
async def reload_model(service: ServiceDep, _: AdminDep) -> ModelPublic:
    """Load the model at `AGENTLB_MODEL_URI` again (e.g. after a new champion) and swap it in."""
    description = await run_in_threadpool(service.reload_model)
    return ModelPublic(predictor=description)


@router.post(
    "/benchmark",
    responses={**_ERRORS, 422: {"description": "Invalid body, unknown scenario/strategy, or a cap exceeded"}},
)
async def benchmark(body: BenchmarkCreate, service: ServiceDep, _: ClientDep) -> dict[str, Any]:
    """Compare strategies in the simulator (same fleet and tasks for each strategy). Bounded:
    at most 5,000 tasks per run, 3 seeds and 24 runs (scenarios x strategies x seeds); runs
    in a worker thread so selections keep being served."""
    result: dict[str, Any] = await run_in_threadpool(
        service.run_benchmark, body.scenarios, body.strategies, body.seeds, body.tasks, body.load
    )
    return result
