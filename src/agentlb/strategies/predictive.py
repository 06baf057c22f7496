"""Predictive selection (minimum predicted completion) and the hybrid that blends strategies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from agentlb.domain import (
    COLUMNS_MIN_CANDIDATES_MODEL,
    COLUMNS_MIN_CANDIDATES_RICH,
    AgentState,
    ArrayMapping,
    FleetSnapshot,
    PredictedCompletion,
    PredictionMapping,
    TaskRequest,
    candidate_view,
)
from agentlb.predictor.base import PredictorRef, completion_arrays, completion_times
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.settings import DEFAULT_HYBRID_WEIGHTS, normalise_weights
from agentlb.strategies.base import Strategy, StrategyDecision, register
from agentlb.strategies.classic import LeastConnection, ResourceAware, WeightedRoundRobin


def spread_confidence(p50_s: float, p90_s: float) -> float:
    """confidence = 1 / (1 + spread / predicted), the product spec's form, with the p50-p90
    spread standing for the time variance."""
    if p50_s <= 0:
        return 0.0
    return 1.0 / (1.0 + max(p90_s - p50_s, 0.0) / p50_s)


@register
class Predictive(Strategy):
    """The agent with the earliest predicted completion (wait behind in-flight work + service).

    With a deadline, agents whose p90 completion meets it are preferred; among them the
    earliest p50 wins.
    """

    name = "predictive"
    short_name = "ml"
    uses_predictor = True

    @property
    def columns_from(self) -> int:  # type: ignore[override]
        """Score through the column arrays from this many candidates on (same results): sooner
        with a trained model, whose batch costs the same on either path."""
        if isinstance(self.predictor.current, HeuristicPredictor):
            return COLUMNS_MIN_CANDIDATES_RICH
        return COLUMNS_MIN_CANDIDATES_MODEL

    @property
    def queue_aware(self) -> bool:  # type: ignore[override]
        """Weigh queueing at a busy agent against a free one only with a trained model: the
        heuristic's per-type EWMAs ignore task size and are too noisy to trade waiting for
        speed (on the benchmark it made homogeneous fleets 10% slower than power_of_two)."""
        return not isinstance(self.predictor.current, HeuristicPredictor)

    def __init__(self, predictor: PredictorRef | None = None, seed: int | None = None) -> None:
        super().__init__(seed)
        self.predictor = predictor or PredictorRef(HeuristicPredictor())

    def predict(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> tuple[PredictionMapping, str]:
        predictor = self.predictor.current
        return completion_arrays(task, candidates, snapshot, predictor), predictor.version

    @staticmethod
    def scores_array(predictions: PredictionMapping) -> np.ndarray | None:
        """best p50 / each p50 (1 where p50 is not positive); None when a p50 is NaN."""
        p50 = predictions.p50_s
        best = p50.min()
        if best != best:
            return None
        scores = np.ones(len(p50))
        np.divide(best, p50, out=scores, where=p50 > 0)
        return scores

    @staticmethod
    def scores_from(predictions: Mapping[str, PredictedCompletion]) -> dict[str, float]:
        """`scores_array` over a mapping, with Python's min (NaN kept as it falls)."""
        best = min(p.p50_s for p in predictions.values())
        return {k: (best / p.p50_s if p.p50_s > 0 else 1.0) for k, p in predictions.items()}

    def decide_arrays(
        self, task: TaskRequest, predictions: PredictionMapping, version: str
    ) -> StrategyDecision:
        """`decide_from` over arrays: same scores, same pick, same generator draws."""
        scores = self.scores_array(predictions)
        if scores is None:  # NaN: the mapping path keeps Python's exact semantics
            return self.decide_from(task, dict(predictions), version)
        ids = predictions.scores
        n = len(scores)
        detail = "predicted completion {p50:.2f} s"
        pool = None
        if task.deadline_s is not None:
            meeting = np.flatnonzero(predictions.p90_s <= task.deadline_s)
            if meeting.size:
                if meeting.size < n:
                    pool = meeting
                detail += (
                    f"; meets the {task.deadline_s:g} s deadline at p90 ({meeting.size} of {n} agents do)"
                )
            else:
                detail += f"; no agent meets the {task.deadline_s:g} s deadline at p90, earliest chosen"
        if pool is None:
            i = self.argmax_index(scores, ids)
        else:
            pool_ids = [ids.id_at(j) for j in pool.tolist()]
            i = int(pool[self.argmax_index(scores[pool], pool_ids)])
        p = predictions.at(i)
        return StrategyDecision(
            ids.id_at(i),
            ArrayMapping(ids.source, scores),
            spread_confidence(p.p50_s, p.p90_s),
            predictions=predictions,
            detail=detail.format(p50=p.p50_s),
            model_version=version,
            chosen_index=i,
        )

    def decide_from(
        self, task: TaskRequest, predictions: Mapping[str, PredictedCompletion], version: str
    ) -> StrategyDecision:
        if isinstance(predictions, PredictionMapping):
            return self.decide_arrays(task, predictions, version)
        scores = self.scores_from(predictions)
        pool = scores
        detail = "predicted completion {p50:.2f} s"
        if task.deadline_s is not None:
            meeting = {k: s for k, s in scores.items() if predictions[k].p90_s <= task.deadline_s}
            if meeting:
                pool = meeting
                detail += (
                    f"; meets the {task.deadline_s:g} s deadline at p90"
                    f" ({len(meeting)} of {len(scores)} agents do)"
                )
            else:
                detail += f"; no agent meets the {task.deadline_s:g} s deadline at p90, earliest chosen"
        chosen = self.argmax(pool)
        p = predictions[chosen]
        return StrategyDecision(
            chosen,
            scores,
            spread_confidence(p.p50_s, p.p90_s),
            predictions=predictions,
            detail=detail.format(p50=p.p50_s),
            model_version=version,
        )

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        if len(candidates) < self.columns_from:
            predictor = self.predictor.current
            times = completion_times(task, candidates, snapshot, predictor)
            by_id = {s.agent.id: t for s, t in zip(candidates, times, strict=True)}
            return self.decide_from(task, by_id, predictor.version)
        predictions, version = self.predict(task, candidates, snapshot)
        return self.decide_arrays(task, predictions, version)


