"""Request and response bodies (`XCreate / XUpdate / XPublic`), with OpenAPI examples.

Bodies are validated here so that bad input is a 422 naming the field, never a 500.
Non-finite numbers are refused (Python's JSON parser accepts NaN and Infinity).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic_core import to_json

from agentlb.domain import (
    Agent,
    AgentLoadMetrics,
    AttributeValue,
    SelectionResult,
)
from agentlb.features import RESERVED_COLUMNS
from agentlb.strategies import STRATEGY_NAMES

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
MAX_TOP_K = 50
# A blank capability name would register (or require) a capability nobody can name.
CapabilityName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _check_strategy(value: str | None) -> str | None:
    if value is not None and value not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {value!r}; valid: {', '.join(sorted(STRATEGY_NAMES))}")
    return value


# --- selection -------------------------------------------------------------------------------
class SelectAgentRequest(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "required_capabilities": ["prompt_generation", "text_analysis"],
                    "task_type": "prompt_task",
                    "task_requirements": {"priority": "high", "complexity": "medium", "tokens": 800},
                    "strategy": "hybrid",
                    "top_k": 2,
                }
            ]
        },
    )

    required_capabilities: list[CapabilityName] = Field(default_factory=list, max_length=64)
    task_type: str = Field(min_length=1, max_length=128)
    task_requirements: dict[str, AttributeValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Task attributes (priority, complexity, any other); they become model features.",
    )
    strategy: str | None = Field(
        default=None, description=f"One of {', '.join(STRATEGY_NAMES)}; default from settings."
    )
    top_k: int = Field(default=1, ge=0, le=MAX_TOP_K, description="How many ranked alternatives to return.")
    task_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="Your id for the task; a new one is made if absent."
    )
    deadline_s: float | None = Field(default=None, gt=0)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str | None) -> str | None:
        return _check_strategy(value)

    @field_validator("task_requirements")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        for key in value:
            if key in RESERVED_COLUMNS or key.startswith("agent_"):
                raise ValueError(f"{key!r} is a reserved history column, not a task attribute")
            if not key or len(key) > 64:
                raise ValueError("attribute names must be 1-64 characters")
        return value


class LoadMetricsPublic(_Public):
    agent_id: str
    agent_name: str
    active_tasks: int
    completed_tasks: int
    failed_tasks: int
    avg_task_duration: float
    success_rate: float
    cpu_usage: float
    memory_usage: float
    load_score: float
    capacity_score: float
    predicted_completion_time: float
    workload_trend: str
    specialization_score: dict[str, float]

    @classmethod
    def of(cls, metrics: AgentLoadMetrics) -> LoadMetricsPublic:
        return cls(**_load_metrics_fields(metrics))


def _load_metrics_fields(m: AgentLoadMetrics) -> dict[str, Any]:
    """LoadMetricsPublic's fields as plain Python values (also written straight to JSON)."""
    return {
        "agent_id": m.agent_id,
        "agent_name": m.agent_name,
        "active_tasks": int(m.active_tasks),
        "completed_tasks": int(m.completed_tasks),
        "failed_tasks": int(m.failed_tasks),
        "avg_task_duration": float(m.avg_task_duration),
        "success_rate": float(m.success_rate),
        "cpu_usage": float(m.cpu_usage),
        "memory_usage": float(m.memory_usage),
        "load_score": float(m.load_score),
        "capacity_score": float(m.capacity_score),
        "predicted_completion_time": float(m.predicted_completion_time),
        "workload_trend": m.workload_trend,
        "specialization_score": {str(k): float(v) for k, v in m.specialization_score.items()},
    }


class RankedAgentPublic(_Public):
    agent_id: str
    agent_name: str
    score: float
    predicted_p50_s: float | None = None
    predicted_p90_s: float | None = None


class PredictedCompletionPublic(_Public):
    """Completion time from now: queueing wait plus the task's own service time."""

    p50: float
    p90: float
    service_p50: float
    service_p90: float
    wait: float


class ExperimentArmPublic(BaseModel):
    id: str
    arm: str


