"""Predictive selection (minimum predicted completion) and the hybrid that blends strategies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agentlb.domain import AgentState, FleetSnapshot, PredictedCompletion, TaskRequest
from agentlb.predictor.base import PredictorRef, completion_times
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
    queue_aware = True

    def __init__(self, predictor: PredictorRef | None = None, seed: int | None = None) -> None:
        super().__init__(seed)
        self.predictor = predictor or PredictorRef(HeuristicPredictor())

    def predict(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> tuple[dict[str, PredictedCompletion], str]:
        predictor = self.predictor.current
        times = completion_times(task, candidates, snapshot, predictor)
        return {s.agent.id: t for s, t in zip(candidates, times, strict=True)}, predictor.version

    def decide_from(
        self, task: TaskRequest, predictions: Mapping[str, PredictedCompletion], version: str
    ) -> StrategyDecision:
        best = min(p.p50_s for p in predictions.values())
        scores = {k: (best / p.p50_s if p.p50_s > 0 else 1.0) for k, p in predictions.items()}
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
        predictions, version = self.predict(task, candidates, snapshot)
        return self.decide_from(task, predictions, version)


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
    def queue_aware(self) -> bool:  # type: ignore[override]
        """Queue-aware when the predictive component (which prices the wait) carries weight."""
        return self.weights["predictive"] > 0

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

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights = normalise_weights(dict(weights))

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        weights = self.weights
        raw: dict[str, Mapping[str, float]] = {}
        choices: dict[str, str] = {}
        predictions: Mapping[str, PredictedCompletion] = {}
        version: str | None = None
        short: dict[str, str] = {}
        if weights["weighted_round_robin"] > 0:
            wrr = self.wrr_.weights(task, candidates, snapshot)
            raw["weighted_round_robin"], choices["weighted_round_robin"] = wrr, self.argmax(wrr)
            short["weighted_round_robin"] = self.wrr_.short_name
        for component in (self.least_connection_, self.resource_aware_):
            if weights[component.name] > 0:
                decision = component.decide(task, candidates, snapshot)
                raw[component.name], choices[component.name] = decision.scores, decision.chosen
                short[component.name] = component.short_name
        if weights["predictive"] > 0:
            predictions, version = self.predictive_.predict(task, candidates, snapshot)
            decision = self.predictive_.decide_from(task, predictions, version)
            raw["predictive"], choices["predictive"] = decision.scores, decision.chosen
            short["predictive"] = self.predictive_.short_name
        normalised = {name: min_max(scores) for name, scores in raw.items()}
        combined = {
            s.agent.id: sum(weights[name] * normalised[name][s.agent.id] for name in normalised)
            for s in candidates
        }
        chosen = self.argmax(combined)
        # A strategy "chose" the winner when the winner is among its top-ranked agents.
        agreeing = [short[name] for name in normalised if normalised[name][chosen] >= 1.0 - 1e-9]
        detail = (
            f"chosen by {len(agreeing)} strategies: {', '.join(agreeing)}"
            if agreeing
            else "blended score highest, though no single strategy ranked it first"
        )
        return StrategyDecision(
            chosen,
            combined,
            min(max(combined[chosen], 0.0), 1.0),
            predictions=predictions,
            component_scores={name: {chosen: normalised[name][chosen]} for name in normalised},
            component_choices=choices,
            detail=detail,
            model_version=version,
        )
