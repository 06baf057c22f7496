"""The fleet's mutations as events, and the one function that applies an event to a tracker.

Every replica applies the same events in the same order with this function, from the same
starting state, so every replica's tracker ends field by field identical. An event carries its
own timestamp (`at`): the applying replica's clock never enters the state. Application is
deterministic and idempotent where a replay can repeat an event (re-founding the shared state
from the database replays the last seconds of the log over it): a dispatch already counted or
finished, an outcome already learned from, an ejection already counted are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentlb.domain import Agent, CompletedTask, InFlightTask, TaskOutcome, TaskRequest
from agentlb.errors import (
    DuplicateTaskError,
    TaskAlreadyCompletedError,
    UnknownAgentError,
)
from agentlb.tracker import AgentLoadTracker

DISPATCH = "dispatch"
OUTCOME = "outcome"
HEARTBEAT = "heartbeat"
EJECT = "eject"
REGISTER = "register"
REMOVE = "remove"
WEIGHTS = "weights"
EXPIRE = "expire"
EPOCH = "epoch"  # a new shared state was founded (no change to a tracker)
KINDS = frozenset({DISPATCH, OUTCOME, HEARTBEAT, EJECT, REGISTER, REMOVE, WEIGHTS, EXPIRE, EPOCH})


@dataclass(frozen=True)
class FleetEvent:
    """One mutation: its kind, when it happened (epoch seconds) and its fields."""

    kind: str
    at: float
    data: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        # json writes floats with repr: they read back bit for bit
        return json.dumps({"k": self.kind, "t": self.at, "d": self.data}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> FleetEvent:
        document = json.loads(raw)
        kind = document["k"]
        if kind not in KINDS:
            raise ValueError(f"unknown fleet event kind {kind!r}")
        return cls(kind, float(document["t"]), document["d"])


def agent_document(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "capabilities": sorted(agent.capabilities),
        "max_concurrency": agent.max_concurrency,
        "weight": agent.weight,
        "enabled": agent.enabled,
        "metadata": dict(agent.metadata),
    }


def agent_of(document: Mapping[str, Any]) -> Agent:
    return Agent(
        id=document["id"],
        name=document["name"],
        capabilities=frozenset(document["capabilities"]),
        max_concurrency=int(document["max_concurrency"]),
        weight=float(document["weight"]),
        enabled=bool(document["enabled"]),
        metadata=dict(document["metadata"]),
    )


def outcome_document(outcome: TaskOutcome) -> dict[str, Any]:
    return {
        "agent_id": outcome.agent_id,
        "task_id": outcome.task_id,
        "task_type": outcome.task_type,
        "duration_s": outcome.duration_s,
        "success": outcome.success,
        "cpu_usage": outcome.cpu_usage,
        "memory_usage": outcome.memory_usage,
    }


def _outcome_of(data: Mapping[str, Any]) -> TaskOutcome:
    return TaskOutcome(
        agent_id=data["agent_id"],
        duration_s=float(data["duration_s"]),
        success=bool(data["success"]),
        task_id=data["task_id"],
        task_type=data["task_type"],
        cpu_usage=data["cpu_usage"],
        memory_usage=data["memory_usage"],
    )


@dataclass
class SharedCounters:
    """The balancer's selection and ejection counts as the log applies them, so every replica
    reports the same `/statistics`; `on_weights` applies a hybrid weight change."""

    count_selection: Callable[[str, str, bool, bool], None] = lambda _s, _a, _f, _p: None
    count_ejection: Callable[[], None] = lambda: None
    on_weights: Callable[[Mapping[str, float]], None] = lambda _w: None


def apply_event(tracker: AgentLoadTracker, event: FleetEvent, counters: SharedCounters) -> Any:
    """Apply `event` to `tracker` (with the base class's methods: a shared tracker overrides
    them to publish). Returns what the mutation returns (InFlightTask for a dispatch,
    CompletedTask for an outcome that closed a task, expired ids), or None when skipped."""
    data = event.data
    kind = event.kind
    base = AgentLoadTracker
    if kind == DISPATCH:
        task = TaskRequest(task_type=data["task_type"], task_id=data["task_id"])
        try:
            entry: InFlightTask = base.dispatch(
                tracker, data["agent_id"], task, data["predicted_service_s"], dispatched_at=event.at
            )
        except (DuplicateTaskError, TaskAlreadyCompletedError, UnknownAgentError):
            return None
        selection = data.get("selection")
        if selection is not None:
            counters.count_selection(selection[0], data["agent_id"], bool(selection[1]), bool(selection[2]))
        return entry
    if kind == OUTCOME:
        return _apply_outcome(tracker, event, counters)
    if kind == HEARTBEAT:
        try:
            base.heartbeat(
                tracker, data["agent_id"], data["cpu_usage"], data["memory_usage"], data["queue_length"]
            )
        except UnknownAgentError:
            return None
        return True
    if kind == EJECT:
        if apply_ejection(tracker, data["agent_id"], float(data["until"]), int(data["times_before"])):
            counters.count_ejection()
            return True
        return None
    if kind == REGISTER:
        base.register(tracker, agent_of(data["agent"]), registered_at=event.at)
        return True
    if kind == REMOVE:
        if not base.has_agent(tracker, data["agent_id"]):
            return None
        base.remove(tracker, data["agent_id"])
        return True
    if kind == EXPIRE:
        return base.expire_stale(tracker, event.at)
    if kind == WEIGHTS:
        counters.on_weights(data["weights"])
        return True
    return None  # EPOCH


def _apply_outcome(tracker: AgentLoadTracker, event: FleetEvent, counters: SharedCounters) -> Any:
    """Close the task when it is in flight on that agent; learn from an outcome whose task is
    not (expired, dispatched before the shared state was founded, or without a task id); skip
    one already finished or owned by another agent."""
    outcome = _outcome_of(event.data)
    task_id = outcome.task_id
    base = AgentLoadTracker
    if not base.has_agent(tracker, outcome.agent_id):
        return None
    if task_id is not None:
        owner = base.in_flight_owner(tracker, task_id)
        if owner == outcome.agent_id:
            completed: CompletedTask = base.complete(tracker, outcome, event.at)
            return completed
        if owner is not None or is_finished(tracker, task_id):
            return None
    base.learn(tracker, outcome, event.at)
    return None


def is_finished(tracker: AgentLoadTracker, task_id: str) -> bool:
    with tracker._lock:
        return task_id in tracker._finished


def apply_ejection(tracker: AgentLoadTracker, agent_id: str, until: float, times_before: int) -> bool:
    """`eject`, once per ejection: a second replica that decided the same ejection from the
    same failures (or a replay) finds `times_ejected` already past `times_before`."""
    with tracker._lock:
        record = tracker._agents.get(agent_id)
        if record is None or record.times_ejected != times_before:
            return False
        AgentLoadTracker.eject(tracker, agent_id, until)
        return True
