"""A tracker's whole state as a JSON document (the shared state's checkpoint) and back.

Everything the tracker learned goes in (floats bit for bit: json writes them with repr),
nothing it caches: a replica that loads a checkpoint and applies the log after it holds the
same state as one that applied the whole log. The digest of the document is how replicas
compare their state field by field.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from typing import Any

from agentlb.domain import InFlightTask
from agentlb.regimes import RegimeDetector
from agentlb.replication.events import agent_document, agent_of
from agentlb.tracker import TREND_WINDOW, AgentLoadTracker, _AgentRecord

STATE_VERSION = 1


def export_state(tracker: AgentLoadTracker) -> dict[str, Any]:
    """The tracker's learned state (agents in registration order, in-flight tasks in dispatch
    order, finished task ids oldest first, the fleet's running EWMA sums)."""
    with tracker._lock:
        return {
            "version": STATE_VERSION,
            "agents": [_record_document(r) for r in tracker._agents.values()],
            "finished": [[t, a, d, s] for t, (a, d, s) in tracker._finished.items()],
            "type_sums": dict(tracker._type_sums),
            "type_counts": dict(tracker._type_counts),
            "overall_sum": tracker._overall_sum,
            "overall_count": tracker._overall_count,
        }


def import_state(tracker: AgentLoadTracker, state: dict[str, Any]) -> None:
    """Replace the tracker's state with `state` (from `export_state`)."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"fleet state version {state.get('version')!r}, expected {STATE_VERSION}")
    with tracker._lock:
        tracker._agents = {}
        tracker._task_agent = {}
        for document in state["agents"]:
            record = _record_of(document)
            tracker._agents[record.agent.id] = record
            for task_id in record.in_flight:
                tracker._task_agent[task_id] = record.agent.id
        tracker._finished = OrderedDict((t, (a, float(d), bool(s))) for t, a, d, s in state["finished"])
        tracker._type_sums = {k: float(v) for k, v in state["type_sums"].items()}
        tracker._type_counts = {k: int(v) for k, v in state["type_counts"].items()}
        tracker._overall_sum = float(state["overall_sum"])
        tracker._overall_count = int(state["overall_count"])
        tracker._fleet_cache = None
        tracker._republish_regimes()
        tracker._rebuild_all()


def canonical(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def state_digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(state).encode()).hexdigest()


def _record_document(r: _AgentRecord) -> dict[str, Any]:
    return {
        "agent": agent_document(r.agent),
        "registered_at": r.registered_at,
        "history_only": r.history_only,
        "in_flight": [
            [e.task_id, e.task_type, e.dispatched_at, e.predicted_service_s] for e in r.in_flight.values()
        ],
        "completed": r.completed,
        "failed": r.failed,
        "success_rate": r.success_rate,
        "ewma_s": r.ewma_s,
        "ewma_by_type": dict(r.ewma_by_type),
        "var_by_type": dict(r.var_by_type),
        "samples_by_type": dict(r.samples_by_type),
        "peak_cost_s": r.peak_cost_s,
        "peak_stamp": r.peak_stamp,
        "cpu_usage": r.cpu_usage,
        "memory_usage": r.memory_usage,
        "queue_length": r.queue_length,
        "load_samples": [[t, n] for t, n in r.load_samples],
        "consecutive_failures": r.consecutive_failures,
        "ejected_until": r.ejected_until,
        "times_ejected": r.times_ejected,
        "regime": r.regime.to_document(),
        "dispatch_factor": dict(r.dispatch_factor),
        "pre_regime": None if r.pre_regime is None else list(r.pre_regime),
    }


def _record_of(d: dict[str, Any]) -> _AgentRecord:
    in_flight = {
        task_id: InFlightTask(task_id, task_type, float(at), None if p is None else float(p))
        for task_id, task_type, at, p in d["in_flight"]
    }
    return _AgentRecord(
        agent=agent_of(d["agent"]),
        registered_at=float(d["registered_at"]),
        history_only=bool(d["history_only"]),
        in_flight=in_flight,
        in_flight_log=None,
        completed=int(d["completed"]),
        failed=int(d["failed"]),
        success_rate=float(d["success_rate"]),
        ewma_s=None if d["ewma_s"] is None else float(d["ewma_s"]),
        ewma_by_type={k: float(v) for k, v in d["ewma_by_type"].items()},
        var_by_type={k: float(v) for k, v in d["var_by_type"].items()},
        samples_by_type={k: int(v) for k, v in d["samples_by_type"].items()},
        peak_cost_s=float(d["peak_cost_s"]),
        peak_stamp=float(d["peak_stamp"]),
        cpu_usage=float(d["cpu_usage"]),
        memory_usage=float(d["memory_usage"]),
        queue_length=int(d["queue_length"]),
        load_samples=deque(((float(t), int(n)) for t, n in d["load_samples"]), maxlen=TREND_WINDOW),
        consecutive_failures=int(d["consecutive_failures"]),
        ejected_until=float(d["ejected_until"]),
        times_ejected=int(d["times_ejected"]),
        # A checkpoint written before regimes were kept has none: the detector starts afresh.
        regime=RegimeDetector.from_document(d.get("regime", {})),
        dispatch_factor={k: float(v) for k, v in d.get("dispatch_factor", {}).items()},
        pre_regime=_pre_regime_of(d.get("pre_regime")),
    )


def _pre_regime_of(raw: list[Any] | None) -> tuple[float | None, dict[str, float], dict[str, float]] | None:
    if raw is None:
        return None
    ewma_s, by_type, var_by_type = raw
    return (
        None if ewma_s is None else float(ewma_s),
        {k: float(v) for k, v in by_type.items()},
        {k: float(v) for k, v in var_by_type.items()},
    )