class SelectAgentResponse(BaseModel):
    selected_agent_id: str
    selected_agent_name: str
    task_id: str
    strategy_used: str
    confidence_score: float
    selection_reason: str
    load_metrics: LoadMetricsPublic
    alternative_agents: list[RankedAgentPublic]
    fallback_used: bool
    panic: bool
    predicted_completion_s: PredictedCompletionPublic | None
    model_version: str | None
    experiment: ExperimentArmPublic | None = Field(
        default=None, description="The experiment arm that selected, when an experiment routed the task."
    )

    @staticmethod
    def fields_of(r: SelectionResult) -> dict[str, Any]:
        """The response's fields as plain Python values, nested models as dicts."""
        p = r.predicted_completion
        return {
            "selected_agent_id": r.selected_agent.id,
            "selected_agent_name": r.selected_agent.name,
            "task_id": r.task_id,
            "strategy_used": r.strategy_used,
            "confidence_score": float(r.confidence_score),
            "selection_reason": r.selection_reason,
            "load_metrics": _load_metrics_fields(r.load_metrics),
            "alternative_agents": [
                {
                    "agent_id": a.agent_id,
                    "agent_name": a.agent_name,
                    "score": float(a.score),
                    "predicted_p50_s": None if a.predicted_p50_s is None else float(a.predicted_p50_s),
                    "predicted_p90_s": None if a.predicted_p90_s is None else float(a.predicted_p90_s),
                }
                for a in r.alternative_agents
            ],
            "fallback_used": bool(r.fallback_used),
            "panic": bool(r.panic),
            "predicted_completion_s": None
            if p is None
            else {
                "p50": float(p.p50_s),
                "p90": float(p.p90_s),
                "service_p50": float(p.service_p50_s),
                "service_p90": float(p.service_p90_s),
                "wait": float(p.wait_s),
            },
            "model_version": r.model_version,
            "experiment": None
            if r.experiment is None
            else {"id": r.experiment.experiment_id, "arm": r.experiment.arm},
        }

    @classmethod
    def of(cls, r: SelectionResult) -> SelectAgentResponse:
        return cls.model_validate(cls.fields_of(r))

    @classmethod
    def json_of(cls, r: SelectionResult) -> bytes:
        """`of(r).model_dump_json()` without building and validating the models: the
        select-agent hot path, at a third of the cost. A test holds the two byte for byte equal."""
        return to_json(cls.fields_of(r), inf_nan_mode="null")


# --- outcomes --------------------------------------------------------------------------------
class PerformanceUpdate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "agent_id": "agent-prompt-1",
                    "task_id": "3f2a9c1e5b7d4e0f8a6b2c4d1e3f5a7b",
                    "task_duration": 3.5,
                    "success": True,
                    "cpu_usage": 45.0,
                    "memory_usage": 60.0,
                }
            ]
        },
    )

    agent_id: str = Field(min_length=1, max_length=128)
    task_id: str | None = Field(default=None, pattern=ID_PATTERN)
    task_duration: float = Field(ge=0, description="Seconds the task took.")
    success: bool = True
    cpu_usage: float | None = Field(default=None, ge=0, le=100)
    memory_usage: float | None = Field(default=None, ge=0, le=100)
    task_type: str | None = Field(default=None, min_length=1, max_length=128)
    error: str | None = Field(default=None, max_length=10_000)


class PerformanceReceipt(BaseModel):
    task_id: str = Field(description="The task this outcome was recorded under.")
    agent_id: str
    recorded: bool = True
    duplicate: bool = Field(
        description="True when this exact outcome was already recorded (nothing changed)."
    )
    closed_dispatch: bool = Field(description="True when the outcome closed an in-flight dispatch.")
    ejected: bool = Field(description="True when this failure got the agent ejected.")


# --- weights ---------------------------------------------------------------------------------
class WeightsUpdate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "weights": {
                        "weighted_round_robin": 0.3,
                        "least_connection": 0.2,
                        "predictive": 0.4,
                        "resource_aware": 0.1,
                    }
                }
            ]
        },
    )

    weights: dict[str, float] = Field(
        min_length=1, description="Hybrid component weights; normalised to sum 1."
    )


class WeightsPublic(BaseModel):
    weights: dict[str, float]
    previous: dict[str, float]


