"""Ejection, panic mode, slow start, fallback and thread safety, as a user would see them."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from core_helpers import FakeClock, make_agent

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import AgentState, FleetSnapshot, TaskOutcome, TaskRequest
from agentlb.errors import AllAgentsEjectedError
from agentlb.predictor.base import PredictorRef, ServicePrediction
from agentlb.tracker import AgentLoadTracker


def _fail(balancer: Balancer, agent_id: str, times: int, start: int = 0) -> bool:
    ejected = False
    for i in range(times):
        task = TaskRequest(task_type="t", task_id=f"{agent_id}-f{start + i}")
        balancer.tracker.dispatch(agent_id, task)
        ejected = balancer.report(TaskOutcome(agent_id, 1.0, False, task.task_id, "t")).ejected
    return ejected


def test_consecutive_failures_eject_then_cool_down(
    fleet_factory: Callable[..., Balancer], clock: FakeClock
) -> None:
    balancer = fleet_factory(4)
    assert not _fail(balancer, "a0", 4)
    assert _fail(balancer, "a0", 1, start=4)  # the 5th consecutive failure ejects
    picks = {balancer.select(TaskRequest(task_type="t"), "round_robin").selected_agent.id for _ in range(12)}
    assert "a0" not in picks
    clock.advance(30.1)  # base ejection time x 1
    picks = {balancer.select(TaskRequest(task_type="t"), "round_robin").selected_agent.id for _ in range(12)}
    assert "a0" in picks
    assert _fail(balancer, "a0", 5, start=10)  # ejected a second time: 2 x base
    assert balancer.tracker.state("a0").ejected_until == pytest.approx(clock.now + 60.0)
    assert balancer.stats.ejections == 2


def test_success_resets_the_failure_streak(fleet_factory: Callable[..., Balancer]) -> None:
    balancer = fleet_factory(4)
    _fail(balancer, "a1", 4)
    balancer.tracker.dispatch("a1", TaskRequest(task_type="t", task_id="ok"))
    balancer.report(TaskOutcome("a1", 1.0, True, "ok", "t"))
    assert not _fail(balancer, "a1", 4, start=10)


def test_max_ejection_percent_caps_ejections(fleet_factory: Callable[..., Balancer]) -> None:
    balancer = fleet_factory(4, BalancerConfig(slow_start_window_s=0, max_ejection_percent=50))
    assert _fail(balancer, "a0", 5)
    assert _fail(balancer, "a1", 5)
    assert not _fail(balancer, "a2", 5)  # a third would be 75% of the fleet


def test_panic_mode_routes_to_all_when_too_few_healthy(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    for i in range(4):
        tracker.register(make_agent(f"a{i}"), registered_at=0.0)
    for i in range(3):
        tracker.eject(f"a{i}", until=clock.now + 100)
    balancer = Balancer(
        tracker, config=BalancerConfig(slow_start_window_s=0, panic_threshold_percent=50), seed=1
    )
    picks = Counter()
    for _ in range(40):
        result = balancer.select(TaskRequest(task_type="t"), "round_robin")
        picks[result.selected_agent.id] += 1
        assert result.panic and "panic mode" in result.selection_reason
    assert set(picks) == {"a0", "a1", "a2", "a3"}

    strict = Balancer(tracker, config=BalancerConfig(panic_mode_enabled=False, panic_threshold_percent=50))
    assert strict.select(TaskRequest(task_type="t")).selected_agent.id == "a3"  # no panic: healthy only
    tracker.eject("a3", until=clock.now + 100)
    with pytest.raises(AllAgentsEjectedError):
        strict.select(TaskRequest(task_type="t"))


def test_slow_start_ramps_a_new_agent(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("old", max_concurrency=100), registered_at=0.0)
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=60), seed=1)
    tracker.register(make_agent("new", max_concurrency=100), registered_at=clock.now)

    def share_of_new(n: int = 200) -> float:
        count = 0
        for _ in range(n):
            result = balancer.select(TaskRequest(task_type="t"), "weighted_round_robin", record=False)
            count += result.selected_agent.id == "new"
        return count / n

    early = share_of_new()
    clock.advance(30)
    middle = share_of_new()
    clock.advance(31)
    late = share_of_new()
    assert early == pytest.approx(0.1 / 1.1, abs=0.02)
    assert middle == pytest.approx(0.5 / 1.5, abs=0.02)
    assert late == pytest.approx(0.5, abs=0.02)


def test_capacity_filter_and_full_fleet_reason(fleet_factory: Callable[..., Balancer]) -> None:
    balancer = fleet_factory(2, max_concurrency=1)
    first = balancer.select(TaskRequest(task_type="t"), "round_robin")
    second = balancer.select(TaskRequest(task_type="t"), "round_robin")
    assert {first.selected_agent.id, second.selected_agent.id} == {"a0", "a1"}
    third = balancer.select(TaskRequest(task_type="t"), "least_connection")
    assert "at capacity" in third.selection_reason


class TypeMeanPredictor:
    """A trained-model stand-in: each agent's own mean for the task type, no load factors."""

    version = "type-mean"
    source = "test"

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction:
        p50 = np.array([s.ewma_duration_by_type.get(task.task_type, 1.0) for s in candidates])
        return ServicePrediction(p50, p50 * 1.5)

    def describe(self) -> dict[str, object]:
        return {"version": self.version}


