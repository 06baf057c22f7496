"""The `Predictor` protocol and the queueing arithmetic every predictor shares."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agentlb.domain import (
    COL_LATE_AT,
    COLUMNS_MIN_CANDIDATES_RICH,
    AgentState,
    FleetSnapshot,
    PredictedCompletion,
    PredictionMapping,
    TaskRequest,
    candidate_view,
    first_due,
    running_by_type,
)

# A running task has at least this share of its prediction left (never zero); one running past
# its prediction has as much left as it has overrun (durations have long tails: the longer a task
# has overrun, the longer it is likely to keep running).
MIN_REMAINING_SHARE = 0.25
DEFAULT_SERVICE_S = 1.0
# Running work overdue by less than this ratio is ordinary noise, not a slowed agent.
LATENESS_THRESHOLD = 2.5
MAX_LATENESS = 10.0
# From (earliest dispatched_at + MAX_LATENESS x predicted) + this, a running task is surely past the
# cap however the division rounds (a timestamp's rounding is ~1e-7 s), so the factor is the cap.
CAPPED_MARGIN_S = 1e-3


@dataclass(frozen=True)
class ServicePrediction:
    """Predicted service time of one task on each candidate (same order), p50 and p90."""

    p50_s: np.ndarray
    p90_s: np.ndarray


class Predictor(Protocol):
    """Predicts how long a task would run on each candidate agent, in one batched call."""

    @property
    def version(self) -> str: ...

    @property
    def source(self) -> str: ...

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction: ...

    def describe(self) -> dict[str, Any]: ...


class PredictorRef:
    """Holds the live predictor; `swap` replaces it atomically (hot reload).

    A selection reads `current` once and uses that object throughout, so it never sees
    half of one model and half of another.
    """

    def __init__(self, predictor: Predictor, fallback_reason: str | None = None) -> None:
        self._lock = threading.Lock()
        self._predictor = predictor
        self.fallback_reason = fallback_reason

    @property
    def current(self) -> Predictor:
        return self._predictor

    def swap(self, predictor: Predictor, fallback_reason: str | None = None) -> None:
        with self._lock:
            self._predictor = predictor
            self.fallback_reason = fallback_reason


def typical_service_s(state: AgentState, task_type: str, snapshot: FleetSnapshot) -> float:
    """Best simple guess of one task's service time on an agent, from learned EWMAs."""
    for value in (
        state.ewma_duration_by_type.get(task_type),
        state.ewma_duration_s,
        snapshot.fleet_ewma_by_type.get(task_type),
        snapshot.fleet_ewma_s,
    ):
        if value is not None and value > 0:
            return value
    return DEFAULT_SERVICE_S


def lateness_factor(state: AgentState, now: float, task_type: str) -> float:
    """How much slower than predicted the agent's running work of this task type is going,
    from its in-flight tasks alone (no need to wait for a completion): the largest
    elapsed / predicted among them when it passes 2.5, otherwise 1. A slowed-down agent shows
    here first. Below 2.5 an overrun is still ordinary noise: at 1.5, four busy slots of one
    type tripped it often enough to push work to slow agents. Per task type, so one
    mispredicted type does not taint the others. Only the oldest `LATENESS_WINDOW` running
    tasks are read (the longest-running, so the first to show an overrun), which bounds the
    cost on agents with very many slots."""
    cached = state.__dict__
    memo: tuple[float, str, float] | None = cached.get("_lateness")
    if memo is not None and memo[0] == now and memo[1] == task_type:
        return memo[2]  # the shortlist's first cut priced it for this snapshot already
    running = running_by_type(state).get(task_type)
    if not running:
        return 1.0
    capped: dict[str, float] | None = cached.get("_capped_from")
    if capped is None:
        capped = cached["_capped_from"] = {}
    capped_from = capped.get(task_type)
    if capped_from is None:
        capped_from = capped[task_type] = first_due(running, MAX_LATENESS) + CAPPED_MARGIN_S
    if now >= capped_from:
        return MAX_LATENESS  # a stalled agent stays at the cap: no need to price each task again
    worst = max(1.0, max([(now - dispatched_at) / predicted for dispatched_at, predicted in running]))
    factor = min(worst, MAX_LATENESS) if worst >= LATENESS_THRESHOLD else 1.0
    cached["_lateness"] = (now, task_type, factor)
    return factor


# Queued tasks played forward exactly on the slots; past this many, the fluid drain time
# (all remaining and queued work spread over the slots) stands in, so a long backlog costs
# O(slots) per selection instead of O(backlog).
EXACT_QUEUE_LIMIT = 32