# --- agents ----------------------------------------------------------------------------------
class AgentCreate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "id": "agent-video-1",
                    "name": "Video Analyst One",
                    "capabilities": ["video_analysis", "object_detection"],
                    "max_concurrency": 4,
                    "weight": 1.0,
                }
            ]
        },
    )

    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    capabilities: list[CapabilityName] = Field(default_factory=list, max_length=64)
    max_concurrency: int = Field(default=4, ge=1, le=100_000)
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    enabled: bool = True

    def to_domain(self) -> Agent:
        return Agent(
            id=self.id,
            name=self.name,
            capabilities=frozenset(self.capabilities),
            max_concurrency=self.max_concurrency,
            weight=self.weight,
            enabled=self.enabled,
        )


class AgentUpdate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"max_concurrency": 8, "enabled": False}]},
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    capabilities: list[CapabilityName] | None = Field(default=None, max_length=64)
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    weight: float | None = Field(default=None, gt=0, le=1_000_000)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> AgentUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"fields may be omitted but not null: {', '.join(nulls)}")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, in domain form."""
        sent = self.model_dump(exclude_unset=True)
        if "capabilities" in sent:
            sent["capabilities"] = frozenset(sent["capabilities"])
        return sent


class AgentPublic(BaseModel):
    id: str
    name: str
    capabilities: list[str]
    max_concurrency: int
    weight: float
    enabled: bool
    created_at: Any = None
    updated_at: Any = None

    @classmethod
    def of(cls, agent: Agent, created_at: Any = None, updated_at: Any = None) -> AgentPublic:
        return cls(
            id=agent.id,
            name=agent.name,
            capabilities=sorted(agent.capabilities),
            max_concurrency=agent.max_concurrency,
            weight=agent.weight,
            enabled=agent.enabled,
            created_at=created_at,
            updated_at=updated_at,
        )


class HeartbeatCreate(_Body):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"cpu_usage": 72.5, "memory_usage": 55.0, "queue_length": 3}]},
    )

    cpu_usage: float | None = Field(default=None, ge=0, le=100)
    memory_usage: float | None = Field(default=None, ge=0, le=100)
    queue_length: int | None = Field(default=None, ge=0, le=10_000_000)


class AgentMetricsPublic(BaseModel):
    agent_id: str
    metrics: LoadMetricsPublic
    history: dict[str, Any]


# --- operations ------------------------------------------------------------------------------
class HealthPublic(BaseModel):
    status: str = Field(description="healthy, degraded or unhealthy")
    reasons: list[str]
    database: str
    predictor: dict[str, Any]
    agents_enabled: int
    agents_ejected: int
    dispatch_write_failures: int


class StatisticsPublic(BaseModel):
    total_selections: int
    strategy_distribution: dict[str, int]
    agent_distribution: dict[str, int]
    fallback_activation_rate: float
    panic_selections: int
    ejections: int
    agent_utilisation_rate: float
    load_distribution_variance: float
    over_utilised_agents: list[str]
    over_utilised_threshold: float
    prediction_accuracy: list[dict[str, Any]]
    hybrid_weights: dict[str, float]
    since: float
    agents: list[LoadMetricsPublic]


class ModelPublic(BaseModel):
    predictor: dict[str, Any]


class BenchmarkCreate(_Body):
    """A bounded run of the simulator's strategy benchmark (heuristic predictor)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"strategies": ["hybrid", "least_connection", "power_of_two"], "seeds": 1, "tasks": 1000}
            ]
        },
    )

    scenarios: list[str] | None = Field(
        default=None, min_length=1, description="Simulator scenarios; the first one when omitted."
    )
    strategies: list[str] = Field(
        default_factory=lambda: ["hybrid", "least_connection", "power_of_two"], min_length=1
    )
    seeds: int = Field(default=1, ge=1, description="Seeds per scenario; capped by the server.")
    tasks: int = Field(default=1000, ge=10, description="Tasks per run; capped by the server.")
    load: float | None = Field(default=None, gt=0, description="Offered load (1.0 = fleet capacity).")


# --- errors ----------------------------------------------------------------------------------
class ErrorPublic(BaseModel):
    """Every error body (api/errors.py); extra keys name what the error is about."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="The kind of error, e.g. unknown_agent, store_unavailable.")
    detail: Any = Field(description="What went wrong, for a person to read.")


class ValidationProblem(BaseModel):
    field: str = Field(description="Dotted path of the bad field, or `body`.")
    reason: str


class ValidationErrorPublic(BaseModel):
    """The 422 body: each problem names the field and the reason."""

    error: str = Field(description="Always `validation_error`.")
    detail: list[ValidationProblem]
