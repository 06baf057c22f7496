"""Strategies by name. Each scores candidate agents for a task and never does I/O."""

from __future__ import annotations

from collections.abc import Mapping

from agentlb.predictor.base import PredictorRef
from agentlb.strategies.base import REGISTRY, Strategy, StrategyDecision, slow_start_factor
from agentlb.strategies.classic import (
    LeastConnection,
    PeakEwma,
    PowerOfTwo,
    RandomChoice,
    ResourceAware,
    RoundRobin,
    WeightedRoundRobin,
)
from agentlb.strategies.predictive import Hybrid, Predictive

STRATEGY_NAMES: tuple[str, ...] = tuple(REGISTRY)


def build_strategies(
    predictor: PredictorRef,
    seed: int | None = None,
    hybrid_weights: Mapping[str, float] | None = None,
    slow_start_window_s: float = 30.0,
    peak_ewma_decay_s: float = 10.0,
) -> dict[str, Strategy]:
    """One instance of every registered strategy, each with its own seeded generator."""
    return {
        WeightedRoundRobin.name: WeightedRoundRobin(seed, slow_start_window_s),
        LeastConnection.name: LeastConnection(seed),
        Predictive.name: Predictive(predictor, seed),
        ResourceAware.name: ResourceAware(seed),
        Hybrid.name: Hybrid(predictor, hybrid_weights, seed, slow_start_window_s),
        RandomChoice.name: RandomChoice(seed),
        RoundRobin.name: RoundRobin(seed),
        PowerOfTwo.name: PowerOfTwo(seed, slow_start_window_s=slow_start_window_s),
        PeakEwma.name: PeakEwma(seed, peak_ewma_decay_s),
    }


__all__ = [
    "REGISTRY",
    "STRATEGY_NAMES",
    "Hybrid",
    "LeastConnection",
    "PeakEwma",
    "PowerOfTwo",
    "Predictive",
    "RandomChoice",
    "ResourceAware",
    "RoundRobin",
    "Strategy",
    "StrategyDecision",
    "WeightedRoundRobin",
    "build_strategies",
    "slow_start_factor",
]