def _queued_work_s(state: AgentState, snapshot: FleetSnapshot) -> float:
    """Predicted service time of the tasks queued behind the running ones, summed once per
    agent state (states are immutable and rebuilt when the agent's work changes)."""
    cached: tuple[float, dict[str, int]] | None = state.__dict__.get("_queued_work")
    if cached is None:
        known = 0.0
        unknown: dict[str, int] = {}
        for entry in state.in_flight[state.agent.max_concurrency :]:
            if entry.predicted_service_s:
                known += entry.predicted_service_s
            else:
                unknown[entry.task_type] = unknown.get(entry.task_type, 0) + 1
        cached = (known, unknown)
        state.__dict__["_queued_work"] = cached
    known, unknown = cached
    return known + sum(n * typical_service_s(state, t, snapshot) for t, n in unknown.items())


def expected_wait_s(state: AgentState, snapshot: FleetSnapshot, lateness: float = 1.0) -> float:
    """Expected wait before a new task starts on `state.agent`.

    The agent runs `max_concurrency` tasks at once, first come first served. The first
    `max_concurrency` in-flight tasks are running, with their predicted remaining times; the
    rest queue with their full predicted service times (all scaled by the agent's lateness).
    Playing that queue forward on the slots gives the time the next slot frees up; for a
    backlog longer than `EXACT_QUEUE_LIMIT`, the fluid drain time approximates it.
    """
    slots = state.agent.max_concurrency
    in_flight = state.in_flight
    if len(in_flight) < slots:
        return 0.0
    now = snapshot.now
    free_at: list[float] = []
    for entry in in_flight[:slots]:
        service = lateness * (
            entry.predicted_service_s or typical_service_s(state, entry.task_type, snapshot)
        )
        remaining = service - (now - entry.dispatched_at)
        # past its prediction, a task is expected to run about as long again as it has overrun
        free_at.append(max(remaining, -remaining, MIN_REMAINING_SHARE * service))
    if len(in_flight) - slots > EXACT_QUEUE_LIMIT:
        drain = (sum(free_at) + lateness * _queued_work_s(state, snapshot)) / slots
        return max(min(free_at), drain)
    heapq.heapify(free_at)
    for entry in in_flight[slots:]:
        service = lateness * (
            entry.predicted_service_s or typical_service_s(state, entry.task_type, snapshot)
        )
        heapq.heapreplace(free_at, free_at[0] + service)
    return free_at[0]


def completion_times(
    task: TaskRequest,
    candidates: Sequence[AgentState],
    snapshot: FleetSnapshot,
    predictor: Predictor,
) -> list[PredictedCompletion]:
    """Completion from now on each candidate: wait behind its in-flight work plus service,
    both scaled by the agent's current lateness."""
    if len(candidates) >= COLUMNS_MIN_CANDIDATES_RICH:
        predictions = completion_arrays(task, candidates, snapshot, predictor)
        return [predictions.at(i) for i in range(len(candidates))]
    service = predictor.predict_service(task, candidates, snapshot)
    result = []
    now = snapshot.now
    for i, state in enumerate(candidates):
        lateness = lateness_factor(state, now, task.task_type)
        wait = expected_wait_s(state, snapshot, lateness)
        p50 = lateness * float(service.p50_s[i])
        p90 = max(lateness * float(service.p90_s[i]), p50)
        result.append(PredictedCompletion(wait + p50, wait + p90, p50, p90, wait))
    return result


def completion_arrays(
    task: TaskRequest,
    candidates: Sequence[AgentState],
    snapshot: FleetSnapshot,
    predictor: Predictor,
) -> PredictionMapping:
    """`completion_times` as arrays keyed by agent id, with the same arithmetic.

    Lateness and the queueing wait are computed per agent only where they can differ from
    1 and 0: agents with a running task past the lateness screen, and agents whose slots are full.
    """
    service = predictor.predict_service(task, candidates, snapshot)
    view = candidate_view(task.task_type, candidates, snapshot)
    service_p50 = np.asarray(service.p50_s, dtype=np.float64)
    service_p90 = np.asarray(service.p90_s, dtype=np.float64)
    now = snapshot.now
    late = (view.row(COL_LATE_AT) <= now).nonzero()[0]  # 1-D: flatnonzero without its wrapper
    full = (view.active >= view.max_concurrency).nonzero()[0]
    if late.size:
        lateness = np.ones(view.n)
        for i in late.tolist():
            lateness[i] = lateness_factor(candidates[i], now, task.task_type)
        p50 = lateness * service_p50
        p90_raw = lateness * service_p90
    else:
        lateness = None
        p50 = service_p50.copy()
        p90_raw = service_p90
    p90 = np.where(p50 > p90_raw, p50, p90_raw)  # Python's max(p90_raw, p50), NaN included
    if full.size:
        wait = np.zeros(view.n)
        for i in full.tolist():
            wait[i] = expected_wait_s(
                candidates[i], snapshot, 1.0 if lateness is None else float(lateness[i])
            )
        return PredictionMapping(view, wait + p50, wait + p90, p50, p90, wait)
    return PredictionMapping(view, p50, p90, p50, p90, np.zeros(view.n))
