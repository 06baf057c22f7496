"""The product spec's heuristic predictor (no training)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentlb.domain import AgentState, FleetSnapshot, TaskRequest, WorkloadTrend
from agentlb.predictor.base import DEFAULT_SERVICE_S, ServicePrediction

TREND_FACTORS = {
    WorkloadTrend.INCREASING: 1.1,
    WorkloadTrend.STABLE: 1.0,
    WorkloadTrend.DECREASING: 0.9,
}
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

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction:
        p50 = np.empty(len(candidates))
        p90 = np.empty(len(candidates))
        for i, state in enumerate(candidates):
            median = heuristic_service_s(state, task.task_type, snapshot)
            variance = state.ewma_variance_by_type.get(task.task_type)
            p50[i] = median
            p90[i] = median + Z90 * math.sqrt(variance) if variance else median * UNKNOWN_SPREAD
        return ServicePrediction(p50, p90)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "source": self.source, "feature_version": None}
