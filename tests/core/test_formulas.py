"""Each product-spec formula against values computed by hand."""

from __future__ import annotations

import math

import pytest
from core_helpers import FakeClock, make_agent

from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.predictor.base import completion_times, expected_wait_s
from agentlb.predictor.heuristic import HeuristicPredictor, heuristic_confidence, heuristic_service_s
from agentlb.settings import SPEC_HYBRID_WEIGHTS, normalise_weights
from agentlb.strategies import (
    Hybrid,
    LeastConnection,
    PeakEwma,
    PowerOfTwo,
    ResourceAware,
    WeightedRoundRobin,
)
from agentlb.strategies.classic import adjusted_load, resource_score, wrr_weight
from agentlb.tracker import AgentLoadTracker, TrackerConfig


@pytest.fixture
def tracker(clock: FakeClock) -> AgentLoadTracker:
    t = AgentLoadTracker(clock, TrackerConfig(ewma_alpha=0.5, success_alpha=0.5))
    t.register(make_agent("fast", max_concurrency=4), registered_at=0.0)
    t.register(make_agent("slow", max_concurrency=2), registered_at=0.0)
    return t


def test_ewma_and_success_rate_updates(tracker: AgentLoadTracker) -> None:
    tracker.learn(TaskOutcome("fast", 2.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("fast", 4.0, True, task_type="t"), 2.0)
    tracker.learn(TaskOutcome("fast", 9.0, False, task_type="t"), 3.0)
    state = tracker.state("fast")
    assert state.ewma_duration_by_type["t"] == pytest.approx(3.0)  # 2 + 0.5 * (4 - 2); failure ignored
    assert state.ewma_variance_by_type["t"] == pytest.approx(1.0)  # (1 - a) * (0 + diff * a * diff)
    assert state.success_rate == pytest.approx(0.5)  # 1 -> 1 -> 0.5
    assert (state.completed_tasks, state.failed_tasks, state.consecutive_failures) == (2, 1, 1)


def test_wrr_weight(tracker: AgentLoadTracker) -> None:
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("slow", 3.0, True, task_type="t"), 1.0)
    tracker.dispatch("fast", TaskRequest(task_type="t", task_id="x"))
    snapshot = tracker.snapshot()
    fast, slow = snapshot.get("fast"), snapshot.get("slow")
    assert fast is not None and slow is not None
    # fleet EWMA for t = (1 + 3) / 2 = 2; specialization fast = 2/1, slow = 2/3
    # fast: success 1 x capacity (1 - 1/4) x 2 = 1.5; slow: 1 x 1 x 2/3
    assert wrr_weight(fast, TaskRequest(task_type="t"), snapshot, 0.0) == pytest.approx(1.5)
    assert wrr_weight(slow, TaskRequest(task_type="t"), snapshot, 0.0) == pytest.approx(2 / 3)


def test_wrr_weight_floor(tracker: AgentLoadTracker) -> None:
    for i in range(2):
        tracker.dispatch("slow", TaskRequest(task_type="t", task_id=f"s{i}"))
    state = tracker.state("slow")  # capacity 0 -> floored at 0.1
    assert wrr_weight(state, TaskRequest(task_type="t"), tracker.snapshot(), 0.0) == pytest.approx(0.1)


def test_least_connection(tracker: AgentLoadTracker) -> None:
    for i in range(3):
        tracker.dispatch("fast", TaskRequest(task_type="t", task_id=f"f{i}"))
    tracker.learn(TaskOutcome("fast", 1.0, False, task_type="t"), 1.0)  # success 0.5
    state = tracker.state("fast")
    assert adjusted_load(state) == pytest.approx(3 / 0.5)
    decision = LeastConnection(0).decide(TaskRequest(task_type="t"), [state], tracker.snapshot())
    assert decision.confidence == pytest.approx(1 / (1 + 6))


def test_resource_score(tracker: AgentLoadTracker) -> None:
    tracker.heartbeat("slow", cpu_usage=40.0, memory_usage=70.0, queue_length=1)
    state = tracker.state("slow")
    # 0.6 x 0.3 + 0.3 x 0.3 + (1 - 1/2) x 0.2 + 0.8 x 0.2
    assert resource_score(state, 0.8) == pytest.approx(0.18 + 0.09 + 0.1 + 0.16)
    decision = ResourceAware(0).decide(TaskRequest(task_type="t"), [state], tracker.snapshot())
    assert decision.confidence == pytest.approx(0.18 + 0.09 + 0.1 + 0.2)


def test_heuristic_prediction_and_confidence(tracker: AgentLoadTracker, clock: FakeClock) -> None:
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("slow", 3.0, True, task_type="t"), 1.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="q"))
    snapshot = tracker.snapshot()
    slow = snapshot.get("slow")
    assert slow is not None
    # base 2 (fleet) x load (1 + 0.5 x 1/2) x trend 1.0 / specialization (2/3) = 3.75
    assert heuristic_service_s(slow, "t", snapshot) == pytest.approx(3.75)
    assert heuristic_confidence(4.0, 2.0) == pytest.approx(1 / (1 + 0.5))


