"""The `Predictor` protocol and the queueing arithmetic every predictor shares."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agentlb.domain import (
    COLUMNS_MIN_CANDIDATES_RICH,
    AgentState,
    CandidateView,
    FleetSnapshot,
    PredictedCompletion,
    PredictionMapping,
    TaskRequest,
    candidate_view,
)

# A running task has at least this share of its prediction left (never zero); one running past
# its prediction has as much left as it has overrun (durations have long tails: the longer a task
# has overrun, the longer it is likely to keep running).
MIN_REMAINING_SHARE = 0.25
DEFAULT_SERVICE_S = 1.0


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


def expected_wait_s(state: AgentState, snapshot: FleetSnapshot) -> float:
    """Expected wait before a new task starts on `state.agent`.

    The agent runs `max_concurrency` tasks at once, first come first served. The first
    `max_concurrency` in-flight tasks are running, with their predicted remaining times (one
    past its prediction is expected to run about as long again as it has overrun, so a slowed
    or stalled agent's wait grows with its overrun); the rest queue with their full predicted
    service times. Playing that queue forward on the slots gives the time the next slot frees
    up; for a backlog longer than `EXACT_QUEUE_LIMIT`, the fluid drain time approximates it.
    """
    slots = state.agent.max_concurrency
    if state.active_tasks < slots:  # before reading `in_flight`, which a state builds on first read
        return 0.0
    in_flight = state.in_flight
    now = snapshot.now
    free_at: list[float] = []
    for entry in in_flight[:slots]:
        service = entry.predicted_service_s or typical_service_s(state, entry.task_type, snapshot)
        remaining = service - (now - entry.dispatched_at)
        free_at.append(max(remaining, -remaining, MIN_REMAINING_SHARE * service))
    if len(in_flight) - slots > EXACT_QUEUE_LIMIT:
        drain = (sum(free_at) + _queued_work_s(state, snapshot)) / slots
        return max(min(free_at), drain)
    heapq.heapify(free_at)
    for entry in in_flight[slots:]:
        service = entry.predicted_service_s or typical_service_s(state, entry.task_type, snapshot)
        heapq.heapreplace(free_at, free_at[0] + service)
    return free_at[0]


def completion_times(
    task: TaskRequest,
    candidates: Sequence[AgentState],
    snapshot: FleetSnapshot,
    predictor: Predictor,
) -> list[PredictedCompletion]:
    """Completion from now on each candidate: wait behind its in-flight work plus service."""
    if len(candidates) >= COLUMNS_MIN_CANDIDATES_RICH:
        predictions = completion_arrays(task, candidates, snapshot, predictor)
        return [predictions.at(i) for i in range(len(candidates))]
    service = regime_corrected(
        predictor, predictor.predict_service(task, candidates, snapshot), candidates, snapshot
    )
    result = []
    for i, state in enumerate(candidates):
        wait = expected_wait_s(state, snapshot)
        p50 = float(service.p50_s[i])
        p90 = max(float(service.p90_s[i]), p50)
        result.append(PredictedCompletion(wait + p50, wait + p90, p50, p90, wait))
    return result


def completion_arrays(
    task: TaskRequest,
    candidates: Sequence[AgentState],
    snapshot: FleetSnapshot,
    predictor: Predictor,
) -> PredictionMapping:
    """`completion_times` as arrays keyed by agent id, with the same arithmetic."""
    service = regime_corrected(
        predictor, predictor.predict_service(task, candidates, snapshot), candidates, snapshot
    )
    view = candidate_view(task.task_type, candidates, snapshot)
    p50 = np.array(service.p50_s, dtype=np.float64)
    p90_raw = np.asarray(service.p90_s, dtype=np.float64)
    p90 = np.where(p50 > p90_raw, p50, p90_raw)  # Python's max(p90_raw, p50), NaN included
    wait = queueing_waits(view, candidates, snapshot)
    if wait is None:
        return PredictionMapping(view, p50, p90, p50, p90, np.zeros(view.n))
    return PredictionMapping(view, wait + p50, wait + p90, p50, p90, wait)


def regime_corrected(
    predictor: Predictor,
    service: ServicePrediction,
    candidates: Sequence[AgentState],
    snapshot: FleetSnapshot,
) -> ServicePrediction:
    """The service prediction times each candidate's slow-down factor (agentlb.regimes), for
    predictors that declare `regime_corrected`: a trained model says how long a task takes on an
    agent as it usually runs, the regime how this agent runs right now. The heuristic's EWMAs
    follow the agent already and are left as they are."""
    regimes = snapshot.regimes
    if not regimes or not getattr(predictor, "regime_corrected", False):
        return service
    now = snapshot.now
    factors = np.array(
        [regime.factor(now) if (regime := regimes.get(s.agent.id)) is not None else 1.0 for s in candidates]
    )
    return ServicePrediction(np.asarray(service.p50_s) * factors, np.asarray(service.p90_s) * factors)


def queueing_waits(
    view: CandidateView, candidates: Sequence[AgentState], snapshot: FleetSnapshot
) -> np.ndarray | None:
    """`expected_wait_s` of every candidate, computed only for those whose slots are full (it
    is 0 elsewhere); None when no candidate's are."""
    full = (view.active >= view.max_concurrency).nonzero()[0]  # 1-D: flatnonzero without its wrapper
    if not full.size:
        return None
    wait = np.zeros(view.n)
    for i in full.tolist():
        wait[i] = expected_wait_s(candidates[i], snapshot)
    return wait
