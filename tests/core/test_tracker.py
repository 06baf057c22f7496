from __future__ import annotations

import pytest
from core_helpers import FakeClock, make_agent

from agentlb.domain import TaskOutcome, TaskRequest, WorkloadTrend
from agentlb.errors import (
    ConflictingOutcomeError,
    DuplicateTaskError,
    TaskAlreadyCompletedError,
    UnknownAgentError,
    UnknownTaskError,
)
from agentlb.tracker import AgentLoadTracker, TrackerConfig


@pytest.fixture
def tracker(clock: FakeClock) -> AgentLoadTracker:
    t = AgentLoadTracker(clock, TrackerConfig(in_flight_expiry_s=60))
    t.register(make_agent("a"))
    t.register(make_agent("b"))
    return t


def test_dispatch_and_complete_keep_counts_exact(tracker: AgentLoadTracker) -> None:
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="1"))
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="2"))
    assert tracker.state("a").active_tasks == 2
    tracker.complete(TaskOutcome("a", 1.0, True, "1"))
    assert tracker.state("a").active_tasks == 1
    with pytest.raises(TaskAlreadyCompletedError):
        tracker.complete(TaskOutcome("a", 1.0, True, "1"))
    with pytest.raises(UnknownTaskError):
        tracker.complete(TaskOutcome("a", 1.0, True, "never"))
    with pytest.raises(ConflictingOutcomeError):
        tracker.complete(TaskOutcome("b", 1.0, True, "2"))
    with pytest.raises(UnknownAgentError):
        tracker.complete(TaskOutcome("zzz", 1.0, True, "2"))
    with pytest.raises(DuplicateTaskError):
        tracker.dispatch("b", TaskRequest(task_type="t", task_id="2"))
    state = tracker.state("a")
    assert (state.active_tasks, state.completed_tasks) == (1, 1)  # the errors changed nothing


def test_outcome_without_task_id_closes_oldest_of_its_type(tracker: AgentLoadTracker) -> None:
    tracker.dispatch("a", TaskRequest(task_type="x", task_id="1"))
    tracker.dispatch("a", TaskRequest(task_type="y", task_id="2"))
    done = tracker.complete(TaskOutcome("a", 1.0, True, task_type="y"))
    assert done.task_id == "2"
    assert tracker.complete(TaskOutcome("a", 1.0, True)).task_id == "1"
    stats_only = tracker.complete(TaskOutcome("a", 1.0, True))
    assert stats_only.task_id is None
    assert tracker.state("a").active_tasks == 0  # never negative
    assert tracker.state("a").completed_tasks == 3


def test_in_flight_expiry(tracker: AgentLoadTracker, clock: FakeClock) -> None:
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="old"))
    clock.advance(61)
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="new"))
    assert tracker.expire_stale() == ["old"]
    assert tracker.state("a").active_tasks == 1
    with pytest.raises(UnknownTaskError):
        tracker.complete(TaskOutcome("a", 1.0, True, "old"))


def test_workload_trend(tracker: AgentLoadTracker, clock: FakeClock) -> None:
    for i in range(4):
        clock.advance(1)
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"u{i}"))
    assert tracker.state("a").workload_trend is WorkloadTrend.INCREASING
    for i in range(4):
        clock.advance(1)
        tracker.complete(TaskOutcome("a", 1.0, True, f"u{i}"))
    assert tracker.state("a").workload_trend is WorkloadTrend.DECREASING


def test_snapshot_is_immutable_view(tracker: AgentLoadTracker) -> None:
    before = tracker.snapshot()
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="1"))
    after = tracker.snapshot()
    assert before.get("a").active_tasks == 0  # type: ignore[union-attr]
    assert after.get("a").active_tasks == 1  # type: ignore[union-attr]


def test_failed_agent_recovers_success_rate(tracker: AgentLoadTracker) -> None:
    for _ in range(10):
        tracker.learn(TaskOutcome("a", 1.0, False), 1.0)
    low = tracker.state("a").success_rate
    for _ in range(30):
        tracker.learn(TaskOutcome("a", 1.0, True), 2.0)
    assert low < 0.4 and tracker.state("a").success_rate > 0.9


def test_removing_an_agent_updates_fleet_means(tracker: AgentLoadTracker) -> None:
    tracker.learn(TaskOutcome("a", 1.0, True, task_type="t"), 1.0)
    tracker.learn(TaskOutcome("b", 3.0, True, task_type="t"), 1.0)
    assert tracker.snapshot().fleet_ewma_by_type["t"] == pytest.approx(2.0)
    tracker.remove("b")
    assert tracker.snapshot().fleet_ewma_by_type["t"] == pytest.approx(1.0)
    assert [s.agent.id for s in tracker.snapshot().agents] == ["a"]


def test_history_only_agent_takes_no_live_work(tracker: AgentLoadTracker) -> None:
    tracker.register_history_only("imported")
    tracker.learn(TaskOutcome("imported", 2.0, True, task_type="t"), 1.0)  # restore still learns
    with pytest.raises(UnknownAgentError):
        tracker.complete(TaskOutcome("imported", 1.0, True))
    with pytest.raises(UnknownAgentError):
        tracker.dispatch("imported", TaskRequest(task_type="t"))
    with pytest.raises(UnknownAgentError):
        tracker.heartbeat("imported", cpu_usage=10.0)
    assert "imported" not in {s.agent.id for s in tracker.snapshot().agents}
    tracker.register(make_agent("imported"))  # registering makes it live, history kept
    assert tracker.state("imported").completed_tasks == 1
    tracker.dispatch("imported", TaskRequest(task_type="t", task_id="now-live"))
