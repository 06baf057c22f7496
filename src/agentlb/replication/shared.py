"""The seam: a tracker whose every mutation goes through a fleet event log.

`SharedTracker` is an `AgentLoadTracker` (strategies and the balancer read it as before, from
memory) whose mutating methods check the call against local state, raise what the tracker
would raise, and then publish the mutation as a `FleetEvent` to a `FleetLog`. The log applies
its events, in its order, to every replica's tracker (`apply_event`), this one included, and
hands back what applying this replica's own event returned. `InProcessLog` applies at once
(one process: the same state as a plain tracker, which is what the embedded default runs);
`RedisFleetLog` shares one ordered log between replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agentlb.domain import Agent, CompletedTask, InFlightTask, TaskOutcome, TaskRequest
from agentlb.errors import (
    ConflictingOutcomeError,
    DuplicateTaskError,
    TaskAlreadyCompletedError,
    UnknownTaskError,
)
from agentlb.replication.events import (
    DISPATCH,
    EJECT,
    EXPIRE,
    HEARTBEAT,
    OUTCOME,
    REGISTER,
    REMOVE,
    WEIGHTS,
    FleetEvent,
    SharedCounters,
    agent_document,
    apply_event,
    outcome_document,
)
from agentlb.tracker import AgentLoadTracker, Clock, SelectionTag, TrackerConfig


@dataclass(frozen=True)
class SlotChange:
    """What an event does to the agents' reserved slots (the in-flight task ids the capacity
    check counts across replicas): reserve one (checked against `limit`, or not when the
    balancer chose a full agent on purpose), release some, or clear an agent's."""

    op: str  # none | reserve | release | clear
    agent_id: str = ""
    task_ids: tuple[str, ...] = ()
    limit: int | None = None


NO_SLOTS = SlotChange("none")


class FleetLog(Protocol):
    def publish(self, event: FleetEvent, slots: SlotChange) -> Any:
        """Append `event`, apply the log up to it to the tracker, return what applying it
        returned. ReservationLostError when `slots` reserves a slot another replica took."""
        ...


class InProcessLog:
    """The log of one process: each event is applied as it is published."""

    def __init__(self, tracker: AgentLoadTracker, counters: SharedCounters | None = None) -> None:
        self.tracker = tracker
        self.counters = counters or SharedCounters()
        self._lock = threading.Lock()

    def publish(self, event: FleetEvent, slots: SlotChange) -> Any:
        with self._lock:
            return apply_event(self.tracker, event, self.counters)


