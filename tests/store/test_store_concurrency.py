"""Concurrent writers: 8 threads x 1,000 outcomes, no lost or duplicated rows; racing
duplicates of one task are recorded once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from agentlb.domain import TaskOutcome
from agentlb.store import Store

WRITERS = 8


def run_writers(target: object, writers: int = WRITERS) -> list[Exception]:
    failures: list[Exception] = []
    barrier = threading.Barrier(writers)

    def guarded(worker: int) -> None:
        barrier.wait()
        try:
            target(worker)  # type: ignore[operator]
        except Exception as exc:  # collected and asserted empty below
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


@pytest.mark.slow
def test_eight_writers_lose_and_duplicate_nothing(store: Store) -> None:
    per_writer = 1000

    def write(worker: int) -> None:
        for j in range(per_writer):
            outcome = TaskOutcome(f"agent-{worker}", 1.0 + j % 7, j % 9 != 0, f"w{worker}-{j}")
            store.record_outcome(outcome, float(j))

    assert run_writers(write) == []
    frame = store.history_frame()
    assert len(frame) == store.count_outcomes() == WRITERS * per_writer
    assert frame["task_id"].is_unique
    assert Counter(frame["agent_id"]) == {f"agent-{w}": per_writer for w in range(WRITERS)}


def test_racing_duplicates_are_recorded_once(store: Store) -> None:
    task_ids = [f"shared-{i}" for i in range(100)]
    created: list[str] = []
    lock = threading.Lock()

    def write(_worker: int) -> None:
        for task_id in task_ids:
            write_result = store.record_outcome(TaskOutcome("agent-0", 2.0, True, task_id), 1.0)
            if write_result.created:
                with lock:
                    created.append(task_id)

    assert run_writers(write) == []
    assert sorted(created) == sorted(task_ids)  # each task created by exactly one writer
    assert store.count_outcomes() == len(task_ids)
