"""Health and Prometheus metrics (open without a key, so probes and scrapers need none) and the
serving model's description."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from agentlb.api.deps import ClientDep, ServiceDep
from agentlb.api.schemas import HealthPublic, ModelPublic
from agentlb.observability import METRICS_CONTENT_TYPE, ServiceState
from agentlb.replication import describe
from agentlb.service import AgentLBService

router = APIRouter(tags=["operations"])


@router.get(
    "/load-balancing/health",
    response_model=HealthPublic,
    responses={503: {"description": "unhealthy: no agent can be selected", "model": HealthPublic}},
)
def health(service: ServiceDep, response: Response) -> HealthPublic:
    """healthy, degraded (database down, model unavailable, agents ejected) or unhealthy (no
    agent can be selected; HTTP 503), with the reasons."""
    report = service.health()
    if report.status == "unhealthy":
        response.status_code = 503
    return HealthPublic(
        status=report.status,
        reasons=report.reasons,
        database=report.database,
        predictor=report.predictor,
        agents_enabled=report.agents_enabled,
        agents_ejected=report.agents_ejected,
        dispatch_write_failures=report.dispatch_write_failures,
    )


@router.get(
    "/load-balancing/model",
    response_model=ModelPublic,
    responses={401: {"description": "Missing or wrong key"}},
)
def model(service: ServiceDep, _: ClientDep) -> ModelPublic:
    """The predictor serving now: version, source, feature version, loaded_at, evaluator
    (`lightgbm`, or `compiled` once native code serves it), training metrics, and the fallback
    reason when the heuristic stands in for a model."""
    return ModelPublic(predictor=service.model_info())


@router.get("/metrics", response_class=Response, responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}})
def metrics(service: ServiceDep) -> Response:
    """Prometheus exposition (served from a route: a mounted app would answer 307)."""
    snapshot = service.tracker.snapshot()
    service.metrics.refresh_load_scores(snapshot.agents)
    service.metrics.state.refresh(snapshot.agents, snapshot.now, service_state(service), snapshot.regimes)
    return Response(service.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


@router.get("/load-balancing/replication", responses={401: {"description": "Missing or wrong key"}})
def replication(service: ServiceDep, _: ClientDep, state: bool = False) -> dict[str, Any]:
    """How this process holds the live fleet state: `embedded`, or `redis` (shared by replicas)
    with its position in the fleet event log, whether it is live or serving alone (and why),
    and `state_digest`: replicas at the same `seq` with the same digest hold identical state.
    `state=true` adds the whole state (in-flight tasks, EWMAs, success rates, ejections)."""
    return describe(service.replica, service.tracker, include_state=state)

def service_state(service: AgentLBService) -> ServiceState:
    """Health and serving model for the scrape-time gauges."""
    ref = service.predictor
    described = ref.current.describe()
    holdout = (described.get("metrics") or {}).get("mae")
    return ServiceState(
        health_status=service.health().status,
        model_version=str(described.get("version")),
        model_source=str(described.get("source")),
        model_fallback=ref.fallback_reason is not None,
        holdout_mae_s=float(holdout) if isinstance(holdout, int | float) else None,
        drift_mae_tolerance=service.settings.drift_mae_tolerance,
    )
