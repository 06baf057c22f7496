"""The balancer: filters candidates, calls a strategy, falls back, ejects outliers, explains.

Filtering and ejection follow Envoy: consecutive-failure outlier detection with a cool-down
of base_time x times ejected, at most `max_ejection_percent` of the fleet ejected, and a
panic threshold below which ejection is ignored rather than overloading the few left.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from agentlb.domain import (
    COL_ACTIVE,
    COL_EJECTED_UNTIL,
    COLUMNS_MIN_CANDIDATES,
    AgentLoadMetrics,
    AgentState,
    ArrayMapping,
    CandidateStates,
    CompletedTask,
    FleetSnapshot,
    FleetStatic,
    PredictedCompletion,
    PredictionMapping,
    RankedAgent,
    SelectionResult,
    TaskOutcome,
    TaskRequest,
    candidate_view,
    fast_new,
)
from agentlb.errors import (
    AllAgentsEjectedError,
    NoEligibleAgentError,
    ReservationLostError,
    UnknownStrategyError,
)
from agentlb.features import agent_state_features, dispatch_row
from agentlb.predictor.base import PredictorRef, queueing_waits
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.settings import DEFAULT_HYBRID_WEIGHTS, Settings
from agentlb.strategies import Hybrid, LeastConnection, Strategy, StrategyDecision, build_strategies
from agentlb.tracker import AgentLoadTracker

log = logging.getLogger("agentlb.balancer")

EXPIRY_CHECK_INTERVAL_S = 5.0
# Selections tried when other replicas keep taking the chosen agents' last slots first.
RESERVATION_ATTEMPTS = 5


_HEURISTIC = HeuristicPredictor()


@dataclass(frozen=True)
class BalancerConfig:
    default_strategy: str = "hybrid"
    ejection_consecutive_failures: int = 5
    ejection_base_time_s: float = 30.0
    max_ejection_percent: float = 50.0
    panic_threshold_percent: float = 50.0
    panic_mode_enabled: bool = True
    slow_start_window_s: float = 30.0
    peak_ewma_decay_s: float = 10.0
    model_shortlist: int = 16
    hybrid_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_HYBRID_WEIGHTS))

    @classmethod
    def from_settings(cls, settings: Settings) -> BalancerConfig:
        return cls(
            default_strategy=settings.default_strategy,
            ejection_consecutive_failures=settings.ejection_consecutive_failures,
            ejection_base_time_s=settings.ejection_base_time_s,
            max_ejection_percent=settings.max_ejection_percent,
            panic_threshold_percent=settings.panic_threshold_percent,
            panic_mode_enabled=settings.panic_mode_enabled,
            slow_start_window_s=settings.slow_start_window_s,
            peak_ewma_decay_s=settings.peak_ewma_decay_s,
            model_shortlist=settings.model_shortlist,
            hybrid_weights=dict(settings.hybrid_weights),
        )


@dataclass
class BalancerStats:
    selections_by_strategy: Counter[str] = field(default_factory=Counter)
    selections_by_agent: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    ejections: int = 0
    panics: int = 0

    @property
    def total_selections(self) -> int:
        return sum(self.selections_by_strategy.values())


@dataclass(frozen=True)
class _Candidates:
    states: list[AgentState]
    notes: list[str]
    panic: bool


class Balancer:
    """Selects agents for tasks with the named strategy and keeps the tracker in step."""

    def __init__(
        self,
        tracker: AgentLoadTracker,
        predictor: PredictorRef | None = None,
        config: BalancerConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.tracker = tracker
        self.predictor = predictor or PredictorRef(HeuristicPredictor())
        self.config = config or BalancerConfig()
        self.seed = seed
        self.strategies: dict[str, Strategy] = build_strategies(
            self.predictor,
            seed,
            self.config.hybrid_weights,
            self.config.slow_start_window_s,
            self.config.peak_ewma_decay_s,
        )
        self._fallback = LeastConnection(seed)
        self._lock = threading.Lock()
        self.stats = BalancerStats()
        self._last_expiry_check = float("-inf")

    @property
    def strategy_names(self) -> list[str]:
        return list(self.strategies)

    @property
    def hybrid_weights(self) -> dict[str, float]:
        hybrid = self.strategies[Hybrid.name]
        assert isinstance(hybrid, Hybrid)
        return dict(hybrid.weights)

    def set_hybrid_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Validate, normalise and apply hybrid weights at once; returns the applied weights."""
        hybrid = self.strategies[Hybrid.name]
        assert isinstance(hybrid, Hybrid)
        with self._lock:
            hybrid.set_weights(weights)
        return dict(hybrid.weights)

    def variant(
        self, strategy: str, predictor: PredictorRef | None = None, weights: Mapping[str, float] | None = None
    ) -> Strategy:
        """A new instance of a registered strategy with another predictor and/or hybrid weights
        (an experiment arm), configured as this balancer's own."""
        built = build_strategies(
            predictor or self.predictor,
            self.seed,
            weights if weights is not None else self.hybrid_weights,
            self.config.slow_start_window_s,
            self.config.peak_ewma_decay_s,
        )
        if strategy not in built:
            raise UnknownStrategyError(strategy, built)
        return built[strategy]

    def add_strategy(self, name: str, strategy: Strategy) -> None:
        """Serve `strategy` under `name` too (e.g. an experiment arm's variant)."""
        with self._lock:
            self.strategies = {**self.strategies, name: strategy}

    def remove_strategy(self, name: str) -> None:
        with self._lock:
            self.strategies = {k: v for k, v in self.strategies.items() if k != name}

    # --- selection ------------------------------------------------------------------
    def candidates(
        self,
        task: TaskRequest,
        snapshot: FleetSnapshot,
        agent_ids: Collection[str] | None = None,
        queue_aware: bool = False,
        columns: bool | None = None,
    ) -> _Candidates:
        """Enabled agents with every required capability, not ejected, below max concurrency.

        A queue-aware strategy also gets the agents whose slots are all busy: it weighs the
        wait behind their work against a slower agent that is free now.

        `columns` (default: for large fleets) filters with the snapshot's column arrays and
        hands the strategy the candidates' positions; the result is the same either way.
        """
        if columns is None:
            columns = len(snapshot.agents) >= COLUMNS_MIN_CANDIDATES
        if columns and snapshot.columns is not None:
            fast = self._candidates_by_columns(task, snapshot, agent_ids, queue_aware)
            if fast is not None:
                return fast
        elif agent_ids is None and (static := snapshot.fleet_static) is not None:
            listed = self._candidates_by_positions(task, snapshot, static, queue_aware)
            if listed is not None:
                return listed
        required = task.required_capabilities
        allowed = set(agent_ids) if agent_ids is not None else None
        now = snapshot.now
        capable: list[AgentState] = []
        healthy: list[AgentState] = []
        free: list[AgentState] = []
        for s in snapshot.agents:
            agent = s.agent
            if not agent.enabled or not required <= agent.capabilities:
                continue
            if allowed is not None and agent.id not in allowed:
                continue
            capable.append(s)
            if now >= s.ejected_until:
                healthy.append(s)
                if s.active_tasks < agent.max_concurrency:
                    free.append(s)
        if not capable:
            offered: set[str] = set()
            for s in snapshot.agents:
                if s.agent.enabled and (allowed is None or s.agent.id in allowed):
                    offered |= s.agent.capabilities
            missing = required - offered
            if missing:
                raise NoEligibleAgentError(missing)
            raise NoEligibleAgentError(
                required,
                "no single enabled agent has all the required capabilities: "
                + (", ".join(sorted(required)) or "(no enabled agents)"),
            )
        notes: list[str] = []
        panic = False
        healthy_pct = 100.0 * len(healthy) / len(capable)
        if healthy_pct < self.config.panic_threshold_percent or not healthy:
            if self.config.panic_mode_enabled:
                panic = True
                notes.append(
                    f"panic mode: only {len(healthy)} of {len(capable)} capable agents healthy, "
                    "ejection ignored"
                )
                healthy = capable
                free = [s for s in capable if s.active_tasks < s.agent.max_concurrency]
            elif not healthy:
                raise AllAgentsEjectedError(
                    f"all {len(capable)} capable agents are ejected and panic mode is off"
                )
        if queue_aware:
            free = healthy
        elif not free:
            notes.append(f"all {len(healthy)} candidate agents at capacity, choosing among all")
            free = healthy
        return _Candidates(free, notes, panic)

    def _candidates_by_positions(
        self, task: TaskRequest, snapshot: FleetSnapshot, static: FleetStatic, queue_aware: bool
    ) -> _Candidates | None:
        """`candidates` over the cached positions of the capable agents (small fleets): the
        same lists, without testing every agent's capabilities on every selection."""
        positions = static.capable_positions(task.required_capabilities)
        if not positions:
            return None
        agents = snapshot.agents
        capable = [agents[positions[0]]] if len(positions) == 1 else list(itemgetter(*positions)(agents))
        now = snapshot.now
        if now >= snapshot.ejected_bound:
            healthy = capable
        else:
            healthy = [s for s in capable if now >= s.ejected_until]
        notes: list[str] = []
        panic = False
        if 100.0 * len(healthy) / len(capable) < self.config.panic_threshold_percent or not healthy:
            if self.config.panic_mode_enabled:
                panic = True
                notes.append(
                    f"panic mode: only {len(healthy)} of {len(capable)} capable agents healthy, "
                    "ejection ignored"
                )
                healthy = capable
            elif not healthy:
                raise AllAgentsEjectedError(
                    f"all {len(capable)} capable agents are ejected and panic mode is off"
                )
        if queue_aware:
            return _Candidates(healthy, notes, panic)
        free = [s for s in healthy if s.active_tasks < s.agent.max_concurrency]
        if not free:
            notes.append(f"all {len(healthy)} candidate agents at capacity, choosing among all")
            free = healthy
        return _Candidates(free, notes, panic)

    def _candidates_by_columns(
        self,
        task: TaskRequest,
        snapshot: FleetSnapshot,
        agent_ids: Collection[str] | None,
        queue_aware: bool,
    ) -> _Candidates | None:
        """`candidates` as mask arithmetic on the snapshot's columns; None when no agent is
        capable (the row-by-row path then builds the error message)."""
        columns = snapshot.columns
        assert columns is not None
        static = columns.static
        capable, n_capable = static.capable(task.required_capabilities)
        if agent_ids is not None:
            allowed = np.zeros(len(static.ids), dtype=bool)
            index = snapshot.index
            for agent_id in set(agent_ids):
                position = index.get(agent_id)
                if position is not None:
                    allowed[position] = True
            capable = capable & allowed
            n_capable = int(np.count_nonzero(capable))
        if not n_capable:
            return None
        values = columns.values
        if snapshot.now >= columns.ejected_bound:  # nobody is ejected now
            healthy, n_healthy = capable, n_capable
        else:
            healthy = capable & (snapshot.now >= values[COL_EJECTED_UNTIL])
            n_healthy = int(np.count_nonzero(healthy))
        notes: list[str] = []
        panic = False
        healthy_pct = 100.0 * n_healthy / n_capable
        if healthy_pct < self.config.panic_threshold_percent or not n_healthy:
            if self.config.panic_mode_enabled:
                panic = True
                notes.append(
                    f"panic mode: only {n_healthy} of {n_capable} capable agents healthy, ejection ignored"
                )
                healthy = capable
                n_healthy = n_capable
            elif not n_healthy:
                raise AllAgentsEjectedError(
                    f"all {n_capable} capable agents are ejected and panic mode is off"
                )
        if queue_aware:
            positions = healthy.nonzero()[0]
        else:
            positions = (healthy & (values[COL_ACTIVE] < static.max_concurrency)).nonzero()[0]
            if not len(positions):
                notes.append(f"all {n_healthy} candidate agents at capacity, choosing among all")
                positions = healthy.nonzero()[0]
        agents = snapshot.agents
        if len(positions) == len(agents):
            states: Sequence[AgentState] = agents
        elif len(positions) == 1:
            states = [agents[int(positions[0])]]
        else:
            states = itemgetter(*positions.tolist())(agents)
        return _Candidates(CandidateStates(states, positions, snapshot), notes, panic)

    def select(
        self,
        task: TaskRequest,
        strategy: str | None = None,
        top_k: int = 1,
        agent_ids: Collection[str] | None = None,
        record: bool = True,
    ) -> SelectionResult:
        """Choose an agent for `task`; with `record` the dispatch is counted as in flight.

        With a shared tracker (replicas) the dispatch also takes one of the agent's slots
        across replicas; when another replica took the last one first, the tracker has caught
        up with it and the selection runs again on that fresher state, which ranks the agent
        as full (RESERVATION_ATTEMPTS in all)."""
        name = strategy or self.config.default_strategy
        chosen_strategy = self.strategies.get(name)
        if chosen_strategy is None:
            raise UnknownStrategyError(name, self.strategies)
        self._expire_if_due()
        for attempt in range(1, RESERVATION_ATTEMPTS + 1):
            try:
                result, panic = self._select_once(task, name, chosen_strategy, top_k, agent_ids, record)
                break
            except ReservationLostError:
                if attempt == RESERVATION_ATTEMPTS:
                    raise
        if not (record and self.tracker.shared):  # a shared tracker's log counts them as it applies
            with self._lock:
                self.stats.selections_by_strategy[name] += 1
                self.stats.selections_by_agent[result.selected_agent.id] += 1
                self.stats.fallbacks += int(result.fallback_used)
                self.stats.panics += int(panic)
        return result

    def _select_once(
        self,
        task: TaskRequest,
        name: str,
        chosen_strategy: Strategy,
        top_k: int,
        agent_ids: Collection[str] | None,
        record: bool,
    ) -> tuple[SelectionResult, bool]:
        snapshot = self.tracker.snapshot()
        pool = self.candidates(
            task,
            snapshot,
            agent_ids,
            chosen_strategy.queue_aware,
            len(snapshot.agents) >= chosen_strategy.columns_from,
        )
        if chosen_strategy.uses_predictor:
            pool = self._shortlist_for_model(task, pool, snapshot, top_k)
        fallback_reason = ""
        try:
            with self._lock:
                decision = chosen_strategy.decide(task, pool.states, snapshot)
        except Exception as exc:  # the strategy or its predictor failed: degrade, visibly
            log.warning("strategy %s failed, falling back to least_connection: %s", name, exc)
            fallback_reason = f"{name} failed ({type(exc).__name__}: {exc}); least_connection fallback"
            with self._lock:
                decision = self._fallback.decide(task, pool.states, snapshot)
        predictor_fallback = (
            chosen_strategy.uses_predictor
            and not fallback_reason
            and self.predictor.fallback_reason is not None
        )
        if predictor_fallback:
            fallback_reason = (
                f"model unavailable ({self.predictor.fallback_reason}); heuristic predictor used"
            )
        result = self._result(task, name, decision, pool, snapshot, top_k, fallback_reason)
        if record:
            self.tracker.dispatch(
                result.selected_agent.id,
                task,
                result.predicted_completion.service_p50_s if result.predicted_completion else None,
                dispatched_at=snapshot.now,
                selection=(name, result.fallback_used, pool.panic),
            )
        return result, pool.panic

    def model_rows(self, candidates: int, top_k: int) -> int:
        """How many of `candidates` a trained model scores: the `model_shortlist` (at least
        top_k + 1), or every one when the shortlist is 0 or not smaller."""
        size = self.config.model_shortlist
        return candidates if size <= 0 else min(candidates, max(size, top_k + 1))

    def _shortlist_for_model(
        self, task: TaskRequest, pool: _Candidates, snapshot: FleetSnapshot, top_k: int
    ) -> _Candidates:
        """Bound a trained model's cost in a large fleet: it scores only the `model_shortlist`
        candidates (at least top_k + 1) with the earliest completion by the heuristic
        predictor (queueing included), the power-of-d-choices idea with a cheap first cut.
        Scoring a row costs the model's trees; the heuristic is array arithmetic."""
        states = pool.states
        if isinstance(self.predictor.current, HeuristicPredictor):
            return pool
        size = self.model_rows(len(states), top_k)
        if size >= len(states):
            return pool
        # completion_arrays(task, states, snapshot, _HEURISTIC).p50_s without the p90s
        completion = _HEURISTIC.predict_median(task, states, snapshot)
        wait = queueing_waits(candidate_view(task.task_type, states, snapshot), states, snapshot)
        if wait is not None:
            completion = wait + completion
        keep = np.sort(np.argpartition(completion, size - 1)[:size])
        kept = [states[i] for i in keep.tolist()]
        note = f"model scored the {size} of {len(states)} agents the heuristic expects to finish first"
        if isinstance(states, CandidateStates):
            kept = CandidateStates(kept, states.positions[keep], snapshot)
        return _Candidates(kept, [*pool.notes, note], pool.panic)

    def _result(
        self,
        task: TaskRequest,
        name: str,
        decision: StrategyDecision,
        pool: _Candidates,
        snapshot: FleetSnapshot,
        top_k: int,
        fallback_reason: str,
    ) -> SelectionResult:
        selected = snapshot.get(decision.chosen)
        assert selected is not None
        predictions = decision.predictions
        chosen_index = decision.chosen_index
        if chosen_index is not None and isinstance(predictions, PredictionMapping):
            prediction: PredictedCompletion | None = predictions.at(chosen_index)
        else:
            prediction = predictions.get(decision.chosen)
        scores = decision.scores
        alternatives: tuple[RankedAgent, ...] = ()
        if top_k > 0:
            if (
                chosen_index is not None
                and isinstance(scores, ArrayMapping)
                and not np.isnan(scores.values_).any()
            ):
                alternatives = self._alternatives_by_array(scores, chosen_index, predictions, snapshot, top_k)
            else:
                alternatives = self._alternatives(decision, snapshot, top_k)
        label = "Hybrid selection" if name == Hybrid.name else f"{name} selection"
        reason = f"{label} ({decision.detail})" if decision.detail else label
        if fallback_reason:
            reason += f"; {fallback_reason}"
        if pool.notes:
            reason += "; " + "; ".join(pool.notes)
        features = agent_state_features(selected, task.task_type, snapshot)
        return fast_new(
            SelectionResult,
            {
                "task_id": task.task_id,
                "selected_agent": selected.agent,
                "strategy_used": name,
                "confidence_score": min(max(decision.confidence, 0.0), 1.0),
                "load_metrics": AgentLoadMetrics.from_state(
                    selected, snapshot, prediction.p50_s if prediction else 0.0
                ),
                "selection_reason": reason,
                "fallback_used": bool(fallback_reason),
                "alternative_agents": alternatives,
                "strategy_scores": (
                    {k: v[decision.chosen] for k, v in decision.component_scores.items()}
                    if decision.component_scores
                    else {}
                ),
                "predicted_completion": prediction,
                "model_version": decision.model_version,
                "dispatch_features": dispatch_row(task, features),
                "task_type": task.task_type,
                "task_attributes": dict(task.requirements),
                "dispatched_at": snapshot.now,
                "panic": pool.panic,
            },
        )

    @staticmethod
    def _alternatives(
        decision: StrategyDecision, snapshot: FleetSnapshot, top_k: int
    ) -> tuple[RankedAgent, ...]:
        """The next `top_k` agents by score (ties: earlier candidate first), from any mapping."""
        top = heapq.nlargest(top_k + 1, decision.scores.items(), key=itemgetter(1))
        ranked = [
            state
            for agent_id, _ in top
            if agent_id != decision.chosen and (state := snapshot.get(agent_id)) is not None
        ][:top_k]
        return tuple(
            RankedAgent(
                s.agent.id,
                s.agent.name,
                decision.scores.get(s.agent.id, 0.0),
                decision.predictions[s.agent.id].p50_s if s.agent.id in decision.predictions else None,
                decision.predictions[s.agent.id].p90_s if s.agent.id in decision.predictions else None,
            )
            for s in ranked
        )

    @staticmethod
    def _alternatives_by_array(
        scores: ArrayMapping,
        chosen_index: int,
        predictions: Mapping[str, PredictedCompletion],
        snapshot: FleetSnapshot,
        top_k: int,
    ) -> tuple[RankedAgent, ...]:
        """`_alternatives` on the score array: the same agents in the same order."""
        values = scores.values_
        order: list[int] | None = None
        if top_k == 1 and len(values) > 1:
            masked = values.copy()
            masked[chosen_index] = -np.inf
            best = int(masked.argmax())  # first maximum: earlier candidates win ties, as in nlargest
            if best != chosen_index:
                order = [best]
        if order is None:
            order = [i for i in np.argsort(-values, kind="stable")[: top_k + 1].tolist() if i != chosen_index]
        ranked: list[RankedAgent] = []
        arrays = predictions if isinstance(predictions, PredictionMapping) else None
        for i in order[:top_k]:
            state = snapshot.get(scores.ids[i])
            if state is None:
                continue
            if arrays is not None:
                p50: float | None = float(arrays.p50_s[i])
                p90: float | None = float(arrays.p90_s[i])
            elif (found := predictions.get(state.agent.id)) is not None:
                p50, p90 = found.p50_s, found.p90_s
            else:
                p50 = p90 = None
            ranked.append(RankedAgent(state.agent.id, state.agent.name, float(values[i]), p50, p90))
        return tuple(ranked)

    # --- outcomes -------------------------------------------------------------------
    def report(self, outcome: TaskOutcome, finished_at: float | None = None) -> CompletedTask:
        """Learn from an outcome and eject the agent if it keeps failing (Envoy consecutive_5xx)."""
        completed = self.tracker.complete(outcome, finished_at)
        if outcome.success:
            return completed
        state = self.tracker.state(outcome.agent_id)
        if state.consecutive_failures < self.config.ejection_consecutive_failures:
            return completed
        snapshot = self.tracker.snapshot()
        now = snapshot.now
        enabled = [s for s in snapshot.agents if s.agent.enabled]
        ejected = sum(1 for s in enabled if s.is_ejected(now))
        if enabled and 100.0 * (ejected + 1) / len(enabled) > self.config.max_ejection_percent:
            log.info("not ejecting %s: max_ejection_percent reached", outcome.agent_id)
            return completed
        until = now + self.config.ejection_base_time_s * (state.times_ejected + 1)
        self.tracker.eject(outcome.agent_id, until)
        if not self.tracker.shared:
            with self._lock:
                self.stats.ejections += 1
        log.warning(
            "ejected agent %s until %.1f after %d consecutive failures",
            outcome.agent_id,
            until,
            state.consecutive_failures,
        )
        return CompletedTask(
            completed.task_id,
            completed.agent_id,
            completed.task_type,
            completed.dispatched_at,
            completed.predicted_service_s,
            ejected=True,
        )

    def _expire_if_due(self) -> None:
        now = self.tracker.clock()
        if now - self._last_expiry_check >= EXPIRY_CHECK_INTERVAL_S:
            self._last_expiry_check = now
            expired = self.tracker.expire_stale(now)
            if expired:
                log.info("in-flight expiry: %d tasks stopped counting", len(expired))

    def describe(self) -> dict[str, Any]:
        return {
            "default_strategy": self.config.default_strategy,
            "strategies": self.strategy_names,
            "hybrid_weights": self.hybrid_weights,
        }


def healthy_counts(snapshot: FleetSnapshot) -> tuple[int, int]:
    """(enabled agents, of which ejected now)."""
    enabled = [s for s in snapshot.agents if s.agent.enabled]
    return len(enabled), sum(1 for s in enabled if s.is_ejected(snapshot.now))