def test_queue_aware_strategy_may_wait_for_a_fast_agent(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("fast", max_concurrency=1), registered_at=0.0)
    tracker.register(make_agent("slow", max_concurrency=1), registered_at=0.0)
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("slow", 10.0, True, task_type="t"), 1.0)
    heuristic = Balancer(tracker, config=BalancerConfig(slow_start_window_s=0), seed=1)
    assert not heuristic.strategies["predictive"].queue_aware  # the heuristic is too noisy to queue on
    balancer = Balancer(
        tracker, PredictorRef(TypeMeanPredictor()), BalancerConfig(slow_start_window_s=0), seed=1
    )
    tracker.dispatch("fast", TaskRequest(task_type="t", task_id="busy"), predicted_service_s=1.0)
    clock.advance(0.5)
    # fast is full but frees in ~0.5 s and then takes 1 s; slow is free but takes 10 s
    assert balancer.select(TaskRequest(task_type="t"), "predictive").selected_agent.id == "fast"
    assert balancer.select(TaskRequest(task_type="t"), "least_connection").selected_agent.id == "slow"


def test_a_full_agent_whose_work_overruns_is_passed_over(clock: FakeClock) -> None:
    """A stalled agent's wait grows with its overrun: predictive leaves it once a free agent,
    however slow, would finish sooner (least connection knows nothing of it)."""
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("stalled", max_concurrency=1), registered_at=0.0)
    tracker.register(make_agent("slow", max_concurrency=4), registered_at=0.0)
    tracker.learn(TaskOutcome("stalled", 2.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("slow", 5.0, True, task_type="t"), 1.0)
    tracker.dispatch("stalled", TaskRequest(task_type="t", task_id="stuck"), predicted_service_s=2.0)
    for i in range(3):
        tracker.dispatch("slow", TaskRequest(task_type="t", task_id=f"s{i}"), predicted_service_s=5.0)
    balancer = Balancer(
        tracker, PredictorRef(TypeMeanPredictor()), BalancerConfig(slow_start_window_s=0), seed=1
    )
    clock.advance(1.0)  # "stuck" has 1 s of its 2 s left: 1 + 2 s beats 5 s on "slow"
    assert balancer.select(TaskRequest(task_type="t"), "predictive").selected_agent.id == "stalled"
    clock.advance(7.0)
    # "stuck" is now 6 s past its prediction: ~6 s more, then the task just queued (2 s), then
    # this one (2 s): 10 s against 5 s
    result = balancer.select(TaskRequest(task_type="t"), "predictive", top_k=2)
    assert result.selected_agent.id == "slow"
    stalled = next(a for a in result.alternative_agents if a.agent_id == "stalled")
    assert stalled.predicted_p50_s == pytest.approx(6.0 + 2.0 + 2.0, rel=0.01)


class BrokenPredictor:
    version = "broken"
    source = "test"

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction:
        raise RuntimeError("model exploded")

    def describe(self) -> dict[str, object]:
        return {}


def test_predictor_failure_falls_back_visibly(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    for i in range(3):
        tracker.register(make_agent(f"a{i}"), registered_at=0.0)
    balancer = Balancer(tracker, PredictorRef(BrokenPredictor()), BalancerConfig(slow_start_window_s=0))
    result = balancer.select(TaskRequest(task_type="t"), "predictive")
    assert result.fallback_used
    assert "model exploded" in result.selection_reason and "least_connection" in result.selection_reason
    assert balancer.stats.fallbacks == 1
    assert tracker.state(result.selected_agent.id).active_tasks == 1


def test_eight_threads_keep_counts_exact(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    for i in range(10):
        tracker.register(make_agent(f"a{i}", max_concurrency=8), registered_at=0.0)
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=0), seed=3)
    strategies = [
        "hybrid",
        "least_connection",
        "power_of_two",
        "predictive",
        "peak_ewma",
        "weighted_round_robin",
    ]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5_000):
                task = TaskRequest(task_type=f"t{i % 3}", task_id=f"w{n}-{i}")
                result = balancer.select(task, strategies[(n + i) % len(strategies)])
                balancer.report(TaskOutcome(result.selected_agent.id, 0.5 + (i % 7) / 7, True, task.task_id))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    snapshot = tracker.snapshot()
    assert all(s.active_tasks == 0 for s in snapshot.agents)
    assert sum(s.completed_tasks for s in snapshot.agents) == 40_000
    assert tracker.total_in_flight() == 0
