"""Restart recovery: a tracker rebuilt from the store equals the live one."""

from __future__ import annotations

import pytest
from store_helpers import LiveFleet, StoreClock

from agentlb.domain import TaskRequest
from agentlb.errors import TaskAlreadyCompletedError
from agentlb.store import RestoreReport, Store
from agentlb.tracker import AgentLoadTracker, TrackerConfig


def restored_tracker(
    store: Store, clock: StoreClock, expiry_s: float
) -> tuple[AgentLoadTracker, RestoreReport]:
    tracker = AgentLoadTracker(clock, TrackerConfig(in_flight_expiry_s=expiry_s))
    report = store.restore_tracker(tracker, expiry_s, clock())
    return tracker, report


def test_restored_tracker_equals_the_live_one(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock, expiry_s=600.0)
    live.run(60, finish_every=2, fail_every=6)  # about half the tasks stay in flight
    assert live.open
    restored, report = restored_tracker(store, clock, 600.0)

    live_states = {s.agent.id: s for s in live.tracker.snapshot().agents}
    new_states = {s.agent.id: s for s in restored.snapshot().agents}
    assert set(new_states) == set(live_states) == {"fast", "slow", "mid"}
    for agent_id, expected in live_states.items():
        got = new_states[agent_id]
        assert got.agent == expected.agent
        assert got.in_flight == expected.in_flight  # ids, types, dispatch times, predicted service
        assert (got.active_tasks, got.completed_tasks, got.failed_tasks) == (
            expected.active_tasks, expected.completed_tasks, expected.failed_tasks)
        assert got.consecutive_failures == expected.consecutive_failures
        assert got.success_rate == pytest.approx(expected.success_rate, rel=1e-9)
        assert got.ewma_duration_s == pytest.approx(expected.ewma_duration_s, rel=1e-9)
        assert got.ewma_duration_by_type == pytest.approx(expected.ewma_duration_by_type, rel=1e-9)
        assert got.ewma_variance_by_type == pytest.approx(expected.ewma_variance_by_type, rel=1e-9, abs=1e-12)
        assert got.samples_by_type == expected.samples_by_type
        assert got.peak_ewma_s == pytest.approx(expected.peak_ewma_s, rel=1e-9)
        assert got.cpu_usage == expected.cpu_usage
    assert report.in_flight_restored == len(live.open)


def test_finished_tasks_are_remembered_after_restart(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    done = live.dispatch(0)
    live.finish(done)
    restored, _ = restored_tracker(store, clock, 3600.0)
    assert not restored.is_in_flight(done.task_id)
    with pytest.raises(TaskAlreadyCompletedError):
        restored.dispatch(done.selected_agent.id, TaskRequest(task_type=done.task_type, task_id=done.task_id))


def test_unfinished_tasks_older_than_the_expiry_stop_counting(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    stale = live.dispatch(0)
    clock.advance(700)
    fresh = live.dispatch(1)
    restored, report = restored_tracker(store, clock, 600.0)
    assert not restored.is_in_flight(stale.task_id)
    assert restored.is_in_flight(fresh.task_id)
    assert (report.in_flight_restored, report.in_flight_expired) == (1, 1)


def test_deleted_and_imported_agents_come_back_history_only(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    open_task = live.dispatch(0)
    store.delete_agent(open_task.selected_agent.id)
    restored, report = restored_tracker(store, clock, 3600.0)
    assert open_task.selected_agent.id not in {s.agent.id for s in restored.snapshot().agents}
    assert restored.has_agent(open_task.selected_agent.id)  # kept, for its statistics
    assert (report.history_only_agents, report.in_flight_skipped) == (1, 1)

