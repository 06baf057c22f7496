"""The event-log seam: a SharedTracker on the in-process log holds exactly the state of a plain
tracker given the same calls; two trackers on one Redis log converge field by field, take
capacity atomically across replicas, and close each other's tasks."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.errors import AgentLBError, ReservationLostError
from agentlb.replication import (
    FleetEvent,
    InProcessLog,
    SharedCounters,
    SharedTracker,
    SlotChange,
    export_state,
    state_digest,
)
from agentlb.tracker import AgentLoadTracker, TrackerConfig
from redis_support import delete_prefix, redis_skip_reason, redis_url, unique_prefix


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _operations(tracker: AgentLoadTracker, clock: Clock, seed: int, steps: int = 600) -> None:
    """A random mix of every mutation, on `tracker`; errors are part of the contract."""
    rng = random.Random(seed)
    for i in range(4):
        tracker.register(Agent(id=f"a{i}", name=f"a{i}", capabilities=frozenset({"x"}), max_concurrency=3))
    in_flight: list[tuple[str, str]] = []
    for step in range(steps):
        clock.now += rng.random()
        roll = rng.random()
        agent = f"a{rng.randrange(4)}"
        try:
            if roll < 0.4:
                task = TaskRequest(task_type=rng.choice(["t1", "t2"]), task_id=f"task-{step}")
                tracker.dispatch(agent, task, predicted_service_s=rng.random() * 10)
                in_flight.append((agent, task.task_id))
            elif roll < 0.75 and in_flight:
                owner, task_id = in_flight.pop(rng.randrange(len(in_flight)))
                outcome = TaskOutcome(owner, rng.random() * 20, rng.random() < 0.8, task_id=task_id)
                tracker.complete(outcome)
            elif roll < 0.8:
                tracker.complete(TaskOutcome(agent, rng.random() * 5, True, task_type="t1"))
            elif roll < 0.88:
                tracker.heartbeat(agent, rng.random(), rng.random(), rng.randrange(5))
            elif roll < 0.92:
                tracker.learn(
                    TaskOutcome(agent, rng.random() * 3, True, task_id=f"old-{step}", task_type="t2"),
                    clock.now,
                )
            elif roll < 0.95:
                tracker.eject(agent, clock.now + 30)
            elif roll < 0.97:
                tracker.register(
                    Agent(id=agent, name=agent, capabilities=frozenset({"x"}), max_concurrency=2)
                )
            else:
                tracker.expire_stale(clock.now + 3500)
        except AgentLBError:
            pass


def test_in_process_log_holds_the_plain_trackers_state() -> None:
    config = TrackerConfig(in_flight_expiry_s=3600)
    plain_clock, shared_clock = Clock(), Clock()
    plain = AgentLoadTracker(plain_clock, config)
    shared = SharedTracker(shared_clock, config)
    shared.attach(InProcessLog(shared, SharedCounters()))
    _operations(plain, plain_clock, seed=3)
    _operations(shared, shared_clock, seed=3)
    assert export_state(shared) == export_state(plain)
    assert shared.snapshot().agents == plain.snapshot().agents


# --- on Redis --------------------------------------------------------------------------------
@pytest.fixture
def prefix() -> Iterator[str]:
    reason = redis_skip_reason("fleet log on Redis")
    if reason is not None:
        pytest.skip(reason)
    name = unique_prefix("log")
    yield name
    delete_prefix(redis_url(), name)


def _replica(prefix: str, clock: Clock, agents: list[Agent]) -> tuple[SharedTracker, object]:
    from agentlb.replication.redis_log import Extras, RedisFleetLog

    tracker = SharedTracker(clock, TrackerConfig())

    def rebuild() -> AgentLoadTracker:
        fresh = AgentLoadTracker(clock)
        for agent in agents:
            fresh.register(agent, registered_at=0.0)
        return fresh

    extras = Extras(lambda: {}, lambda _e: None)
    log = RedisFleetLog(
        redis_url(), prefix, tracker, SharedCounters(), extras, rebuild, checkpoint_interval_s=3600
    )
    tracker.attach(log)
    log.start()
    return tracker, log


def _wait_same_state(logs: list[object], timeout_s: float = 5.0) -> list[str]:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        digests = [log.digest() for log in logs]  # type: ignore[attr-defined]
        if len({(seq, digest) for seq, digest, _ in digests}) == 1 or time.monotonic() > deadline:
            return [digest for _, digest, _ in digests]
        time.sleep(0.02)


def test_two_replicas_share_capacity_and_converge(prefix: str) -> None:
    clock = Clock()
    agents = [Agent(id="a", name="a", max_concurrency=2), Agent(id="b", name="b", max_concurrency=1)]
    first, first_log = _replica(prefix, clock, agents)
    second, second_log = _replica(prefix, clock, agents)
    try:
        first.dispatch("a", TaskRequest(task_type="t", task_id="t1"))
        # the second replica has not seen t1 yet in its snapshot, but its reservation does
        second.dispatch("a", TaskRequest(task_type="t", task_id="t2"))
        second.dispatch("b", TaskRequest(task_type="t", task_id="t3"))
        # "b" holds its one slot: a reservation from the other replica is refused, whatever
        # that replica's local state says, and it catches up while being refused
        dispatch_t4 = FleetEvent(
            "dispatch",
            clock.now,
            {
                "agent_id": "b",
                "task_id": "t4",
                "task_type": "t",
                "predicted_service_s": None,
                "selection": None,
            },
        )
        with pytest.raises(ReservationLostError):
            first_log.publish(dispatch_t4, SlotChange("reserve", "b", ("t4",), limit=1))  # type: ignore[attr-defined]
        assert first.state("b").active_tasks == 1  # it caught up while being refused
        # an outcome reported to the other replica closes the task
        clock.now += 3.0
        first.complete(TaskOutcome("a", 2.5, True, task_id="t2"))
        second.complete(TaskOutcome("b", 1.0, False, task_id="t3"))
        clock.now += 1.0
        second.heartbeat("a", 0.5, 0.25, 1)
        first.eject("b", clock.now + 30)
        digests = _wait_same_state([first_log, second_log])
        assert digests[0] == digests[1]
        assert export_state(first) == export_state(second)
        assert first.state("a").active_tasks == 1 and first.is_in_flight("t1")
        assert second.state("b").times_ejected == 1
    finally:
        first_log.close()  # type: ignore[attr-defined]
        second_log.close()  # type: ignore[attr-defined]


def test_a_replica_that_joins_later_loads_the_same_state(prefix: str) -> None:
    clock = Clock()
    agents = [Agent(id="a", name="a", max_concurrency=4)]
    first, first_log = _replica(prefix, clock, agents)
    try:
        for i in range(20):
            clock.now += 1
            first.dispatch("a", TaskRequest(task_type="t", task_id=f"t{i}"))
            if i % 2:
                first.complete(TaskOutcome("a", 1.0 + i, True, task_id=f"t{i - 1}"))
        assert first_log.write_checkpoint()  # type: ignore[attr-defined]
        for i in range(20, 30):  # after the checkpoint: the late replica applies these from the log
            clock.now += 1
            first.complete(TaskOutcome("a", 0.5, i % 3 != 0))
        late, late_log = _replica(prefix, clock, agents)
        try:
            assert _wait_same_state([first_log, late_log])[0] == state_digest(
                {"tracker": export_state(late), "extras": {}}
            )
            assert export_state(late) == export_state(first)
        finally:
            late_log.close()  # type: ignore[attr-defined]
    finally:
        first_log.close()  # type: ignore[attr-defined]


def test_the_publish_connection_survives_a_script_flush_and_a_killed_idle_connection(prefix: str) -> None:
    import redis

    clock = Clock()
    agents = [Agent(id="a", name="a", max_concurrency=8)]
    tracker, log = _replica(prefix, clock, agents)
    admin = redis.Redis.from_url(redis_url())
    try:
        tracker.dispatch("a", TaskRequest(task_type="t", task_id="t1"))
        admin.script_flush()  # a restarted Redis forgets its scripts: NOSCRIPT, loaded again
        tracker.dispatch("a", TaskRequest(task_type="t", task_id="t2"))
        # the server closes the idle publish connection: opened again before sending
        host, port = log._publish_lua._connection._sock.getsockname()[:2]  # type: ignore[attr-defined]
        resyncs = log.status().resyncs  # type: ignore[attr-defined]
        assert admin.client_kill_filter(addr=f"{host}:{port}") == 1
        tracker.dispatch("a", TaskRequest(task_type="t", task_id="t3"))
        status = log.status()  # type: ignore[attr-defined]
        assert status.live and not status.diverged and status.resyncs == resyncs
        assert tracker.state("a").active_tasks == 3
        assert admin.scard("{" + prefix + "}:slots:a") == 3
    finally:
        log.close()  # type: ignore[attr-defined]
        admin.close()
