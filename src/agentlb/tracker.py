"""Live per-agent state: in-flight tasks, decayed success rate, duration EWMAs, resources, trend.

Thread-safe (one lock); time comes from an injected clock so the simulator can drive it.
The tracker learns only from reported outcomes and heartbeats.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from agentlb.domain import (
    TYPE_SAMPLES,
    Agent,
    AgentState,
    CompletedTask,
    FleetColumns,
    FleetSnapshot,
    FleetStatic,
    InFlightTask,
    TaskOutcome,
    TaskRequest,
    TrendCell,
    fast_new,
    state_row,
    type_row,
)
from agentlb.errors import (
    ConflictingOutcomeError,
    DuplicateTaskError,
    TaskAlreadyCompletedError,
    UnknownAgentError,
    UnknownTaskError,
)
from agentlb.regimes import Regime, RegimeConfig, RegimeDetector

Clock = Callable[[], float]
# What the balancer decided for a dispatch (strategy, fallback used, panic): an event log that
# replicates the tracker also replicates the selection counts (agentlb.replication).
SelectionTag = tuple[str, bool, bool]

TREND_WINDOW = 16
FINISHED_MEMORY = 100_000


@dataclass(frozen=True)
class TrackerConfig:
    ewma_alpha: float = 0.2
    success_alpha: float = 0.1
    peak_ewma_decay_s: float = 10.0
    in_flight_expiry_s: float = 3600.0
    regimes: RegimeConfig = field(default_factory=RegimeConfig)


@dataclass
class _AgentRecord:
    agent: Agent
    registered_at: float
    history_only: bool = False
    in_flight: dict[str, InFlightTask] = field(default_factory=dict)
    # `in_flight`'s values in dispatch order, appended to by each dispatch and replaced by a new
    # list after a removal. A state holds (list, length) and reads its tuple only when asked
    # (`AgentState.in_flight`): appends leave the prefix a state saw unchanged, and only an
    # agent whose slots are full is ever asked, so an agent holding thousands of tasks costs
    # nothing per dispatch.
    in_flight_log: list[InFlightTask] | None = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    success_rate: float = 1.0
    ewma_s: float | None = None
    ewma_by_type: dict[str, float] = field(default_factory=dict)
    var_by_type: dict[str, float] = field(default_factory=dict)
    samples_by_type: dict[str, int] = field(default_factory=dict)
    peak_cost_s: float = 0.0
    peak_stamp: float = 0.0
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    queue_length: int = 0
    load_samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=TREND_WINDOW))
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    times_ejected: int = 0
    cached: AgentState | None = None
    # Frozen copies of the per-type dicts, shared by successive states until the agent learns.
    types_view: tuple[dict[str, float], dict[str, float], dict[str, int]] | None = None
    # (slope, trend) of `load_samples`, computed on first read and kept until a sample is added
    # (heartbeats do not move it).
    trend_cell: TrendCell | None = None
    regime: RegimeDetector = field(default_factory=RegimeDetector)
    # The regime factor a task's recorded prediction carries (only where it is not 1), so its
    # residual is taken against the model's own prediction.
    dispatch_factor: dict[str, float] = field(default_factory=dict)
    # The duration EWMAs (overall, per type, variance per type) before the evidence of the
    # current regime (or of one building up) began.
    pre_regime: tuple[float | None, dict[str, float], dict[str, float]] | None = None


class AgentLoadTracker:
    """Live state of every agent; `snapshot()` hands strategies an immutable view."""

    # True when the tracker's mutations go through a shared event log (agentlb.replication):
    # the balancer's selection and ejection counts then come from that log too.
    shared: bool = False

    def __init__(self, clock: Clock = time.time, config: TrackerConfig | None = None) -> None:
        self.clock = clock
        self.config = config or TrackerConfig()
        self._lock = threading.RLock()
        self._agents: dict[str, _AgentRecord] = {}
        self._task_agent: dict[str, str] = {}
        self._finished: OrderedDict[str, tuple[str, float, bool]] = OrderedDict()
        self._fleet_cache: tuple[dict[str, float], float | None] | None = None
        self._agents_cache: tuple[AgentState, ...] | None = None
        self._states: list[AgentState] | None = None
        self._index: Mapping[str, int] = MappingProxyType({})
        self._dirty: set[str] = set()
        self._type_dirty: dict[str, set[str]] = {}
        # Column arrays are brought up to date only when a strategy asks for them (columns_for):
        # positions changed since the last update, with the task types whose statistics moved.
        self._columns: FleetColumns | None = None
        self._column_pending: dict[int, set[str]] = {}
        self._generation = 0
        self._static: FleetStatic | None = None
        self._ejected_bound = -math.inf  # at least every agent's ejected_until
        # Running sums of every agent's EWMAs, so fleet means cost O(task types) to refresh.
        self._type_sums: dict[str, float] = {}
        self._type_counts: dict[str, int] = {}
        self._overall_sum = 0.0
        self._overall_count = 0
        self._regimes: Mapping[str, Regime] = MappingProxyType({})

    # --- registry -------------------------------------------------------------------
    def register(self, agent: Agent, registered_at: float | None = None) -> None:
        """Add an agent or update its definition, keeping its learned statistics."""
        with self._lock:
            record = self._agents.get(agent.id)
            if record is None:
                when = self.clock() if registered_at is None else registered_at
                self._agents[agent.id] = _AgentRecord(agent=agent, registered_at=when)
            else:
                record.agent = agent
                record.history_only = False
                record.cached = None
                record.trend_cell = None
                self._fleet_cache = None
            self._rebuild_all()

    def remove(self, agent_id: str) -> None:
        with self._lock:
            record = self._require(agent_id)
            for task_id in record.in_flight:
                self._task_agent.pop(task_id, None)
            for task_type, value in record.ewma_by_type.items():
                self._type_sums[task_type] -= value
                self._type_counts[task_type] -= 1
                if self._type_counts[task_type] == 0:
                    del self._type_sums[task_type], self._type_counts[task_type]
            if record.ewma_s is not None:
                self._overall_sum -= record.ewma_s
                self._overall_count -= 1
            del self._agents[agent_id]
            if agent_id in self._regimes:
                self._republish_regimes()
            self._fleet_cache = None
            self._rebuild_all()

    def agent_ids(self) -> list[str]:
        with self._lock:
            return list(self._agents)

    def has_agent(self, agent_id: str) -> bool:
        with self._lock:
            return agent_id in self._agents

    # --- tasks ----------------------------------------------------------------------
    def _record_for_new_task(self, agent_id: str, task_id: str) -> _AgentRecord:
        """The live record of the agent a new task goes to; DuplicateTaskError for a task id in
        flight, TaskAlreadyCompletedError for one finished. The caller holds the lock."""
        record = self._require_live(agent_id)
        if task_id in self._task_agent:
            raise DuplicateTaskError(task_id)
        if task_id in self._finished:
            raise TaskAlreadyCompletedError(task_id)
        return record

    def dispatch(
        self,
        agent_id: str,
        task: TaskRequest,
        predicted_service_s: float | None = None,
        dispatched_at: float | None = None,
        selection: SelectionTag | None = None,
    ) -> InFlightTask:
        """Count `task` in flight on the agent (`selection`: read only by a shared tracker)."""
        with self._lock:
            record = self._record_for_new_task(agent_id, task.task_id)
            now = self.clock() if dispatched_at is None else dispatched_at
            entry = InFlightTask(task.task_id, task.task_type, now, predicted_service_s)
            if predicted_service_s and record.regime.level > 0.0:
                record.dispatch_factor[task.task_id] = record.regime.factor_at(now, self.config.regimes)
            record.in_flight[task.task_id] = entry
            if record.in_flight_log is not None:
                record.in_flight_log.append(entry)
            self._task_agent[task.task_id] = agent_id
            record.load_samples.append((now, len(record.in_flight)))
            record.trend_cell = None
            self._invalidate(record)
            return entry

    def complete(self, outcome: TaskOutcome, finished_at: float | None = None) -> CompletedTask:
        """Close the dispatch named by `outcome.task_id` and learn from the outcome.

        Without a task id the outcome closes the agent's oldest in-flight task (of the same
        task type when one is given); with none in flight it only updates the statistics.
        An unknown, already completed or mismatched task id raises and changes nothing.
        """
        with self._lock:
            record = self._require_live(outcome.agent_id)
            now = self.clock() if finished_at is None else finished_at
            entry: InFlightTask | None = None
            if outcome.task_id is not None:
                owner = self._task_agent.get(outcome.task_id)
                if owner is None:
                    if outcome.task_id in self._finished:
                        raise TaskAlreadyCompletedError(outcome.task_id)
                    raise UnknownTaskError(outcome.task_id)
                if owner != outcome.agent_id:
                    raise ConflictingOutcomeError(outcome.task_id, ["agent_id"])
                entry = record.in_flight[outcome.task_id]
            else:
                entry = self._oldest_in_flight(record, outcome.task_type)
            task_type = outcome.task_type or (entry.task_type if entry else None)
            if entry is not None:
                del record.in_flight[entry.task_id]
                record.in_flight_log = None
                del self._task_agent[entry.task_id]
                self._remember_finished(entry.task_id, outcome.agent_id, outcome)
                self._observe_regime(record, outcome, entry, now)
            self._observe(record, outcome, task_type, now)
            if outcome.success and task_type is not None:
                self._types_changed(record, (task_type,))
            record.load_samples.append((now, len(record.in_flight)))
            record.trend_cell = None
            self._invalidate(record, learned=outcome.success)
            return CompletedTask(
                task_id=entry.task_id if entry else None,
                agent_id=outcome.agent_id,
                task_type=task_type,
                dispatched_at=entry.dispatched_at if entry else None,
                predicted_service_s=entry.predicted_service_s if entry else None,
                ejected=False,
            )

    def learn(self, outcome: TaskOutcome, finished_at: float) -> None:
        """Update statistics from a past outcome without touching in-flight tasks (restore)."""
        with self._lock:
            record = self._require(outcome.agent_id)
            self._observe(record, outcome, outcome.task_type, finished_at)
            if outcome.success and outcome.task_type is not None:
                self._types_changed(record, (outcome.task_type,))
            self._invalidate(record, learned=outcome.success)

    def set_counts(self, agent_id: str, completed: int, failed: int) -> None:
        with self._lock:
            record = self._require(agent_id)
            record.completed, record.failed = completed, failed
            self._invalidate(record)

    def set_type_samples(self, agent_id: str, counts: Mapping[str, int]) -> None:
        """All-time successful samples per task type (restore; the replay covers a window)."""
        with self._lock:
            record = self._require(agent_id)
            for task_type, n in counts.items():
                if task_type in record.samples_by_type:
                    record.samples_by_type[task_type] = n
                    self._types_changed(record, (task_type,))
            self._invalidate(record, learned=True)

    def mark_finished(self, task_id: str, agent_id: str) -> None:
        """Remember a task as finished (restore), so a late duplicate is recognised."""
        with self._lock:
            self._finished[task_id] = (agent_id, 0.0, True)
            self._trim_finished()

    def is_in_flight(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._task_agent

    def in_flight_owner(self, task_id: str) -> str | None:
        with self._lock:
            return self._task_agent.get(task_id)

    def heartbeat(
        self,
        agent_id: str,
        cpu_usage: float | None = None,
        memory_usage: float | None = None,
        queue_length: int | None = None,
    ) -> None:
        with self._lock:
            record = self._require_live(agent_id)
            if cpu_usage is not None:
                record.cpu_usage = cpu_usage
            if memory_usage is not None:
                record.memory_usage = memory_usage
            if queue_length is not None:
                record.queue_length = queue_length
            self._invalidate(record)

    def eject(self, agent_id: str, until: float) -> None:
        with self._lock:
            record = self._require(agent_id)
            record.ejected_until = until
            self._ejected_bound = max(self._ejected_bound, until)
            record.times_ejected += 1
            record.consecutive_failures = 0
            self._invalidate(record)

    def expire_stale(self, now: float | None = None) -> list[str]:
        """Stop counting in-flight tasks older than the configured expiry; return their ids."""
        with self._lock:
            now = self.clock() if now is None else now
            horizon = now - self.config.in_flight_expiry_s
            expired: list[str] = []
            for record in self._agents.values():
                stale = [t for t, e in record.in_flight.items() if e.dispatched_at < horizon]
                for task_id in stale:
                    del record.in_flight[task_id]
                    record.dispatch_factor.pop(task_id, None)
                    del self._task_agent[task_id]
                    expired.append(task_id)
                if stale:
                    record.in_flight_log = None
                    self._invalidate(record)
            return expired

    # --- reads ----------------------------------------------------------------------
    def state(self, agent_id: str) -> AgentState:
        with self._lock:
            return self._state_of(self._require(agent_id))

    def snapshot(self) -> FleetSnapshot:
        with self._lock:
            if self._states is None:
                live = [r for r in self._agents.values() if not r.history_only]
                self._states = [self._state_of(r) for r in live]
                self._index = MappingProxyType({r.agent.id: i for i, r in enumerate(live)})
                self._static = FleetStatic([r.agent for r in live])
                self._ejected_bound = max((r.ejected_until for r in self._agents.values()), default=-math.inf)
                self._dirty.clear()
                self._type_dirty.clear()
                self._agents_cache = None
                self._columns = None
                self._column_pending.clear()
            if self._dirty:
                pending = self._column_pending
                type_dirty = self._type_dirty
                for agent_id in self._dirty:
                    position = self._index.get(agent_id)
                    if position is not None:
                        self._states[position] = self._state_of(self._agents[agent_id])
                        moved = pending.setdefault(position, set())
                        if agent_id in type_dirty:
                            moved |= type_dirty[agent_id]
                self._dirty.clear()
                self._agents_cache = None
                type_dirty.clear()
            if self._agents_cache is None:
                self._agents_cache = tuple(self._states)
            if self._fleet_cache is None:
                self._fleet_cache = self._fleet_ewmas()
            by_type, overall = self._fleet_cache
            return fast_new(
                FleetSnapshot,
                {
                    "now": self.clock(),
                    "agents": self._agents_cache,
                    "fleet_ewma_by_type": by_type,
                    "fleet_ewma_s": overall,
                    "index": self._index,
                    "_column_source": self,
                    "_generation": self._generation,
                    "_static": self._static,
                    "_ejected_bound": self._ejected_bound,
                    "regimes": self._regimes,
                },
            )

    def columns_for(self, snapshot: FleetSnapshot) -> FleetColumns:
        """The snapshot's states as column arrays. Brought up to date incrementally (changed
        agents only) when nothing moved since the snapshot was taken, else built from its states."""
        with self._lock:
            if snapshot.__dict__.get("_generation") == self._generation and self._states is not None:
                if self._columns is None:
                    self._columns = FleetColumns.from_states(self._states, self._static)
                    self._column_pending.clear()
                elif self._column_pending:
                    self._update_columns()
                return self._columns
        return FleetColumns.from_states(snapshot.agents)

    def total_in_flight(self) -> int:
        with self._lock:
            return len(self._task_agent)

    # --- internals ------------------------------------------------------------------
    def _require(self, agent_id: str) -> _AgentRecord:
        record = self._agents.get(agent_id)
        if record is None:
            raise UnknownAgentError(agent_id)
        return record

    def _require_live(self, agent_id: str) -> _AgentRecord:
        """A registered agent: one known only from imported history takes no live work."""
        record = self._require(agent_id)
        if record.history_only:
            raise UnknownAgentError(agent_id)
        return record

    def _invalidate(self, record: _AgentRecord, learned: bool = False) -> None:
        """Mark one agent's cached state stale; `learned` when its duration EWMAs moved."""
        record.cached = None
        self._dirty.add(record.agent.id)
        self._generation += 1
        if learned:
            self._fleet_cache = None
            record.types_view = None

    def _types_changed(self, record: _AgentRecord, task_types: Iterable[str]) -> None:
        """Note which of the agent's per-type statistics moved, for the column update."""
        self._type_dirty.setdefault(record.agent.id, set()).update(task_types)

    def _update_columns(self) -> None:
        """Copy-on-write update of the column arrays: rewrite only the changed agents' columns,
        into fresh arrays, so columns already handed out with a snapshot never change."""
        columns = self._columns
        states = self._states
        assert columns is not None and states is not None
        values = columns.values.copy()
        types = columns.types
        fresh: dict[str, np.ndarray] | None = None
        copied: set[str] = set()
        n = values.shape[1]
        bound = columns.ejected_bound
        for position, moved in self._column_pending.items():
            state = states[position]
            values[:, position] = state_row(state)
            if state.ejected_until > bound:
                bound = state.ejected_until
            if not moved:
                continue
            if fresh is None:
                fresh = dict(types)
            for task_type in moved:
                matrix = fresh.get(task_type)
                if matrix is None:
                    matrix = np.full((3, n), np.nan)
                    matrix[TYPE_SAMPLES] = 0.0
                    fresh[task_type] = matrix
                    copied.add(task_type)
                elif task_type not in copied:
                    matrix = fresh[task_type] = matrix.copy()
                    copied.add(task_type)
                matrix[:, position] = type_row(state, task_type)
        self._columns = FleetColumns(
            columns.static, columns.registered_at, values, types if fresh is None else fresh, bound
        )
        self._column_pending.clear()

    def _rebuild_all(self) -> None:
        self._states = None
        self._agents_cache = None
        self._columns = None
        self._generation += 1

    def _oldest_in_flight(self, record: _AgentRecord, task_type: str | None) -> InFlightTask | None:
        for entry in record.in_flight.values():
            if task_type is None or entry.task_type == task_type:
                return entry
        return None

    def _remember_finished(self, task_id: str, agent_id: str, outcome: TaskOutcome) -> None:
        self._finished[task_id] = (agent_id, outcome.duration_s, outcome.success)
        self._trim_finished()

    def _trim_finished(self) -> None:
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)

    def _observe(self, record: _AgentRecord, outcome: TaskOutcome, task_type: str | None, now: float) -> None:
        cfg = self.config
        duration = outcome.duration_s
        if outcome.success:
            record.completed += 1
            record.consecutive_failures = 0
        else:
            record.failed += 1
            record.consecutive_failures += 1
        record.success_rate += cfg.success_alpha * (float(outcome.success) - record.success_rate)
        if outcome.cpu_usage is not None:
            record.cpu_usage = outcome.cpu_usage
        if outcome.memory_usage is not None:
            record.memory_usage = outcome.memory_usage
        if not outcome.success:
            return  # a failed task's duration says little about how long work takes
        a = cfg.ewma_alpha
        if record.ewma_s is None:
            record.ewma_s = duration
            self._overall_sum += duration
            self._overall_count += 1
        else:
            step = a * (duration - record.ewma_s)
            record.ewma_s += step
            self._overall_sum += step
        if task_type is not None:
            previous = record.ewma_by_type.get(task_type)
            if previous is None:
                record.ewma_by_type[task_type] = duration
                record.var_by_type[task_type] = 0.0
                self._type_sums[task_type] = self._type_sums.get(task_type, 0.0) + duration
                self._type_counts[task_type] = self._type_counts.get(task_type, 0) + 1
            else:
                diff = duration - previous
                incr = a * diff
                record.ewma_by_type[task_type] = previous + incr
                record.var_by_type[task_type] = (1 - a) * (record.var_by_type[task_type] + diff * incr)
                self._type_sums[task_type] += incr
            record.samples_by_type[task_type] = record.samples_by_type.get(task_type, 0) + 1
        # Finagle's peak EWMA: jump to a higher latency at once, decay towards lower ones.
        elapsed = max(now - record.peak_stamp, 0.0)
        weight = math.exp(-elapsed / cfg.peak_ewma_decay_s)
        if duration > record.peak_cost_s:
            record.peak_cost_s = duration
        else:
            record.peak_cost_s = record.peak_cost_s * weight + duration * (1.0 - weight)
        record.peak_stamp = now

    def _observe_regime(
        self, record: _AgentRecord, outcome: TaskOutcome, entry: InFlightTask, now: float
    ) -> None:
        """Feed the agent's regime detector the completion's log residual against the model's
        prediction recorded at dispatch (agentlb.regimes); a failure or a task without a
        prediction says nothing about speed."""
        factor = record.dispatch_factor.pop(entry.task_id, 1.0)
        predicted = entry.predicted_service_s
        config = self.config.regimes
        if not (config.enabled and outcome.success and predicted and outcome.duration_s > 0):
            return
        residual = math.log(outcome.duration_s * factor / predicted)
        detector = record.regime
        quiet = detector.level <= 0.0 and detector.cum <= 0.0
        changed = detector.observe(residual, entry.task_type, now - outcome.duration_s, config)
        if quiet and (detector.cum > 0.0 or detector.level > 0.0):
            # the first evidence of a change, not yet in the EWMAs (`_observe` runs next): they
            # are what a regime's end restores
            record.pre_regime = (record.ewma_s, dict(record.ewma_by_type), dict(record.var_by_type))
        if changed:
            self._publish_regime(record)

    def _republish_regimes(self) -> None:
        """The snapshot's regimes, derived from every agent's detector; a new mapping each time,
        so snapshots already handed out keep theirs."""
        config = self.config.regimes
        regimes = {r.agent.id: regime for r in self._agents.values() if (regime := r.regime.regime(config))}
        self._regimes = MappingProxyType(regimes)

    def _publish_regime(self, record: _AgentRecord) -> None:
        """After the agent's regime changed. Its end restores the agent's duration EWMAs to what
        they were before its evidence began, so the slowed work's durations stop speaking for an
        agent that runs as usual again."""
        ended = record.agent.id in self._regimes and record.regime.level <= 0.0
        if ended and self.config.regimes.restore_ewmas:
            self._restore_ewmas(record)
        self._republish_regimes()

    def _restore_ewmas(self, record: _AgentRecord) -> None:
        saved, record.pre_regime = record.pre_regime, None
        if saved is None:
            return
        ewma_s, by_type, var_by_type = saved
        if ewma_s is not None and record.ewma_s is not None:
            self._overall_sum += ewma_s - record.ewma_s
            record.ewma_s = ewma_s
        restored = [t for t in by_type if t in record.ewma_by_type]
        for task_type in restored:
            self._type_sums[task_type] += by_type[task_type] - record.ewma_by_type[task_type]
            record.ewma_by_type[task_type] = by_type[task_type]
            record.var_by_type[task_type] = var_by_type.get(task_type, record.var_by_type[task_type])
        self._types_changed(record, restored)
        self._invalidate(record, learned=True)

    def _state_of(self, record: _AgentRecord) -> AgentState:
        if record.cached is None:
            cell = record.trend_cell
            if cell is None:
                cell = record.trend_cell = TrendCell(tuple(record.load_samples), record.agent.max_concurrency)
            views = record.types_view
            if views is None:
                views = record.types_view = (
                    dict(record.ewma_by_type),
                    dict(record.var_by_type),
                    dict(record.samples_by_type),
                )
            record.cached = fast_new(
                AgentState,
                {
                    "agent": record.agent,
                    "active_tasks": len(record.in_flight),
                    "completed_tasks": record.completed,
                    "failed_tasks": record.failed,
                    "success_rate": record.success_rate,
                    "ewma_duration_s": record.ewma_s,
                    "ewma_duration_by_type": views[0],
                    "ewma_variance_by_type": views[1],
                    "samples_by_type": views[2],
                    "peak_ewma_s": record.peak_cost_s,
                    "peak_ewma_stamp": record.peak_stamp,
                    "cpu_usage": record.cpu_usage,
                    "memory_usage": record.memory_usage,
                    "queue_length": record.queue_length,
                    "_trend_cell": cell,
                    "consecutive_failures": record.consecutive_failures,
                    "ejected_until": record.ejected_until,
                    "times_ejected": record.times_ejected,
                    "registered_at": record.registered_at,
                    "_in_flight_log": self._in_flight_of(record),
                },
            )
        return record.cached

    @staticmethod
    def _in_flight_of(record: _AgentRecord) -> tuple[list[InFlightTask], int]:
        log = record.in_flight_log
        if log is None:
            log = record.in_flight_log = list(record.in_flight.values())
        return log, len(log)

    def _fleet_ewmas(self) -> tuple[dict[str, float], float | None]:
        """Mean over agents of their EWMA per task type and overall."""
        by_type = {t: self._type_sums[t] / n for t, n in self._type_counts.items()}
        overall = self._overall_sum / self._overall_count if self._overall_count else None
        return by_type, overall

    def register_history_only(self, agent_id: str) -> None:
        """An agent known only from imported history: kept for training, never selected."""
        with self._lock:
            if agent_id not in self._agents:
                self._agents[agent_id] = _AgentRecord(
                    agent=Agent(id=agent_id, name=agent_id, enabled=False),
                    registered_at=self.clock(),
                    history_only=True,
                )
