"""What the store hands back: plain frozen dataclasses, no SQLAlchemy types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentlb.domain import Agent, AttributeValue
from agentlb.history import RejectedRow


@dataclass(frozen=True)
class AgentRow:
    """An agent as the registry holds it; `history_only` agents are never selected."""

    agent: Agent
    created_at: float
    updated_at: float
    history_only: bool


@dataclass(frozen=True)
class OutcomeWrite:
    """`created` is False when an identical outcome for the task was already recorded."""

    task_id: str
    created: bool


@dataclass(frozen=True)
class StoredOutcome:
    task_id: str
    agent_id: str
    task_type: str | None
    duration_s: float
    success: bool
    error: str | None
    cpu_usage: float | None
    memory_usage: float | None
    finished_at: float
    source: str


@dataclass(frozen=True)
class StoredDispatch:
    task_id: str
    agent_id: str
    strategy: str | None
    task_type: str
    attributes: Mapping[str, AttributeValue]
    features: Mapping[str, float | None]
    predicted_p50_s: float | None
    predicted_p90_s: float | None
    service_p50_s: float | None
    service_p90_s: float | None
    model_version: str | None
    confidence: float | None
    fallback_used: bool | None
    dispatched_at: float | None
    source: str


@dataclass(frozen=True)
class RestoreReport:
    """What `restore_tracker` rebuilt, for the start-up log."""

    agents: int
    history_only_agents: int
    outcomes_replayed: int
    in_flight_restored: int
    in_flight_expired: int
    in_flight_skipped: int
    finished_marked: int


@dataclass(frozen=True)
class ImportReport:
    """Rows written, rows rejected (with reasons), rows already stored identically, and the
    agent ids the registry did not know (recorded as history-only)."""

    written: int
    rejected: list[RejectedRow] = field(default_factory=list)
    history_only_agents: list[str] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True)
class AccuracyRow:
    """Prediction accuracy of one model version over finished dispatches that carried a
    prediction. Errors compare the predicted service time with the reported duration."""

    model_version: str
    n: int
    mae_s: float
    p90_coverage: float | None  # None when no dispatch of this version logged a p90
    correlation: float | None


def as_plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so values can be stored as JSON."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        return item()
    return value