def test_predicted_completion_includes_wait_behind_in_flight(
    tracker: AgentLoadTracker, clock: FakeClock
) -> None:
    tracker.learn(TaskOutcome("slow", 3.0, True, task_type="t"), 1.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="r1"), predicted_service_s=4.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="r2"), predicted_service_s=6.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="q1"), predicted_service_s=5.0)
    clock.advance(1.0)
    snapshot = tracker.snapshot()
    slow = snapshot.get("slow")
    assert slow is not None
    # 2 slots: r1 has 3 s left, r2 5 s; q1 starts at 3 and ends at 8; a new task starts at 5.
    assert expected_wait_s(slow, snapshot) == pytest.approx(5.0)
    (done,) = completion_times(TaskRequest(task_type="t"), [slow], snapshot, HeuristicPredictor())
    assert done.wait_s == pytest.approx(5.0)
    assert done.p50_s == pytest.approx(5.0 + done.service_p50_s)
    assert done.p90_s >= done.p50_s


def test_an_overrunning_task_is_expected_to_run_as_long_again_as_it_has_overrun(
    tracker: AgentLoadTracker, clock: FakeClock
) -> None:
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="o1"), predicted_service_s=2.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="o2"), predicted_service_s=8.0)
    clock.advance(3.0)
    slow = tracker.snapshot().get("slow")
    assert slow is not None
    # 2 slots: o1 is 1 s past its 2 s prediction, so ~1 s more; o2 has 5 s left
    assert expected_wait_s(slow, tracker.snapshot()) == pytest.approx(1.0)
    clock.advance(0.3)
    # o1 1.3 s over: 1.3 s more; the floor (a quarter of the prediction, 0.5 s) no longer binds
    assert expected_wait_s(slow, tracker.snapshot()) == pytest.approx(1.3)
    clock.advance(5.0)
    # both overran (o1 by 6.3 s, o2 by 0.3 s): o2 has the floor, 2 s, left
    assert expected_wait_s(slow, tracker.snapshot()) == pytest.approx(2.0)


def test_hybrid_weights_validated_and_normalised() -> None:
    assert normalise_weights({"predictive": 2, "least_connection": 2}) == {
        "weighted_round_robin": 0.0,
        "least_connection": 0.5,
        "predictive": 0.5,
        "resource_aware": 0.0,
    }
    for bad in ({"predictive": -1}, {"nope": 1}, {"predictive": 0}, {"predictive": math.nan}):
        with pytest.raises(ValueError):
            normalise_weights(bad)


def test_hybrid_reason_names_agreeing_strategies(tracker: AgentLoadTracker) -> None:
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("slow", 3.0, True, task_type="t"), 1.0)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="busy"))
    snapshot = tracker.snapshot()
    decision = Hybrid(weights=SPEC_HYBRID_WEIGHTS, seed=0).decide(
        TaskRequest(task_type="t"), list(snapshot.agents), snapshot
    )
    assert decision.chosen == "fast"
    assert decision.detail == "chosen by 4 strategies: wrr, lc, ra, ml"
    assert decision.confidence == pytest.approx(1.0)


def test_power_of_two_weighted_score(tracker: AgentLoadTracker) -> None:
    tracker.dispatch("fast", TaskRequest(task_type="t", task_id="a"))
    state = tracker.state("fast")
    assert PowerOfTwo(0, active_request_bias=1.0, slow_start_window_s=0).score(state, 0.0) == pytest.approx(
        1 / 2
    )


def test_peak_ewma_jumps_up_and_decays(tracker: AgentLoadTracker, clock: FakeClock) -> None:
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 100.0)
    tracker.learn(TaskOutcome("fast", 5.0, True, task_type="t"), 101.0)
    assert tracker.state("fast").peak_ewma_s == pytest.approx(5.0)  # peak: jumps at once
    tracker.learn(TaskOutcome("fast", 1.0, True, task_type="t"), 111.0)
    w = math.exp(-10 / 10)
    assert tracker.state("fast").peak_ewma_s == pytest.approx(5.0 * w + 1.0 * (1 - w))
    strategy = PeakEwma(0, decay_s=10.0)
    state = tracker.state("fast")
    assert strategy.cost(state, 111.0) == pytest.approx(state.peak_ewma_s * 1)
    tracker.dispatch("slow", TaskRequest(task_type="t", task_id="p"))
    assert strategy.cost(tracker.state("slow"), 111.0) > 1e6  # no history and busy: penalty


def test_wrr_share_follows_weights_within_one_percent(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    weights = {"w1": 1.0, "w2": 2.0, "w3": 3.0, "w4": 4.0}
    for agent_id, weight in weights.items():
        tracker.register(make_agent(agent_id, weight=weight), registered_at=0.0)
    snapshot = tracker.snapshot()
    strategy = WeightedRoundRobin(0, slow_start_window_s=0)
    counts = dict.fromkeys(weights, 0)
    for _ in range(10_000):
        counts[strategy.decide(TaskRequest(task_type="t"), list(snapshot.agents), snapshot).chosen] += 1
    for agent_id, weight in weights.items():
        assert counts[agent_id] / 10_000 == pytest.approx(weight / 10.0, abs=0.01)


def test_long_backlog_wait_is_the_fluid_drain_time(tracker: AgentLoadTracker, clock: FakeClock) -> None:
    for i in range(42):  # slow has 2 slots: 2 running, 40 queued, 1 s each
        tracker.dispatch("slow", TaskRequest(task_type="t", task_id=f"b{i}"), predicted_service_s=1.0)
    snapshot = tracker.snapshot()
    slow = snapshot.get("slow")
    assert slow is not None
    # exact FIFO on 2 slots: both free at 1 s, then 20 more tasks each -> a slot frees at 21 s
    assert expected_wait_s(slow, snapshot) == pytest.approx(21.0)
