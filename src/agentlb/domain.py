"""Plain data carried between the tracker, strategies, balancer, store and API.

Field names follow the product spec (`AgentLoadMetrics`, `LoadBalancingResult`).
Nothing here does I/O; everything is immutable once built.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from agentlb.regimes import Regime

AttributeValue = str | float | int | bool | None
_T = TypeVar("_T")


def fast_new(cls: type[_T], values: dict[str, Any]) -> _T:
    """Build a frozen dataclass from a dict holding EVERY field, without the generated
    `__init__`'s per-field `object.__setattr__` (hot path; the result is still immutable).
    Only for classes without `__post_init__`; tests/core checks the results equal normal builds."""
    instance = object.__new__(cls)
    instance.__dict__.update(values)
    return instance


class cached_attribute(Generic[_T]):
    """`functools.cached_property` without its per-instance lock (Python 3.11 takes an RLock
    on every first access; 3.12 dropped it): column views are built per selection, so each
    of their cached columns is a first access. Computed once, then stored on the instance,
    whose attribute shadows this descriptor from then on."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> _T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.func(instance)
        return value


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


TREND_THRESHOLD = 0.25


def load_trend(samples: Iterable[tuple[float, int]], max_concurrency: int) -> tuple[float, WorkloadTrend]:
    """Least-squares slope of in-flight count over the recent window (tasks per second),
    classified by how much it moved the agent's load over that window."""
    points = list(samples)
    if len(points) < 3:
        return 0.0, WorkloadTrend.STABLE
    n = len(points)
    times = [t for t, _ in points]
    mean_t = sum(times) / n
    mean_y = sum([y for _, y in points]) / n
    var_t = sum([(t - mean_t) ** 2 for t in times])
    if var_t <= 0:
        return 0.0, WorkloadTrend.STABLE
    slope = sum([(t - mean_t) * (y - mean_y) for t, y in points]) / var_t
    span = points[-1][0] - points[0][0]
    change = slope * span / max_concurrency
    if change > TREND_THRESHOLD:
        return slope, WorkloadTrend.INCREASING
    if change < -TREND_THRESHOLD:
        return slope, WorkloadTrend.DECREASING
    return slope, WorkloadTrend.STABLE


class TrendCell:
    """One agent's load samples and their trend, computed on first read: most selections
    read the trend of the chosen agent only, not of every agent whose state changed."""

    __slots__ = ("max_concurrency", "points", "value")

    def __init__(self, points: tuple[tuple[float, int], ...], max_concurrency: int) -> None:
        self.points = points
        self.max_concurrency = max_concurrency
        self.value: tuple[float, WorkloadTrend] | None = None

    def get(self) -> tuple[float, WorkloadTrend]:
        value = self.value
        if value is None:
            value = self.value = load_trend(self.points, self.max_concurrency)
        return value


_LAZY_TREND_FIELDS = frozenset({"trend_slope", "workload_trend"})


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
    # 128 random bits as 32 hex digits, the shape of a uuid4's hex at a third of its cost
    task_id: str = field(default_factory=lambda: secrets.token_hex(16))
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

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """`trend_slope` / `workload_trend` of a tracker-built state come from its trend
            cell, and `in_flight` from the tracker's dispatch-order list (the first `length`
            entries), on first read; then they are stored like any field."""
            if name == "in_flight":
                source: tuple[list[InFlightTask], int] | None = self.__dict__.get("_in_flight_log")
                if source is not None:
                    value = tuple(islice(source[0], source[1]))
                    self.__dict__["in_flight"] = value
                    return value
            if name in _LAZY_TREND_FIELDS:
                cell = self.__dict__.get("_trend_cell")
                if cell is not None:
                    slope, trend = cell.get()
                    self.__dict__["trend_slope"] = slope
                    self.__dict__["workload_trend"] = trend
                    return slope if name == "trend_slope" else trend
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """Pickled/copied with its trend and in-flight tasks resolved, like an eagerly built state."""
        state = dict(self.__dict__)
        cell = state.pop("_trend_cell", None)
        if cell is not None:
            state["trend_slope"], state["workload_trend"] = cell.get()
        if state.pop("_in_flight_log", None) is not None:
            state["in_flight"] = self.in_flight
        return state

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