class SharedTracker(AgentLoadTracker):
    """An `AgentLoadTracker` whose mutations go through `log` (set with `attach`)."""

    shared = True

    def __init__(self, clock: Clock, config: TrackerConfig | None = None) -> None:
        super().__init__(clock, config)
        self.log: FleetLog | None = None

    def attach(self, log: FleetLog) -> None:
        self.log = log

    def _publish(self, event: FleetEvent, slots: SlotChange = NO_SLOTS) -> Any:
        assert self.log is not None, "SharedTracker used before attach()"
        return self.log.publish(event, slots)

    # --- registry -------------------------------------------------------------------
    def register(self, agent: Agent, registered_at: float | None = None) -> None:
        at = self.clock() if registered_at is None else registered_at
        self._publish(FleetEvent(REGISTER, at, {"agent": agent_document(agent)}))

    def remove(self, agent_id: str) -> None:
        with self._lock:
            self._require(agent_id)
        self._publish(FleetEvent(REMOVE, self.clock(), {"agent_id": agent_id}), SlotChange("clear", agent_id))

    # --- tasks ----------------------------------------------------------------------
    def dispatch(
        self,
        agent_id: str,
        task: TaskRequest,
        predicted_service_s: float | None = None,
        dispatched_at: float | None = None,
        selection: SelectionTag | None = None,
    ) -> InFlightTask:
        with self._lock:
            record = self._record_for_new_task(agent_id, task.task_id)
            limit = record.agent.max_concurrency
            # A balancer that chose a full agent on purpose (all full, or a queue-aware
            # strategy) takes a slot over the limit, as in one process.
            checked = len(record.in_flight) < limit
        at = self.clock() if dispatched_at is None else dispatched_at
        event = FleetEvent(
            DISPATCH,
            at,
            {
                "agent_id": agent_id,
                "task_id": task.task_id,
                "task_type": task.task_type,
                "predicted_service_s": predicted_service_s,
                "selection": list(selection) if selection is not None else None,
            },
        )
        slots = SlotChange("reserve", agent_id, (task.task_id,), limit if checked else None)
        entry = self._publish(event, slots)
        if entry is None:  # another replica dispatched the same task id first
            raise DuplicateTaskError(task.task_id)
        assert isinstance(entry, InFlightTask)
        return entry

    def complete(self, outcome: TaskOutcome, finished_at: float | None = None) -> CompletedTask:
        with self._lock:
            record = self._require_live(outcome.agent_id)
            if outcome.task_id is not None:
                owner = self._task_agent.get(outcome.task_id)
                if owner is None:
                    if outcome.task_id in self._finished:
                        raise TaskAlreadyCompletedError(outcome.task_id)
                    raise UnknownTaskError(outcome.task_id)
                if owner != outcome.agent_id:
                    raise ConflictingOutcomeError(outcome.task_id, ["agent_id"])
                resolved = outcome
            else:
                # The oldest in-flight task is chosen here, so every replica closes the same one.
                entry = self._oldest_in_flight(record, outcome.task_type)
                resolved = outcome if entry is None else _with_task(outcome, entry)
        at = self.clock() if finished_at is None else finished_at
        completed = self._publish_outcome(resolved, at)
        if isinstance(completed, CompletedTask):
            return completed
        # Closed at another replica meanwhile (or nothing was in flight): learned from only.
        return CompletedTask(None, outcome.agent_id, resolved.task_type, None, None, ejected=False)

    def learn(self, outcome: TaskOutcome, finished_at: float) -> None:
        self._publish_outcome(outcome, finished_at)

    def _publish_outcome(self, outcome: TaskOutcome, at: float) -> Any:
        ids = () if outcome.task_id is None else (outcome.task_id,)
        return self._publish(
            FleetEvent(OUTCOME, at, outcome_document(outcome)), SlotChange("release", outcome.agent_id, ids)
        )

    def heartbeat(
        self,
        agent_id: str,
        cpu_usage: float | None = None,
        memory_usage: float | None = None,
        queue_length: int | None = None,
    ) -> None:
        with self._lock:
            self._require_live(agent_id)
        data = {"agent_id": agent_id, "cpu_usage": cpu_usage, "memory_usage": memory_usage}
        self._publish(FleetEvent(HEARTBEAT, self.clock(), {**data, "queue_length": queue_length}))

    def eject(self, agent_id: str, until: float) -> None:
        with self._lock:
            times = self._require(agent_id).times_ejected
        self._publish(
            FleetEvent(EJECT, self.clock(), {"agent_id": agent_id, "until": until, "times_before": times})
        )

    def expire_stale(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        horizon = now - self.config.in_flight_expiry_s
        with self._lock:
            stale = [
                (record.agent.id, task_id)
                for record in self._agents.values()
                for task_id, entry in record.in_flight.items()
                if entry.dispatched_at < horizon
            ]
        if not stale:
            return []
        expired: list[str] = []
        for agent_id in sorted({a for a, _ in stale}):
            ids = tuple(t for a, t in stale if a == agent_id)
            # One event per agent (slots are per agent); the first expires every stale task.
            applied = self._publish(FleetEvent(EXPIRE, now, {}), SlotChange("release", agent_id, ids))
            expired.extend(applied or ())
        return expired

    def publish_weights(self, weights: Mapping[str, float]) -> None:
        """A hybrid weight change, applied by every replica's balancer."""
        self._publish(FleetEvent(WEIGHTS, self.clock(), {"weights": dict(weights)}))


def _with_task(outcome: TaskOutcome, entry: InFlightTask) -> TaskOutcome:
    from dataclasses import replace

    return replace(outcome, task_id=entry.task_id, task_type=outcome.task_type or entry.task_type)
