"""The classical strategies of the product spec and the industry baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from agentlb.domain import AgentState, FleetSnapshot, TaskRequest
from agentlb.strategies.base import (
    Strategy,
    StrategyDecision,
    register,
    scale_to_max,
    slow_start_factor,
)

MIN_WEIGHT = 0.1
MIN_SUCCESS_RATE = 0.1
NO_HISTORY_PENALTY = 1e9


def wrr_weight(state: AgentState, task: TaskRequest, snapshot: FleetSnapshot, slow_start_s: float) -> float:
    """weight = success_rate x capacity_score x specialization_factor, floored at 0.1
    (product spec), times the operator's static weight and the slow-start ramp."""
    specialization = snapshot.specialization(state, task.task_type)
    dynamic = max(state.success_rate * state.capacity_score * specialization, MIN_WEIGHT)
    return dynamic * state.agent.weight * slow_start_factor(state, snapshot.now, slow_start_s)


@register
class WeightedRoundRobin(Strategy):
    """Smooth weighted round robin (nginx): picks follow the weights exactly and
    deterministically, interleaved rather than in bursts."""

    name = "weighted_round_robin"
    short_name = "wrr"

    def __init__(self, seed: int | None = None, slow_start_window_s: float = 30.0) -> None:
        super().__init__(seed)
        self.slow_start_window_s = slow_start_window_s
        self.current_: dict[str, float] = {}

    def weights(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> dict[str, float]:
        return {s.agent.id: wrr_weight(s, task, snapshot, self.slow_start_window_s) for s in candidates}

    def pick(self, weights: Mapping[str, float]) -> str:
        total = 0.0
        best_id, best_current = "", -math.inf
        for agent_id, weight in weights.items():
            current = self.current_.get(agent_id, 0.0) + weight
            self.current_[agent_id] = current
            total += weight
            if current > best_current:
                best_id, best_current = agent_id, current
        self.current_[best_id] -= total
        return best_id

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        weights = self.weights(task, candidates, snapshot)
        chosen = self.pick(weights)
        scores = scale_to_max(weights)
        return StrategyDecision(chosen, scores, scores[chosen], detail=f"weight {weights[chosen]:.3f}")


def adjusted_load(state: AgentState) -> float:
    """adjusted_load = active_tasks / max(success_rate, 0.1) (product spec)."""
    return state.active_tasks / max(state.success_rate, MIN_SUCCESS_RATE)


@register
class LeastConnection(Strategy):
    """Fewest active tasks, adjusted for success rate; confidence = 1 / (1 + adjusted_load)."""

    name = "least_connection"
    short_name = "lc"

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        scores = {s.agent.id: 1.0 / (1.0 + adjusted_load(s)) for s in candidates}
        chosen = self.argmax(scores)
        return StrategyDecision(
            chosen, scores, scores[chosen], detail=f"adjusted load {1 / scores[chosen] - 1:.2f}"
        )


def resource_score(state: AgentState, performance_factor: float) -> float:
    """cpu_availability x 0.3 + memory_availability x 0.3 + queue_factor x 0.2
    + performance_factor x 0.2 (product spec)."""
    cpu_availability = 1.0 - min(state.cpu_usage / 100.0, 1.0)
    memory_availability = 1.0 - min(state.memory_usage / 100.0, 1.0)
    queue = max(state.active_tasks, state.queue_length)
    queue_factor = 1.0 - min(queue / state.agent.max_concurrency, 1.0)
    return cpu_availability * 0.3 + memory_availability * 0.3 + queue_factor * 0.2 + performance_factor * 0.2


@register
class ResourceAware(Strategy):
    """Most free CPU, memory and queue room, with the agent's performance.

    performance_factor = success_rate x (specialization / best specialization among candidates).
    """

    name = "resource_aware"
    short_name = "ra"

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        specialization = {s.agent.id: snapshot.specialization(s, task.task_type) for s in candidates}
        best = max(specialization.values())
        scores = {
            s.agent.id: resource_score(s, s.success_rate * specialization[s.agent.id] / best)
            for s in candidates
        }
        chosen = self.argmax(scores)
        return StrategyDecision(chosen, scores, scores[chosen], detail=f"resource score {scores[chosen]:.2f}")


@register
class RandomChoice(Strategy):
    name = "random"
    short_name = "rand"

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        chosen = self.rng_.choice(candidates).agent.id
        scores = {s.agent.id: 1.0 for s in candidates}
        return StrategyDecision(chosen, scores, 1.0 / len(candidates), detail="uniform random")


@register
class RoundRobin(Strategy):
    """Plain round robin over agent ids in sorted order, stable when the candidate set changes."""

    name = "round_robin"
    short_name = "rr"

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self.last_: str | None = None

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        ids = sorted(s.agent.id for s in candidates)
        chosen = next((i for i in ids if self.last_ is not None and i > self.last_), ids[0])
        self.last_ = chosen
        scores = {i: 1.0 for i in ids}
        return StrategyDecision(chosen, scores, 1.0 / len(ids), detail="next in turn")


class _TwoChoices(Strategy):
    """Sample two distinct candidates with this strategy's generator; keep the better."""

    def two(self, candidates: Sequence[AgentState]) -> list[AgentState]:
        if len(candidates) <= 2:
            return list(candidates)
        return self.rng_.sample(list(candidates), 2)


@register
class PowerOfTwo(_TwoChoices):
    """Envoy's least_request: two random candidates, the one with fewer active requests wins;
    with unequal weights, the higher weight / (active + 1) ^ active_request_bias."""

    name = "power_of_two"
    short_name = "p2c"

    def __init__(
        self, seed: int | None = None, active_request_bias: float = 1.0, slow_start_window_s: float = 30.0
    ) -> None:
        super().__init__(seed)
        self.active_request_bias = active_request_bias
        self.slow_start_window_s = slow_start_window_s

    def score(self, state: AgentState, now: float) -> float:
        weight = state.agent.weight * slow_start_factor(state, now, self.slow_start_window_s)
        return float(weight / (state.active_tasks + 1) ** self.active_request_bias)

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        raw = {s.agent.id: self.score(s, snapshot.now) for s in candidates}
        pair = self.two(candidates)
        chosen = self.argmax({s.agent.id: raw[s.agent.id] for s in pair})
        scores = scale_to_max(raw)
        return StrategyDecision(chosen, scores, scores[chosen], detail=f"better of {len(pair)} sampled")


@register
class PeakEwma(_TwoChoices):
    """Finagle/Linkerd peak EWMA with two random choices: cost = ewma_latency x (in_flight + 1).

    The latency EWMA jumps to a higher sample at once and decays with `decay_s` (10 s, as in
    Finagle); an agent with no latency yet costs nothing while idle (so it gets explored) and a
    large penalty once it has work outstanding.
    """

    name = "peak_ewma"
    short_name = "pewma"

    def __init__(self, seed: int | None = None, decay_s: float = 10.0) -> None:
        super().__init__(seed)
        self.decay_s = decay_s

    def cost(self, state: AgentState, now: float) -> float:
        elapsed = max(now - state.peak_ewma_stamp, 0.0)
        latency = state.peak_ewma_s * math.exp(-elapsed / self.decay_s)
        if latency == 0.0 and state.active_tasks > 0:
            return NO_HISTORY_PENALTY
        return latency * (state.active_tasks + 1)

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        costs = {s.agent.id: self.cost(s, snapshot.now) for s in candidates}
        pair = self.two(candidates)
        chosen = self.argmax({s.agent.id: -costs[s.agent.id] for s in pair})
        low = min(costs.values())
        scores = {k: (1.0 if c <= 0 else (low / c if low > 0 else 0.0)) for k, c in costs.items()}
        return StrategyDecision(chosen, scores, scores[chosen], detail=f"cost {costs[chosen]:.3f}")