def min_max_array(scores: np.ndarray) -> np.ndarray:
    """`min_max` over an array."""
    low, high = scores.min(), scores.max()
    if high - low <= 1e-12:
        return np.ones(len(scores))
    scaled: np.ndarray = (scores - low) / (high - low)
    return scaled


def min_max(scores: Mapping[str, float]) -> dict[str, float]:
    """Rescale to 0-1 across candidates so strategies on different scales combine fairly;
    a strategy that sees no difference gives every candidate 1."""
    low, high = min(scores.values()), max(scores.values())
    if high - low <= 1e-12:
        return {k: 1.0 for k in scores}
    return {k: (v - low) / (high - low) for k, v in scores.items()}


@register
class Hybrid(Strategy):
    """Weighted blend of weighted round robin, least connection, predictive and resource aware.

    Each component's scores are min-max normalised over the candidates, then combined with the
    configured weights (normalised to sum 1); the confidence is the winner's blended score.
    """

    name = "hybrid"
    short_name = "hybrid"
    uses_predictor = True

    @property
    def columns_from(self) -> int:  # type: ignore[override]
        """As the predictive component's (the predictor decides where the arrays pay off)."""
        return self.predictive_.columns_from

    @property
    def queue_aware(self) -> bool:  # type: ignore[override]
        """Queue-aware when the predictive component (which prices the wait) carries weight
        and is queue-aware itself."""
        return self.weights["predictive"] > 0 and self.predictive_.queue_aware

    def __init__(
        self,
        predictor: PredictorRef | None = None,
        weights: Mapping[str, float] | None = None,
        seed: int | None = None,
        slow_start_window_s: float = 30.0,
    ) -> None:
        super().__init__(seed)
        self.weights = normalise_weights(dict(weights or DEFAULT_HYBRID_WEIGHTS))
        self.wrr_ = WeightedRoundRobin(seed, slow_start_window_s)
        self.least_connection_ = LeastConnection(seed)
        self.predictive_ = Predictive(predictor, seed)
        self.resource_aware_ = ResourceAware(seed)

    SHORT_NAMES: ClassVar[dict[str, str]] = {
        WeightedRoundRobin.name: WeightedRoundRobin.short_name,
        LeastConnection.name: LeastConnection.short_name,
        ResourceAware.name: ResourceAware.short_name,
        Predictive.name: Predictive.short_name,
    }

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights = normalise_weights(dict(weights))

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        """Components computed from one shared column view; each draws ties from its own
        generator in the same order as before, so seeds reproduce."""
        if len(candidates) < self.columns_from:
            return self.decide_by_agent(task, candidates, snapshot)
        weights = self.weights
        view = candidate_view(task.task_type, candidates, snapshot)
        raw: dict[str, np.ndarray] = {}
        predictions: Mapping[str, PredictedCompletion] = {}
        version: str | None = None
        if weights["weighted_round_robin"] > 0:
            raw["weighted_round_robin"] = self.wrr_.weights_array(view, snapshot)
        if weights[self.least_connection_.name] > 0:
            raw[self.least_connection_.name] = self._scores(self.least_connection_.decide_view(view))
        if weights[self.resource_aware_.name] > 0:
            raw[self.resource_aware_.name] = self._scores(self.resource_aware_.decide_view(view, snapshot))
        if weights["predictive"] > 0:
            arrays, version = self.predictive_.predict(task, candidates, snapshot)
            predictions = arrays
            scores = self.predictive_.scores_array(arrays)
            if scores is None:
                raise ValueError(f"predictor {version} returned a NaN completion time")
            raw["predictive"] = scores
        normalised = {name: min_max_array(scores) for name, scores in raw.items()}
        combined = np.zeros(view.n)
        for name, scores in normalised.items():
            combined = combined + weights[name] * scores
        i = self.argmax_index(combined, view)
        chosen = view.id_at(i)
        # A strategy "chose" the winner when the winner is among its top-ranked agents.
        agreeing = [self.SHORT_NAMES[name] for name in normalised if normalised[name][i] >= 1.0 - 1e-9]
        best = float(combined[i])
        return StrategyDecision(
            chosen,
            ArrayMapping(view, combined),
            min(max(best, 0.0), 1.0),
            predictions=predictions,
            component_scores={name: {chosen: float(normalised[name][i])} for name in normalised},
            detail=self._detail(agreeing),
            model_version=version,
            chosen_index=i,
        )

    def decide_by_agent(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        """`decide` agent by agent with mappings (cheaper for a few candidates; same results)."""
        weights = self.weights
        raw: dict[str, Mapping[str, float]] = {}
        predictions: Mapping[str, PredictedCompletion] = {}
        version: str | None = None
        if weights["weighted_round_robin"] > 0:
            raw["weighted_round_robin"] = self.wrr_.weights(task, candidates, snapshot)
        for component in (self.least_connection_, self.resource_aware_):
            if weights[component.name] > 0:
                raw[component.name] = component.decide(task, candidates, snapshot).scores
        if weights["predictive"] > 0:
            predictor = self.predictive_.predictor.current
            times = completion_times(task, candidates, snapshot, predictor)
            predictions = {s.agent.id: t for s, t in zip(candidates, times, strict=True)}
            version = predictor.version
            raw["predictive"] = self.predictive_.scores_from(predictions)
        normalised = {name: min_max(scores) for name, scores in raw.items()}
        combined = {
            s.agent.id: sum(weights[name] * normalised[name][s.agent.id] for name in normalised)
            for s in candidates
        }
        chosen = self.argmax(combined)
        # A strategy "chose" the winner when the winner is among its top-ranked agents.
        agreeing = [self.SHORT_NAMES[name] for name in normalised if normalised[name][chosen] >= 1.0 - 1e-9]
        return StrategyDecision(
            chosen,
            combined,
            min(max(combined[chosen], 0.0), 1.0),
            predictions=predictions,
            component_scores={name: {chosen: normalised[name][chosen]} for name in normalised},
            detail=self._detail(agreeing),
            model_version=version,
        )

    @staticmethod
    def _scores(decision: StrategyDecision) -> np.ndarray:
        scores = decision.scores
        assert isinstance(scores, ArrayMapping)
        return scores.values_

    @staticmethod
    def _detail(agreeing: list[str]) -> str:
        if not agreeing:
            return "blended score highest, though no single strategy ranked it first"
        return f"chosen by {len(agreeing)} strategies: {', '.join(agreeing)}"
