"""Completion-time predictors: the protocol, the product spec's heuristic, and (in
`agentlb.predictor.model`) the trained model loaded from a bundle or the MLflow registry."""

from agentlb.predictor.base import (
    Predictor,
    PredictorRef,
    ServicePrediction,
    completion_times,
    expected_wait_s,
)
from agentlb.predictor.heuristic import HeuristicPredictor

__all__ = [
    "HeuristicPredictor",
    "Predictor",
    "PredictorRef",
    "ServicePrediction",
    "completion_times",
    "expected_wait_s",
]
