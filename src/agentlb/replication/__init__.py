"""Replicated serving: several agentlb processes share one live fleet state.

With `AGENTLB_REDIS_URL` set, the service's tracker is a `SharedTracker`: reads stay local,
every mutation goes through a `RedisFleetLog` that every replica applies in the same order.
Without it nothing here runs (the embedded default is a plain `AgentLoadTracker`).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.predictor.base import PredictorRef
from agentlb.regimes import RegimeConfig
from agentlb.replication.events import FleetEvent, SharedCounters, apply_event
from agentlb.replication.shared import InProcessLog, SharedTracker, SlotChange
from agentlb.replication.state import export_state, import_state, state_digest
from agentlb.settings import Settings
from agentlb.store import Store
from agentlb.tracker import AgentLoadTracker, Clock, TrackerConfig

if TYPE_CHECKING:  # redis is imported only when a replica joins a fleet
    from agentlb.replication.redis_log import RedisFleetLog, ReplicaStatus

__all__ = [
    "FleetEvent",
    "InProcessLog",
    "Replica",
    "SharedCounters",
    "SharedTracker",
    "SlotChange",
    "apply_event",
    "export_state",
    "import_state",
    "join_fleet",
    "open_live_state",
    "state_digest",
]


@dataclass(frozen=True)
class LiveState:
    """What serves selections: the tracker, the balancer on it, this replica's membership of
    the shared state (None in the embedded default) and what the start restored."""

    tracker: AgentLoadTracker
    balancer: Balancer
    replica: Replica | None
    report: Any


def open_live_state(settings: Settings, store: Store, predictor: PredictorRef, clock: Clock) -> LiveState:
    """The embedded default: a tracker rebuilt from the store and the persisted hybrid
    weights. With AGENTLB_REDIS_URL: a SharedTracker that joins the replicas' shared state
    (loaded from their checkpoint, or founded from the store)."""
    config = TrackerConfig(
        ewma_alpha=settings.ewma_alpha,
        peak_ewma_decay_s=settings.peak_ewma_decay_s,
        in_flight_expiry_s=settings.in_flight_expiry_s,
        regimes=RegimeConfig(enabled=settings.regime_detection, memory_s=settings.regime_memory_s),
    )
    balancer_config = BalancerConfig.from_settings(settings)
    if settings.redis_url:
        shared = SharedTracker(clock, config)
        balancer = Balancer(shared, predictor, balancer_config, settings.seed)
        replica = join_fleet(settings, store, shared, balancer)
        return LiveState(shared, balancer, replica, replica.status())
    tracker = AgentLoadTracker(clock, config)
    report = store.restore_tracker(tracker, settings.in_flight_expiry_s, clock())
    balancer = Balancer(tracker, predictor, balancer_config, settings.seed)
    weights = store.latest_weights()
    if weights:
        balancer.set_hybrid_weights(weights)
    return LiveState(tracker, balancer, None, report)


class Replica:
    """One replica's membership of the shared state, as the service sees it."""

    def __init__(self, tracker: SharedTracker, log: RedisFleetLog, redis_url: str) -> None:
        self.tracker = tracker
        self.log = log
        self.redis_url = redis_url
        self.since = time.time()

    def catch_up(self) -> None:
        self.log.catch_up()

    def publish_weights(self, weights: Mapping[str, float]) -> None:
        self.tracker.publish_weights(weights)

    def status(self) -> ReplicaStatus:
        return self.log.status()

    def health_reasons(self) -> list[str]:
        status = self.log.status()
        where = _redacted(self.redis_url)
        if status.down_reason is not None:
            since = "" if status.down_since is None else f" for {time.time() - status.down_since:.0f} s"
            return [
                f"shared fleet state unavailable{since} (Redis at {where}: {status.down_reason}); "
                "selections continue from this replica's local state and it re-syncs when Redis answers"
            ]
        if not status.live:
            return [f"re-syncing the shared fleet state from Redis at {where}"]
        return []

    def close(self) -> None:
        self.log.close()


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def join_fleet(settings: Settings, store: Store, tracker: SharedTracker, balancer: Balancer) -> Replica:
    """Attach `tracker` to the Redis fleet log and join (or found) the shared state."""
    from agentlb.replication.redis_log import Extras, RedisFleetLog

    assert settings.redis_url is not None
    replica: Replica | None = None

    def count_selection(strategy: str, agent_id: str, fallback: bool, panic: bool) -> None:
        stats = balancer.stats
        stats.selections_by_strategy[strategy] += 1
        stats.selections_by_agent[agent_id] += 1
        stats.fallbacks += int(fallback)
        stats.panics += int(panic)

    def count_ejection() -> None:
        balancer.stats.ejections += 1

    def export_extras() -> dict[str, Any]:
        stats = balancer.stats
        return {
            "selections_by_strategy": dict(stats.selections_by_strategy),
            "selections_by_agent": dict(stats.selections_by_agent),
            "fallbacks": stats.fallbacks,
            "ejections": stats.ejections,
            "panics": stats.panics,
            "weights": balancer.hybrid_weights,
            "since": replica.since if replica is not None else time.time(),
        }

    def load_extras(extras: Mapping[str, Any]) -> None:
        stats = balancer.stats
        stats.selections_by_strategy = Counter(extras["selections_by_strategy"])
        stats.selections_by_agent = Counter(extras["selections_by_agent"])
        stats.fallbacks = int(extras["fallbacks"])
        stats.ejections = int(extras["ejections"])
        stats.panics = int(extras["panics"])
        balancer.set_hybrid_weights(extras["weights"])
        if replica is not None:
            replica.since = float(extras["since"])

    def rebuild() -> AgentLoadTracker:
        fresh = AgentLoadTracker(tracker.clock, tracker.config)
        store.restore_tracker(fresh, settings.in_flight_expiry_s, tracker.clock())
        return fresh

    weights = store.latest_weights()
    if weights:
        balancer.set_hybrid_weights(weights)

    def set_weights(weights: Mapping[str, float]) -> None:
        balancer.set_hybrid_weights(weights)

    counters = SharedCounters(count_selection, count_ejection, set_weights)
    log = RedisFleetLog(
        settings.redis_url,
        settings.redis_prefix,
        tracker,
        counters,
        Extras(export_extras, load_extras),
        rebuild,
        replica_id=replica_name(),
        checkpoint_interval_s=settings.redis_checkpoint_interval_s,
    )
    tracker.attach(log)
    replica = Replica(tracker, log, settings.redis_url)
    log.start()
    return replica


def _redacted(url: str) -> str:
    """host:port/db of a Redis URL, without credentials."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]


def describe(
    replica: Replica | None, tracker: AgentLoadTracker, include_state: bool = False
) -> dict[str, Any]:
    """How this process holds the live state, and a digest of that state at its log position:
    replicas at the same `seq` with the same `state_digest` hold identical state, field by field."""
    if replica is None:
        state: dict[str, Any] = {"tracker": export_state(tracker)}
        info: dict[str, Any] = {"mode": "embedded", "state_digest": state_digest(state)}
    else:
        seq, digest, state = replica.log.digest()
        status = replica.status()
        info = {
            "mode": "redis",
            "replica_id": status.replica_id,
            "live": status.live,
            "diverged": status.diverged,
            "epoch": status.epoch,
            "position": status.position,
            "seq": seq,
            "events_applied": status.events_applied,
            "resyncs": status.resyncs,
            "foundings": status.foundings,
            "down_reason": status.down_reason,
            "state_digest": digest,
        }
    if include_state:
        info["state"] = state
    return info