class ColumnSource(Protocol):
    def columns_for(self, snapshot: FleetSnapshot) -> FleetColumns: ...


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at one instant; strategies and predictors read only this."""

    now: float
    agents: tuple[AgentState, ...]
    fleet_ewma_by_type: Mapping[str, float]
    fleet_ewma_s: float | None
    index: Mapping[str, int] = field(default_factory=dict)
    # Agents running slower than the model predicts right now (agentlb.regimes), by id.
    regimes: Mapping[str, Regime] = field(default_factory=dict)

    @property
    def columns(self) -> FleetColumns | None:
        """The same states as column arrays (one column per agent, in `agents` order), so
        strategies score every candidate with a few vector operations. Built by the tracker on
        first use (strategies that never read them cost nothing); None for a hand-made snapshot."""
        found: FleetColumns | None = self.__dict__.get("_columns")
        if found is None:
            source: ColumnSource | None = self.__dict__.get("_column_source")
            if source is None:
                return None
            found = self.__dict__["_columns"] = source.columns_for(self)
        return found

    def __getstate__(self) -> dict[str, Any]:
        """Pickled/copied without the tracker that builds its columns (columns already built travel)."""
        state = dict(self.__dict__)
        state.pop("_column_source", None)
        return state

    @property
    def fleet_static(self) -> FleetStatic | None:
        """The agents' definitions as arrays, shared by snapshots until agents are (re)registered."""
        return self.__dict__.get("_static")

    @property
    def ejected_bound(self) -> float:
        """At or after this instant no agent of the snapshot is ejected."""
        bound: float | None = self.__dict__.get("_ejected_bound")
        return max((s.ejected_until for s in self.agents), default=-math.inf) if bound is None else bound

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
        agent = state.agent
        load_score = min(state.active_tasks / agent.max_concurrency, 1.0)
        fleet = snapshot.fleet_ewma_by_type
        specialization = {}
        for task_type, own in state.ewma_duration_by_type.items():  # FleetSnapshot.specialization
            fleet_type = fleet.get(task_type)
            specialization[task_type] = 1.0 if fleet_type is None or own <= 0 else fleet_type / own
        return fast_new(
            cls,
            {
                "agent_id": agent.id,
                "agent_name": agent.name,
                "active_tasks": state.active_tasks,
                "completed_tasks": state.completed_tasks,
                "failed_tasks": state.failed_tasks,
                "avg_task_duration": state.ewma_duration_s or 0.0,
                "success_rate": state.success_rate,
                "cpu_usage": state.cpu_usage,
                "memory_usage": state.memory_usage,
                "load_score": load_score,
                "capacity_score": 1.0 - load_score,
                "predicted_completion_time": predicted_completion_s,
                "workload_trend": state.workload_trend.value,
                "specialization_score": specialization,
            },
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
class ExperimentArmRef:
    """The experiment arm a selection was routed to (experiments/), logged with its dispatch."""

    experiment_id: str
    arm: str


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
    experiment: ExperimentArmRef | None = None


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


# --- column view of the fleet (performance) ---------------------------------------------
# Rows of `FleetColumns.values`, one column per agent. Missing knowledge is NaN.
COL_ACTIVE = 0
COL_SUCCESS_RATE = 1
COL_CPU = 2
COL_MEMORY = 3
COL_QUEUE = 4
COL_EJECTED_UNTIL = 5
COL_EWMA_S = 6
COL_PEAK_EWMA_S = 7
COL_PEAK_STAMP = 8
COL_TREND_SLOPE = 9
COL_TREND_CODE = 10  # -1 decreasing, 0 stable, 1 increasing
COL_LC_SCORE = 11  # least connection: 1 / (1 + active / max(success_rate, 0.1)) (product spec)
COL_LOAD_SCORE = 12  # AgentState.load_score
N_COLUMNS = 13
LC_MIN_SUCCESS_RATE = 0.1
# Below this many candidates a strategy that reads only a few fields per agent is faster in
# plain Python than through the column arrays (numpy's per-call cost dominates).
COLUMNS_MIN_CANDIDATES = 128
# The same for strategies that compute many quantities per agent (resource aware, predictive,
# hybrid, the heuristic predictor): the arrays pay off sooner.
COLUMNS_MIN_CANDIDATES_RICH = 24
# Predictive and hybrid with a trained model: the model scores a batch either way, so the
# arrays only replace the per-agent wait and weight loops, and pay off sooner still
# (bench: hybrid over a 16-agent shortlist 508 -> 455 us).
COLUMNS_MIN_CANDIDATES_MODEL = 8
# Rows of a per-task-type matrix.
TYPE_EWMA = 0
TYPE_VARIANCE = 1
TYPE_SAMPLES = 2
TREND_CODES = {WorkloadTrend.DECREASING: -1.0, WorkloadTrend.STABLE: 0.0, WorkloadTrend.INCREASING: 1.0}


def state_row(state: AgentState) -> list[float]:
    """One agent's column values, from the same `AgentState` strategies would read."""
    return [
        float(state.active_tasks),
        float(state.success_rate),
        float(state.cpu_usage),
        float(state.memory_usage),
        float(state.queue_length),
        float(state.ejected_until),
        math.nan if state.ewma_duration_s is None else float(state.ewma_duration_s),
        float(state.peak_ewma_s),
        float(state.peak_ewma_stamp),
        float(state.trend_slope),
        TREND_CODES[state.workload_trend],
        1.0 / (1.0 + state.active_tasks / max(state.success_rate, LC_MIN_SUCCESS_RATE)),
        state.load_score,
    ]


def type_row(state: AgentState, task_type: str) -> tuple[float, float, float]:
    ewma = state.ewma_duration_by_type.get(task_type)
    variance = state.ewma_variance_by_type.get(task_type)
    return (
        math.nan if ewma is None else float(ewma),
        math.nan if variance is None else float(variance),
        float(state.samples_by_type.get(task_type, 0)),
    )


class FleetStatic:
    """Agent definitions as arrays; they change only when agents are (re)registered or removed,
    so the tracker shares one instance across snapshots, with its capability-mask cache."""

    def __init__(self, agents: Sequence[Agent]) -> None:
        self.ids: tuple[str, ...] = tuple(a.id for a in agents)
        self.capabilities = [a.capabilities for a in agents]
        self.enabled = np.array([a.enabled for a in agents], dtype=bool)
        self.max_concurrency = np.array([float(a.max_concurrency) for a in agents], dtype=np.float64)
        self.weight = np.array([float(a.weight) for a in agents], dtype=np.float64)
        self.unit_weights = bool((self.weight == 1.0).all())
        self._masks: dict[frozenset[str], tuple[np.ndarray, int]] = {}
        self._positions: dict[frozenset[str], tuple[int, ...]] = {}

    def capable_positions(self, required: frozenset[str]) -> tuple[int, ...]:
        """Positions of `capable(required)` (cached with it)."""
        found = self._positions.get(required)
        if found is None:
            found = tuple(np.flatnonzero(self.capable(required)[0]).tolist())
            if len(self._positions) < 1024:
                self._positions[required] = found
        return found

    def capable(self, required: frozenset[str]) -> tuple[np.ndarray, int]:
        """Enabled agents holding every required capability, and how many (cached per set)."""
        found = self._masks.get(required)
        if found is None:
            mask = self.enabled & np.array([required <= c for c in self.capabilities], dtype=bool)
            found = (mask, int(np.count_nonzero(mask)))
            if len(self._masks) < 1024:
                self._masks[required] = found
        return found


class FleetColumns:
    """The fleet's live state as arrays (one column per agent, in snapshot order).

    Never mutated once handed out: the tracker copies before it writes (copy-on-write).
    `ejected_bound` is at least every agent's `ejected_until`: at or after it nobody is ejected.
    """

    __slots__ = ("ejected_bound", "registered_at", "static", "types", "values")

    def __init__(
        self,
        static: FleetStatic,
        registered_at: np.ndarray,
        values: np.ndarray,
        types: Mapping[str, np.ndarray],
        ejected_bound: float,
    ) -> None:
        self.static = static
        self.registered_at = registered_at
        self.values = values  # (N_COLUMNS, n)
        self.types = types  # task type -> (3, n): ewma (NaN: none), variance (NaN), samples
        self.ejected_bound = ejected_bound

    @classmethod
    def from_states(cls, states: Sequence[AgentState], static: FleetStatic | None = None) -> FleetColumns:
        """Columns built from states directly (all of a snapshot's, or candidates that did not
        come from one); `static` when the caller already holds their agents' definitions."""
        if static is None:
            static = FleetStatic([s.agent for s in states])
        values = np.array([state_row(s) for s in states], dtype=np.float64).T.reshape(N_COLUMNS, len(states))
        names = {t for s in states for t in s.ewma_duration_by_type} | {
            t for s in states for t in s.samples_by_type
        }
        types = {
            t: np.array([type_row(s, t) for s in states], dtype=np.float64).T.reshape(3, len(states))
            for t in names
        }
        registered = np.array([s.registered_at for s in states], dtype=np.float64)
        bound = max((s.ejected_until for s in states), default=-math.inf)
        return cls(static, registered, values, types, bound)


class CandidateStates(list[AgentState]):
    """Candidate states plus their positions in the snapshot they came from, so strategies can
    take the candidates' columns instead of reading every `AgentState` in Python."""

    def __init__(self, states: Sequence[AgentState], positions: np.ndarray, snapshot: FleetSnapshot) -> None:
        super().__init__(states)
        self.positions = positions
        self.snapshot = snapshot
        self.views: dict[str, CandidateView] = {}


class CandidateView:
    """The columns of one candidate list, for one task type, computed once per selection and
    shared by every strategy and the predictor that score it. Each column is taken from the
    snapshot's arrays only when a strategy first reads it."""

    def __init__(
        self,
        ids: list[str] | None,
        columns: FleetColumns,
        positions: np.ndarray | None,
        task_type: str,
        n: int,
    ) -> None:
        if ids is not None:
            self.ids = ids
        self.n = n
        self.task_type = task_type
        self.columns = columns
        self.positions = positions
        self._cache: dict[str, np.ndarray] = {}

    @cached_attribute
    def ids(self) -> list[str]:
        every = self.columns.static.ids
        if self.positions is None:
            return list(every)
        return [every[i] for i in self.positions.tolist()]

    def id_at(self, i: int) -> str:
        """The agent id of candidate `i` (without building the whole id list)."""
        if self.positions is None:
            return self.columns.static.ids[i]
        return self.columns.static.ids[int(self.positions[i])]

    def _take(self, array: np.ndarray) -> np.ndarray:
        return array if self.positions is None else array[..., self.positions]

    @cached_attribute
    def block(self) -> np.ndarray:
        """(N_COLUMNS, n): every `COL_*` column for the candidates, gathered in one step (a
        selection reads most of them, and one gather costs about what one column's does)."""
        values = self.columns.values
        return values if self.positions is None else values[:, self.positions]

    def row(self, column: int) -> np.ndarray:
        """One of the `COL_*` columns for the candidates."""
        found: np.ndarray = self.block[column]
        return found

    @property
    def active(self) -> np.ndarray:
        return self.row(COL_ACTIVE)

    @property
    def success_rate(self) -> np.ndarray:
        return self.row(COL_SUCCESS_RATE)

    @cached_attribute
    def max_concurrency(self) -> np.ndarray:
        return self._take(self.columns.static.max_concurrency)

    @cached_attribute
    def weight(self) -> np.ndarray:
        return self._take(self.columns.static.weight)

    @cached_attribute
    def registered_at(self) -> np.ndarray:
        return self._take(self.columns.registered_at)

    @cached_attribute
    def typed(self) -> np.ndarray:
        """(3, n): this task type's EWMA (NaN: none yet), variance (NaN) and sample count."""
        matrix = self.columns.types.get(self.task_type)
        if matrix is None:
            matrix = np.full((3, self.n), math.nan)
            matrix[TYPE_SAMPLES] = 0.0
            return matrix
        return self._take(matrix)

    @property
    def own_ewma(self) -> np.ndarray:
        return self.typed[TYPE_EWMA]  # type: ignore[no-any-return]

    @property
    def own_variance(self) -> np.ndarray:
        return self.typed[TYPE_VARIANCE]  # type: ignore[no-any-return]

    @property
    def samples(self) -> np.ndarray:
        return self.typed[TYPE_SAMPLES]  # type: ignore[no-any-return]

    @cached_attribute
    def has_type(self) -> np.ndarray:
        known: np.ndarray = ~np.isnan(self.own_ewma)
        return known

    def load_score(self) -> np.ndarray:
        """min(active / max_concurrency, 1) (AgentState.load_score)."""
        return self.row(COL_LOAD_SCORE)

    def specialization(self, snapshot: FleetSnapshot) -> np.ndarray:
        """FleetSnapshot.specialization for every candidate: fleet EWMA / own, 1 when unknown."""
        found = self._cache.get("specialization")
        if found is None:
            fleet = snapshot.fleet_ewma_by_type.get(self.task_type)
            found = np.ones(self.n)
            if fleet is not None:
                own = self.own_ewma
                np.divide(fleet, own, out=found, where=own > 0)  # NaN (no EWMA) compares False
            self._cache["specialization"] = found
        return found


def candidate_view(
    task_type: str, candidates: Sequence[AgentState], snapshot: FleetSnapshot
) -> CandidateView:
    """Columns for `candidates`: taken from the snapshot's arrays when the candidates came from
    it, else built from the states themselves (same values, slower)."""
    if isinstance(candidates, CandidateStates) and candidates.snapshot is snapshot:
        view = candidates.views.get(task_type)
        if view is None:
            columns = snapshot.columns
            assert columns is not None
            n = len(candidates)
            positions = None if n == len(columns.static.ids) else candidates.positions
            view = candidates.views[task_type] = CandidateView(None, columns, positions, task_type, n)
        return view
    columns = snapshot.columns
    ids = [s.agent.id for s in candidates]
    if columns is not None and snapshot.index:
        index = snapshot.index
        agents = snapshot.agents
        found = [index.get(agent_id) for agent_id in ids]
        if all(p is not None and agents[p] is s for p, s in zip(found, candidates, strict=True)):
            positions = np.array(found, dtype=np.intp)
            return CandidateView(ids, columns, positions, task_type, len(ids))
    return CandidateView(ids, FleetColumns.from_states(candidates), None, task_type, len(ids))


class ArrayMapping(Mapping[str, float]):
    """Scores keyed by agent id over an array, without building a dict per selection."""

    def __init__(self, ids: list[str] | CandidateView, values: np.ndarray) -> None:
        self._ids = ids
        self.values_ = values
        self._index: dict[str, int] | None = None
        self._lookups = 0

    @property
    def ids(self) -> list[str]:
        """Agent ids in candidate order (taken from the candidates' view when first needed)."""
        ids = self._ids
        if isinstance(ids, CandidateView):
            ids = self._ids = ids.ids
        return ids

    def position(self, key: str) -> int | None:
        """A few lookups scan the id list; a dict index is built once lookups add up."""
        if self._index is None:
            self._lookups += 1
            if self._lookups <= 4:
                try:
                    return self.ids.index(key)
                except ValueError:
                    return None
            self._index = {k: i for i, k in enumerate(self.ids)}
        return self._index.get(key)

    def __getitem__(self, key: str) -> float:
        i = self.position(key) if isinstance(key, str) else None
        if i is None:
            raise KeyError(key)
        return float(self.values_[i])

    @property
    def source(self) -> list[str] | CandidateView:
        """What the ids come from (a list, or the candidates' view that lists them on demand)."""
        return self._ids

    def id_at(self, i: int) -> str:
        ids = self._ids
        return ids.id_at(i) if isinstance(ids, CandidateView) else ids[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.values_)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.position(key) is not None


class PredictionMapping(Mapping[str, PredictedCompletion]):
    """Predicted completions keyed by agent id over arrays; objects built only when read."""

    def __init__(
        self,
        ids: list[str] | CandidateView,
        p50_s: np.ndarray,
        p90_s: np.ndarray,
        service_p50_s: np.ndarray,
        service_p90_s: np.ndarray,
        wait_s: np.ndarray,
    ) -> None:
        self.scores = ArrayMapping(ids, p50_s)
        self.p50_s, self.p90_s = p50_s, p90_s
        self.service_p50_s, self.service_p90_s, self.wait_s = service_p50_s, service_p90_s, wait_s

    def at(self, i: int) -> PredictedCompletion:
        return PredictedCompletion(
            float(self.p50_s[i]),
            float(self.p90_s[i]),
            float(self.service_p50_s[i]),
            float(self.service_p90_s[i]),
            float(self.wait_s[i]),
        )

    def __getitem__(self, key: str) -> PredictedCompletion:
        i = self.scores.position(key) if isinstance(key, str) else None
        if i is None:
            raise KeyError(key)
        return self.at(i)

    def __iter__(self) -> Iterator[str]:
        return iter(self.scores.ids)

    def __len__(self) -> int:
        return len(self.scores.ids)

    def __contains__(self, key: object) -> bool:
        return key in self.scores
