"""What every strategy is: a pure scorer of candidate agents for one task."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from agentlb.domain import (
    COLUMNS_MIN_CANDIDATES,
    AgentState,
    ArrayMapping,
    CandidateView,
    FleetSnapshot,
    PredictedCompletion,
    TaskRequest,
)

SLOW_START_MIN_FACTOR = 0.1


@dataclass(frozen=True)
class StrategyDecision:
    """A strategy's pick, its scores for every candidate (0-1, higher is better) and why."""

    chosen: str
    scores: Mapping[str, float]
    confidence: float
    predictions: Mapping[str, PredictedCompletion] = field(default_factory=dict)
    component_scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    detail: str = ""
    model_version: str | None = None
    # Position of `chosen` among the candidates, when the strategy knows it (saves lookups).
    chosen_index: int | None = None


class Strategy(ABC):
    """A selection strategy. `__init__` stores parameters only; learned state ends in `_`.

    Strategies never do I/O; the simulator and the service call the same objects.
    """

    name: ClassVar[str]
    short_name: ClassVar[str]
    uses_predictor: ClassVar[bool] = False
    # A queue-aware strategy prices the wait behind an agent's in-flight work itself, so the
    # balancer also offers it agents whose slots are all busy.
    queue_aware: ClassVar[bool] = False
    # From this many candidates on the strategy scores through the column arrays (same results).
    columns_from: ClassVar[int] = COLUMNS_MIN_CANDIDATES

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.rng_ = random.Random(seed)

    @abstractmethod
    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        """Pick one of `candidates` (never empty) for `task`."""

    def argmax(self, scores: Mapping[str, float]) -> str:
        """The best-scoring agent; exact ties are broken by this strategy's seeded generator."""
        best = max(scores.values())
        tied = [agent_id for agent_id, s in scores.items() if s == best]
        return tied[0] if len(tied) == 1 else self.rng_.choice(tied)

    def argmax_index(self, values: np.ndarray, view: CandidateView | ArrayMapping | list[str]) -> int:
        """`argmax` over an array in candidate order: same pick, same generator draws."""
        best = values.max()
        if best != best:  # NaN: keep the exact semantics of Python's max over the mapping
            ids = view if isinstance(view, list) else view.ids
            chosen = self.argmax(dict(zip(ids, values.tolist(), strict=True)))
            return ids.index(chosen)
        tied = (values == best).nonzero()[0]
        if len(tied) == 1:
            return int(tied[0])
        return int(self.rng_.choice(tied.tolist()))


def columns_pay_off(candidates: Sequence[AgentState], minimum: int = COLUMNS_MIN_CANDIDATES) -> bool:
    """Whether to score through the column arrays rather than agent by agent."""
    return len(candidates) >= minimum


def slow_start_factor(state: AgentState, now: float, window_s: float) -> float:
    """Envoy slow start: a new agent's weight ramps linearly over the window, from 10%."""
    if window_s <= 0:
        return 1.0
    age = now - state.registered_at
    if age >= window_s:
        return 1.0
    return max(SLOW_START_MIN_FACTOR, age / window_s)


def ramping_up(view: CandidateView, now: float, window_s: float) -> bool:
    """Whether any candidate is still inside its slow-start window (its factor below 1)."""
    return window_s > 0 and not bool(now - view.registered_at.max() >= window_s)  # NaN: ramping


def slow_started(values: np.ndarray, view: CandidateView, now: float, window_s: float) -> np.ndarray:
    """`values` times each candidate's `slow_start_factor`; `values` themselves when no
    candidate is ramping up (x * 1.0 == x exactly, so the result is the same)."""
    if not ramping_up(view, now, window_s):
        return values
    age = now - view.registered_at
    factors = np.where(age >= window_s, 1.0, np.maximum(SLOW_START_MIN_FACTOR, age / window_s))
    scaled: np.ndarray = values * factors
    return scaled


def scale_to_max_array(values: np.ndarray) -> np.ndarray:
    """`scale_to_max` over an array."""
    top = values.max()
    if top <= 0:
        return np.ones(len(values))
    scaled: np.ndarray = values / top
    return scaled


def scale_to_max(values: Mapping[str, float]) -> dict[str, float]:
    top = max(values.values())
    if top <= 0:
        return {k: 1.0 for k in values}
    return {k: v / top for k, v in values.items()}


StrategyFactory = Callable[..., Strategy]
REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls
    return cls
