"""Online experiments: start (admin), list, report, stop (admin)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from agentlb.api.deps import AdminDep, ClientDep, ServiceDep
from agentlb.experiments.design import DEFAULT_ALPHA, DEFAULT_MIXING_EFFECT, Arm, design
from agentlb.experiments.service import describe
from agentlb.strategies import STRATEGY_NAMES

router = APIRouter(prefix="/load-balancing/experiments", tags=["experiments"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    404: {"description": "Unknown experiment"},
}


class ArmCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    strategy: str = Field(min_length=1, max_length=32)
    share: float = Field(gt=0, le=1, description="Share of the experiment's traffic; shares sum to 1.")
    weights: dict[str, float] | None = Field(default=None, description="Hybrid weights of this arm.")
    model_version: str | None = Field(
        default=None, min_length=1, max_length=32, description="A registered version of the served model."
    )


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "name": "hybrid vs least connection",
                    "arms": [
                        {"name": "control", "strategy": "least_connection", "share": 0.5},
                        {"name": "hybrid", "strategy": "hybrid", "share": 0.5},
                    ],
                    "task_types": None,
                    "max_tasks": 20000,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=128)
    arms: list[ArmCreate] = Field(min_length=2, max_length=8, description="The first arm is the control.")
    task_types: list[str] | None = Field(default=None, min_length=1)
    capabilities: list[str] | None = Field(
        default=None, min_length=1, description="Only tasks that require all of these take part."
    )
    max_tasks: int | None = Field(default=None, ge=1)
    max_duration_s: float | None = Field(default=None, gt=0)
    stop_when_decided: bool = Field(default=False, description="Complete as soon as the verdict is decided.")
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5, description="Error rate of the verdict.")
    allocation: Literal["hash", "thompson"] = Field(
        default="hash",
        description="hash: a fixed split by the task id (an A/B test, judged by the sequential test); "
        "thompson: Thompson sampling on completion time, settling on the fastest arm.",
    )
    settle_probability: float = Field(
        default=0.95, gt=0.5, lt=1, description="thompson: P(fastest) to settle."
    )
    min_share: float = Field(default=0.05, ge=0, lt=0.5, description="thompson: traffic kept on every arm.")
    apply_winner: bool = Field(default=False, description="thompson: apply the winner's hybrid weights.")
    mixing_effect: float = Field(
        default=DEFAULT_MIXING_EFFECT,
        gt=0,
        description="Relative effect size the sequential test is tuned to (0.1 = 10% of the control's mean).",
    )


class ExperimentPublic(BaseModel):
    id: str
    name: str
    status: Literal["running", "stopped", "completed"]
    created_at: float
    created_by: str
    stopped_at: float | None
    stop_reason: str | None
    design: dict[str, Any]


class ArmReportPublic(BaseModel):
    name: str
    strategy: str
    share: float
    weights: dict[str, float] | None
    model_version: str | None
    tasks: int
    completed: int
    success_rate: float | None
    mean_completion_s: float | None
    p50_completion_s: float | None
    p99_completion_s: float | None
    mean_completion_ci95: list[float] | None
    mean_duration_s: float | None
    p50_duration_s: float | None
    p99_duration_s: float | None
    diff_to_control_s: float | None
    diff_to_control_ci95: list[float] | None = Field(
        description="Always-valid 95% confidence sequence of mean(arm) - mean(control); null for the "
        "control and until both arms have 30 completed tasks."
    )
    decided_after_tasks: int | None = None


class VerdictPublic(BaseModel):
    decided: bool
    winner: str | None
    method: str
    alpha: float
    metric: str
    probability_best: dict[str, float] | None = Field(
        default=None, description="thompson: each arm's posterior probability of being the fastest."
    )


class ExperimentReportPublic(ExperimentPublic):
    arms: list[ArmReportPublic]
    verdict: VerdictPublic


@router.post(
    "",
    status_code=201,
    response_model=ExperimentPublic,
    responses={
        **_ERRORS,
        403: {"description": "Needs the admin key"},
        422: {"description": "Invalid experiment: the field and the reason"},
    },
)
async def start_experiment(body: ExperimentCreate, service: ServiceDep, who: AdminDep) -> ExperimentPublic:
    """Start an experiment: selections that name no strategy and fall in its scope are split
    between the arms by a stable hash of the task id, and the select response names the arm."""
    plan = design(
        name=body.name,
        arms=[Arm(a.name, a.strategy, a.share, a.weights, a.model_version) for a in body.arms],
        task_types=body.task_types,
        capabilities=body.capabilities,
        max_tasks=body.max_tasks,
        max_duration_s=body.max_duration_s,
        stop_when_decided=body.stop_when_decided,
        alpha=body.alpha,
        mixing_effect=body.mixing_effect,
        strategies=STRATEGY_NAMES,
        allocation=body.allocation,
        settle_probability=body.settle_probability,
        min_share=body.min_share,
        apply_winner=body.apply_winner,
    )
    experiment = await run_in_threadpool(service.experiments.start, plan, who)
    return ExperimentPublic(**describe(experiment))


@router.get(
    "",
    response_model=list[ExperimentPublic],
    responses={401: _ERRORS[401], 422: {"description": "Unknown status"}},
)
def list_experiments(
    service: ServiceDep, _: ClientDep, status: Literal["running", "stopped", "completed"] | None = None
) -> list[ExperimentPublic]:
    """Every experiment, oldest first (optionally of one status)."""
    return [ExperimentPublic(**describe(e)) for e in service.experiments.list(status)]


@router.get("/{experiment_id}", response_model=ExperimentReportPublic, responses=_ERRORS)
def experiment_report(experiment_id: str, service: ServiceDep, _: ClientDep) -> ExperimentReportPublic:
    """Per arm: tasks, success rate, completion time (outcome report time minus selection time)
    mean with its 95% interval, p50 and p99, the difference to the control with its always-valid
    95% confidence sequence; and the verdict, valid however often it is read."""
    return ExperimentReportPublic(**service.experiments.report(experiment_id))


@router.delete(
    "/{experiment_id}",
    response_model=ExperimentReportPublic,
    responses={**_ERRORS, 403: {"description": "Needs the admin key"}},
)
def stop_experiment(experiment_id: str, service: ServiceDep, who: AdminDep) -> ExperimentReportPublic:
    """Stop routing to the experiment; its report stays readable."""
    service.experiments.stop(experiment_id, who)
    return ExperimentReportPublic(**service.experiments.report(experiment_id))
