"""Plain data carried between the tracker, strategies, balancer, store and API.

Field names follow the product spec (`AgentLoadMetrics`, `LoadBalancingResult`).
Nothing here does I/O; everything is immutable once built.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AttributeValue = str | float | int | bool | None


class LoadBalancingStrategy(enum.StrEnum):
    """Strategy names accepted by the API, the CLI and the Python API."""

    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_CONNECTION = "least_connection"
    PREDICTIVE_ML = "predictive"
    RESOURCE_AWARE = "resource_aware"
    HYBRID = "hybrid"
    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    POWER_OF_TWO = "power_of_two"
    PEAK_EWMA = "peak_ewma"


class WorkloadTrend(enum.StrEnum):
    INCREASING = "increasing"
    STABLE = "stable"
    DECREASING = "decreasing"


@dataclass(frozen=True)
class Agent:
    """A worker that can receive tasks. `weight` is the operator's static weight."""

    id: str
    name: str
    capabilities: frozenset[str] = frozenset()
    max_concurrency: int = 4
    weight: float = 1.0
    enabled: bool = True
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("agent id must not be empty")
        if self.max_concurrency < 1:
            raise ValueError(f"agent {self.id}: max_concurrency must be >= 1")
        if not self.weight > 0:
            raise ValueError(f"agent {self.id}: weight must be > 0")


@dataclass(frozen=True)
class TaskRequest:
    """What an orchestrator asks to place. `requirements` holds priority, complexity and any
    other task attribute; they become model features."""

    task_type: str
    required_capabilities: frozenset[str] = frozenset()
    requirements: Mapping[str, AttributeValue] = field(default_factory=dict)
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline_s: float | None = None


@dataclass(frozen=True)
class InFlightTask:
    task_id: str
    task_type: str
    dispatched_at: float
    predicted_service_s: float | None


@dataclass(frozen=True)
class AgentState:
    """Immutable view of one agent's live state, as strategies read it."""

    agent: Agent
    active_tasks: int
    completed_tasks: int
    failed_tasks: int
    success_rate: float
    ewma_duration_s: float | None
    ewma_duration_by_type: Mapping[str, float]
    ewma_variance_by_type: Mapping[str, float]
    samples_by_type: Mapping[str, int]
    peak_ewma_s: float
    peak_ewma_stamp: float
    cpu_usage: float
    memory_usage: float
    queue_length: int
    trend_slope: float
    workload_trend: WorkloadTrend
    consecutive_failures: int
    ejected_until: float
    times_ejected: int
    registered_at: float
    in_flight: tuple[InFlightTask, ...]

    @property
    def agent_id(self) -> str:
        return self.agent.id

    @property
    def load_score(self) -> float:
        """Share of the agent's slots in use, 0-1."""
        return min(self.active_tasks / self.agent.max_concurrency, 1.0)

    @property
    def capacity_score(self) -> float:
        """Share of the agent's slots free, 0-1."""
        return 1.0 - self.load_score

    def is_ejected(self, now: float) -> bool:
        return now < self.ejected_until


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant; strategies and predictors read only this."""

    now: float
    agents: tuple[AgentState, ...]
    fleet_ewma_by_type: Mapping[str, float]
    fleet_ewma_s: float | None
    index: Mapping[str, int] = field(default_factory=dict)

    def get(self, agent_id: str) -> AgentState | None:
        """The agent's state, by the tracker's position index when it supplied one."""
        if self.index:
            position = self.index.get(agent_id)
            return None if position is None else self.agents[position]
        return next((s for s in self.agents if s.agent.id == agent_id), None)

    def by_id(self) -> dict[str, AgentState]:
        return {s.agent.id: s for s in self.agents}

    def specialization(self, state: AgentState, task_type: str) -> float:
        """Fleet EWMA for the type over the agent's own: above 1 means faster than the fleet."""
        own = state.ewma_duration_by_type.get(task_type)
        fleet = self.fleet_ewma_by_type.get(task_type)
        if own is None or fleet is None or own <= 0:
            return 1.0
        return fleet / own


@dataclass(frozen=True)
class AgentLoadMetrics:
    """The product spec's per-agent metrics, as returned by the API."""

    agent_id: str
    agent_name: str
    active_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    avg_task_duration: float = 0.0
    success_rate: float = 1.0
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    load_score: float = 0.0
    capacity_score: float = 1.0
    predicted_completion_time: float = 0.0
    workload_trend: str = WorkloadTrend.STABLE.value
    specialization_score: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_state(
        cls, state: AgentState, snapshot: FleetSnapshot, predicted_completion_s: float = 0.0
    ) -> AgentLoadMetrics:
        return cls(
            agent_id=state.agent.id,
            agent_name=state.agent.name,
            active_tasks=state.active_tasks,
            completed_tasks=state.completed_tasks,
            failed_tasks=state.failed_tasks,
            avg_task_duration=state.ewma_duration_s or 0.0,
            success_rate=state.success_rate,
            cpu_usage=state.cpu_usage,
            memory_usage=state.memory_usage,
            load_score=state.load_score,
            capacity_score=state.capacity_score,
            predicted_completion_time=predicted_completion_s,
            workload_trend=state.workload_trend.value,
            specialization_score={t: snapshot.specialization(state, t) for t in state.ewma_duration_by_type},
        )


@dataclass(frozen=True)
class RankedAgent:
    agent_id: str
    agent_name: str
    score: float
    predicted_p50_s: float | None = None
    predicted_p90_s: float | None = None


@dataclass(frozen=True)
class PredictedCompletion:
    """Completion time from now: wait behind in-flight work plus the task's own service."""

    p50_s: float
    p90_s: float
    service_p50_s: float
    service_p90_s: float
    wait_s: float


@dataclass(frozen=True)
class SelectionResult:
    task_id: str
    selected_agent: Agent
    strategy_used: str
    confidence_score: float
    load_metrics: AgentLoadMetrics
    selection_reason: str
    fallback_used: bool = False
    alternative_agents: tuple[RankedAgent, ...] = ()
    strategy_scores: Mapping[str, float] = field(default_factory=dict)
    predicted_completion: PredictedCompletion | None = None
    model_version: str | None = None
    dispatch_features: Mapping[str, AttributeValue] = field(default_factory=dict)
    task_type: str = ""
    task_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    dispatched_at: float = 0.0
    panic: bool = False


@dataclass(frozen=True)
class TaskOutcome:
    """What an orchestrator reports once a task ends."""

    agent_id: str
    duration_s: float
    success: bool
    task_id: str | None = None
    task_type: str | None = None
    cpu_usage: float | None = None
    memory_usage: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not (self.duration_s >= 0.0) or self.duration_s == float("inf"):
            raise ValueError("duration_s must be a finite number >= 0")
        for name in ("cpu_usage", "memory_usage"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= value <= 100.0):
                raise ValueError(f"{name} must be between 0 and 100")


@dataclass(frozen=True)
class CompletedTask:
    """What the tracker did with an outcome: which dispatch it closed, if any."""

    task_id: str | None
    agent_id: str
    task_type: str | None
    dispatched_at: float | None
    predicted_service_s: float | None
    ejected: bool
