"""The product spec's heuristic predictor (no training)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentlb.domain import (
    COL_EWMA_S,
    COL_TREND_CODE,
    COLUMNS_MIN_CANDIDATES_RICH,
    AgentState,
    CandidateView,
    FleetSnapshot,
    TaskRequest,
    WorkloadTrend,
    candidate_view,
)
from agentlb.predictor.base import DEFAULT_SERVICE_S, ServicePrediction

TREND_FACTORS = {
    WorkloadTrend.INCREASING: 1.1,
    WorkloadTrend.STABLE: 1.0,
    WorkloadTrend.DECREASING: 0.9,
}
# TREND_FACTORS indexed by the column trend code + 1 (-1 decreasing, 0 stable, 1 increasing).
TREND_FACTOR_BY_CODE = np.array(
    [
        TREND_FACTORS[WorkloadTrend.DECREASING],
        TREND_FACTORS[WorkloadTrend.STABLE],
        TREND_FACTORS[WorkloadTrend.INCREASING],
    ]
)
LOAD_SENSITIVITY = 0.5
Z90 = 1.2815515655446004
UNKNOWN_SPREAD = 1.5


def heuristic_service_s(state: AgentState, task_type: str, snapshot: FleetSnapshot) -> float:
    """predicted_time = base_time x load_factor x trend_factor / specialization_factor
    (product spec, "Predictive ML-based Selection").

    base_time is the fleet's EWMA duration for the task type (else the fleet's overall EWMA);
    specialization_factor is the fleet EWMA over the agent's own for the type, so
    base_time / specialization_factor is the agent's own EWMA when it has one;
    load_factor = 1 + 0.5 x load_score; trend_factor 1.1 / 1.0 / 0.9 for an increasing /
    stable / decreasing workload.
    """
    base = snapshot.fleet_ewma_by_type.get(task_type) or snapshot.fleet_ewma_s or DEFAULT_SERVICE_S
    specialization = snapshot.specialization(state, task_type)
    if task_type not in state.ewma_duration_by_type and state.ewma_duration_s and snapshot.fleet_ewma_s:
        specialization = snapshot.fleet_ewma_s / state.ewma_duration_s
    load_factor = 1.0 + LOAD_SENSITIVITY * state.load_score
    trend_factor = TREND_FACTORS[state.workload_trend]
    return base * load_factor * trend_factor / specialization


def heuristic_confidence(predicted_s: float, time_variance: float) -> float:
    """confidence = 1 / (1 + time_variance / predicted_time) (product spec)."""
    if predicted_s <= 0:
        return 0.0
    return 1.0 / (1.0 + time_variance / predicted_s)


class HeuristicPredictor:
    """Predicts service time from the tracker's EWMAs with the product spec's formula."""

    version = "heuristic"
    source = "heuristic"

    def predict_median(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> np.ndarray:
        """The p50 of `predict_service` alone (a first cut that never reads the p90)."""
        if len(candidates) < COLUMNS_MIN_CANDIDATES_RICH:  # agent by agent: cheaper for a few
            return np.array(
                [heuristic_service_s(state, task.task_type, snapshot) for state in candidates],
                dtype=np.float64,
            )
        return self._median_columns(
            task.task_type, candidate_view(task.task_type, candidates, snapshot), snapshot
        )

    @staticmethod
    def _median_columns(task_type: str, view: CandidateView, snapshot: FleetSnapshot) -> np.ndarray:
        """`heuristic_service_s` for every candidate as array arithmetic (same operations, same order)."""
        base = snapshot.fleet_ewma_by_type.get(task_type) or snapshot.fleet_ewma_s or DEFAULT_SERVICE_S
        specialization = view.specialization(snapshot)
        fleet_s = snapshot.fleet_ewma_s
        if fleet_s:
            own_s = view.row(COL_EWMA_S)
            # no EWMA for this type, but a truthy overall EWMA: fleet overall / own overall
            overall = ~view.has_type & (own_s != 0.0) & ~np.isnan(own_s)
            if overall.any():
                specialization = specialization.copy()
                np.divide(fleet_s, own_s, out=specialization, where=overall)
        if not specialization.all():
            raise ZeroDivisionError("float division by zero (specialization 0)")
        load_factor = 1.0 + LOAD_SENSITIVITY * view.load_score()
        trend_factor = TREND_FACTOR_BY_CODE[view.row(COL_TREND_CODE).astype(np.intp) + 1]
        median: np.ndarray = base * load_factor * trend_factor / specialization
        return median

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction:
        """`heuristic_service_s` and its p90 for every candidate, as array arithmetic from
        `COLUMNS_MIN_CANDIDATES_RICH` candidates on."""
        if len(candidates) < COLUMNS_MIN_CANDIDATES_RICH:  # agent by agent: cheaper for a few
            p50 = self.predict_median(task, candidates, snapshot)
            p90_list = []
            for state, median in zip(candidates, p50.tolist(), strict=True):
                variance = state.ewma_variance_by_type.get(task.task_type)
                p90_list.append(median + Z90 * math.sqrt(variance) if variance else median * UNKNOWN_SPREAD)
            return ServicePrediction(p50, np.array(p90_list, dtype=np.float64))
        view = candidate_view(task.task_type, candidates, snapshot)
        median = self._median_columns(task.task_type, view, snapshot)
        variances = view.own_variance
        known = (variances != 0.0) & ~np.isnan(variances)
        if known.all():
            p90 = median + Z90 * np.sqrt(variances)
        elif known.any():
            p90 = np.where(
                known, median + Z90 * np.sqrt(np.where(known, variances, 0.0)), median * UNKNOWN_SPREAD
            )
        else:
            p90 = median * UNKNOWN_SPREAD
        return ServicePrediction(median, p90)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "feature_version": None}
