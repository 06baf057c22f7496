"""The classical strategies of the product spec and the industry baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from agentlb.domain import (
    COL_CPU,
    COL_LC_SCORE,
    COL_MEMORY,
    COL_PEAK_EWMA_S,
    COL_PEAK_STAMP,
    COL_QUEUE,
    COLUMNS_MIN_CANDIDATES_RICH,
    AgentState,
    ArrayMapping,
    CandidateView,
    FleetSnapshot,
    TaskRequest,
    candidate_view,
)
from agentlb.strategies.base import (
    Strategy,
    StrategyDecision,
    columns_pay_off,
    register,
    scale_to_max,
    scale_to_max_array,
    slow_start_factor,
    slow_started,
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
    columns_from = COLUMNS_MIN_CANDIDATES_RICH

    def __init__(self, seed: int | None = None, slow_start_window_s: float = 30.0) -> None:
        super().__init__(seed)
        self.slow_start_window_s = slow_start_window_s
        self.current_: dict[str, float] = {}

    def weights(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> dict[str, float]:
        if not columns_pay_off(candidates, self.columns_from):
            slow_start_s = self.slow_start_window_s
            return {s.agent.id: wrr_weight(s, task, snapshot, slow_start_s) for s in candidates}
        view = candidate_view(task.task_type, candidates, snapshot)
        return dict(zip(view.ids, self.weights_array(view, snapshot).tolist(), strict=True))

    def weights_array(self, view: CandidateView, snapshot: FleetSnapshot) -> np.ndarray:
        """`wrr_weight` for every candidate, with the same arithmetic in the same order."""
        capacity = 1.0 - view.load_score()
        dynamic = np.maximum(view.success_rate * capacity * view.specialization(snapshot), MIN_WEIGHT)
        # x * 1.0 == x exactly: the static weights and the slow-start factors are applied only
        # where they can differ from 1 (most fleets weigh every agent 1 and none is ramping up)
        weights = dynamic if view.columns.static.unit_weights else dynamic * view.weight
        return slow_started(weights, view, snapshot.now, self.slow_start_window_s)

    def pick(self, weights: Mapping[str, float]) -> str:
        return self.pick_lists(list(weights), list(weights.values()))

    def pick_lists(self, ids: list[str], weights: list[float]) -> str:
        total = 0.0
        best_id, best_current = "", -math.inf
        current_ = self.current_
        for agent_id, weight in zip(ids, weights, strict=True):
            current = current_.get(agent_id, 0.0) + weight
            current_[agent_id] = current
            total += weight
            if current > best_current:
                best_id, best_current = agent_id, current
        current_[best_id] -= total
        return best_id

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        if not columns_pay_off(candidates, self.columns_from):
            slow_start_s = self.slow_start_window_s
            by_id = {s.agent.id: wrr_weight(s, task, snapshot, slow_start_s) for s in candidates}
            chosen = self.pick(by_id)
            scaled = scale_to_max(by_id)
            return StrategyDecision(chosen, scaled, scaled[chosen], detail=f"weight {by_id[chosen]:.3f}")
        view = candidate_view(task.task_type, candidates, snapshot)
        weights = self.weights_array(view, snapshot)
        weight_list = weights.tolist()
        chosen = self.pick_lists(view.ids, weight_list)
        i = view.ids.index(chosen)
        scores = scale_to_max_array(weights)
        return StrategyDecision(
            chosen,
            ArrayMapping(view.ids, scores),
            float(scores[i]),
            detail=f"weight {weight_list[i]:.3f}",
            chosen_index=i,
        )


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
        if columns_pay_off(candidates):
            return self.decide_view(candidate_view(task.task_type, candidates, snapshot))
        floor = MIN_SUCCESS_RATE
        scores = {
            s.agent.id: 1.0 / (1.0 + s.active_tasks / (floor if floor > (sr := s.success_rate) else sr))
            for s in candidates
        }
        chosen = self.argmax(scores)
        best = scores[chosen]
        return StrategyDecision(chosen, scores, best, detail=f"adjusted load {1 / best - 1:.2f}")

    def decide_view(self, view: CandidateView) -> StrategyDecision:
        scores = view.row(COL_LC_SCORE)  # 1 / (1 + adjusted_load), computed per agent by the tracker
        i = self.argmax_index(scores, view)
        best = float(scores[i])
        return StrategyDecision(
            view.id_at(i),
            ArrayMapping(view, scores),
            best,
            detail=f"adjusted load {1 / best - 1:.2f}",
            chosen_index=i,
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
    columns_from = COLUMNS_MIN_CANDIDATES_RICH

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        if columns_pay_off(candidates, self.columns_from):
            return self.decide_view(candidate_view(task.task_type, candidates, snapshot), snapshot)
        specialization = {s.agent.id: snapshot.specialization(s, task.task_type) for s in candidates}
        best = max(specialization.values())
        by_id = {
            s.agent.id: resource_score(s, s.success_rate * specialization[s.agent.id] / best)
            for s in candidates
        }
        chosen = self.argmax(by_id)
        return StrategyDecision(chosen, by_id, by_id[chosen], detail=f"resource score {by_id[chosen]:.2f}")

    def decide_view(self, view: CandidateView, snapshot: FleetSnapshot) -> StrategyDecision:
        """`resource_score` for every candidate, with the same arithmetic in the same order."""
        specialization = view.specialization(snapshot)
        performance = view.success_rate * specialization / specialization.max()
        cpu_availability = 1.0 - np.minimum(view.row(COL_CPU) / 100.0, 1.0)
        memory_availability = 1.0 - np.minimum(view.row(COL_MEMORY) / 100.0, 1.0)
        queue = np.maximum(view.active, view.row(COL_QUEUE))
        queue_factor = 1.0 - np.minimum(queue / view.max_concurrency, 1.0)
        scores = cpu_availability * 0.3 + memory_availability * 0.3 + queue_factor * 0.2 + performance * 0.2
        i = self.argmax_index(scores, view)
        best = float(scores[i])
        return StrategyDecision(
            view.id_at(i),
            ArrayMapping(view, scores),
            best,
            detail=f"resource score {best:.2f}",
            chosen_index=i,
        )


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

    def two_positions(self, n: int) -> list[int]:
        """`two` by position: `random.sample` draws depend only on the population's length."""
        if n <= 2:
            return list(range(n))
        return self.rng_.sample(range(n), 2)


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
        if not columns_pay_off(candidates):
            by_id = {s.agent.id: self.score(s, snapshot.now) for s in candidates}
            sampled = self.two(candidates)
            chosen = self.argmax({s.agent.id: by_id[s.agent.id] for s in sampled})
            scaled = scale_to_max(by_id)
            return StrategyDecision(
                chosen, scaled, scaled[chosen], detail=f"better of {len(sampled)} sampled"
            )
        view = candidate_view(task.task_type, candidates, snapshot)
        weight = slow_started(view.weight, view, snapshot.now, self.slow_start_window_s)
        raw = weight / (view.active + 1.0) ** self.active_request_bias
        pair = self.two_positions(view.n)
        chosen = self.argmax({view.id_at(i): float(raw[i]) for i in pair})
        i = pair[0] if view.id_at(pair[0]) == chosen else pair[-1]
        scores = scale_to_max_array(raw)
        return StrategyDecision(
            chosen,
            ArrayMapping(view, scores),
            float(scores[i]),
            detail=f"better of {len(pair)} sampled",
            chosen_index=i,
        )


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

    def costs(self, view: CandidateView, now: float) -> list[float]:
        """`cost` for every candidate (math.exp per agent, so values match `cost` exactly)."""
        decay_s = self.decay_s
        exp = math.exp
        result = []
        for peak, stamp, active in zip(
            view.row(COL_PEAK_EWMA_S).tolist(),
            view.row(COL_PEAK_STAMP).tolist(),
            view.active.tolist(),
            strict=True,
        ):
            latency = peak * exp(-max(now - stamp, 0.0) / decay_s)
            if latency == 0.0 and active > 0:
                result.append(NO_HISTORY_PENALTY)
            else:
                result.append(latency * (active + 1))
        return result

    def decide(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> StrategyDecision:
        if not columns_pay_off(candidates):
            by_id = {s.agent.id: self.cost(s, snapshot.now) for s in candidates}
            sampled = self.two(candidates)
            chosen = self.argmax({s.agent.id: -by_id[s.agent.id] for s in sampled})
            lowest = min(by_id.values())
            scaled = {k: (1.0 if c <= 0 else (lowest / c if lowest > 0 else 0.0)) for k, c in by_id.items()}
            return StrategyDecision(chosen, scaled, scaled[chosen], detail=f"cost {by_id[chosen]:.3f}")
        view = candidate_view(task.task_type, candidates, snapshot)
        costs = self.costs(view, snapshot.now)
        pair = self.two_positions(view.n)
        chosen = self.argmax({view.id_at(i): -costs[i] for i in pair})
        low = min(costs)
        scores = [(1.0 if c <= 0 else (low / c if low > 0 else 0.0)) for c in costs]
        i = pair[0] if view.id_at(pair[0]) == chosen else pair[-1]
        return StrategyDecision(
            chosen,
            ArrayMapping(view, np.array(scores)),
            scores[i],
            detail=f"cost {costs[i]:.3f}",
            chosen_index=i,
        )
