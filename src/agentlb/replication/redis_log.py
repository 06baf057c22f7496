"""The fleet event log of replicas: one Redis Stream, applied in order by every replica.

Keys (one hash tag, so one Redis Cluster slot): `{prefix}:events` the stream; `:seq` the
events' sequence number (a gap means this replica missed events: it re-syncs); `:epoch` the
shared state's founding number; `:checkpoint` the state at a stream position (its `seq`);
`:slots:<agent>` the task ids holding that agent's slots (the capacity check);
`:slot-agents` the agents with slots; `:founding`, `:checkpointing` short locks.

- Publish (one Lua script, one round trip): check the epoch, take or release the event's
  slots (a full agent refuses the reservation), number the event, XADD it, and return every
  event after this replica's position, which it applies in order (its own included).
- A consumer thread applies what other replicas publish while this one is idle.
- A replica that starts, or whose Redis came back, loads the checkpoint and applies the
  stream after it. When there is none (a new Redis, or one that lost its data), or when this
  replica served alone meanwhile, it founds a new epoch: it rebuilds the state from the
  database (the durable agents, dispatches and outcomes), freezes publishing for the short
  while it replays the log's last seconds over that state (idempotently: what the database
  already holds is skipped), then writes the checkpoint and the slots; every other replica
  re-syncs from it. Every replica then holds the same state, field by field.
- Redis down: this replica serves from its local state (`status().live` is False, /health
  is degraded and says why) and re-syncs by itself when Redis answers again.
- A checkpoint is written every `checkpoint_interval_s` by one replica, and the stream is
  trimmed to it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from agentlb.errors import AgentLBError, ReservationLostError
from agentlb.observability import log_event
from agentlb.replication.events import EPOCH, FleetEvent, SharedCounters, apply_event
from agentlb.replication.hot_script import HotScript
from agentlb.replication.shared import SlotChange
from agentlb.replication.state import export_state, import_state, state_digest
from agentlb.tracker import AgentLoadTracker

log = logging.getLogger("agentlb.replication")

CATCH_UP_COUNT = 1000
STREAM_MAXLEN = 1_000_000  # a bound even if no checkpoint is written (trimmed approximately)
REPLAY_S = 10.0  # a founder replays this much of the log over the database's state
FOUNDING_LOCK_MS = 30_000
SYNC_WAIT_S = 3.0  # a publisher waits this long for a re-sync before serving alone
RETRY_S = 0.5  # between attempts to reach a Redis that is down
READ_BLOCK_MS = 500
FOLLOW_IDLE_S = 0.005  # the consumer reads the log when nothing applied it for this long
SOCKET_TIMEOUT_S = 2.0

_PUBLISH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'NOSTATE'} end
if epoch ~= ARGV[1] then return {'STALE', epoch} end
local op = ARGV[2]
if op == 'reserve' then
  local task = ARGV[9]
  if redis.call('SISMEMBER', KEYS[4], task) == 1 then return {'DUPLICATE'} end
  if ARGV[3] ~= '' and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[3]) then
    return {'FULL', '', redis.call('XRANGE', KEYS[3], '(' .. ARGV[6], '+', 'COUNT', ARGV[7])}
  end
  redis.call('SADD', KEYS[4], task)
  redis.call('SADD', KEYS[5], ARGV[4])
elseif op == 'release' then
  for i = 9, #ARGV do redis.call('SREM', KEYS[4], ARGV[i]) end
elseif op == 'clear' then
  redis.call('DEL', KEYS[4])
  redis.call('SREM', KEYS[5], ARGV[4])
end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 's', seq, 'e', ARGV[5])
return {'OK', id, redis.call('XRANGE', KEYS[3], '(' .. ARGV[6], '+', 'COUNT', ARGV[7])}
"""

_FREEZE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {'LOST'} end
redis.call('SET', KEYS[1], 'founding')
return {'OK', redis.call('XRANGE', KEYS[3], ARGV[2], '+')}
"""

_FOUND = """
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return {'LOST'} end
for _, agent in ipairs(redis.call('SMEMBERS', KEYS[4])) do redis.call('DEL', ARGV[4] .. agent) end
redis.call('DEL', KEYS[4])
for agent, ids in pairs(cjson.decode(ARGV[2])) do
  for _, task in ipairs(ids) do redis.call('SADD', ARGV[4] .. agent, task) end
  if #ids > 0 then redis.call('SADD', KEYS[4], agent) end
end
local epoch = tostring(redis.call('INCR', KEYS[6]))
redis.call('SET', KEYS[1], epoch)
local seq = redis.call('INCR', KEYS[2])
local marker = '{"k":"epoch","t":0,"d":{"epoch":"' .. epoch .. '"}}'
local id = redis.call('XADD', KEYS[3], '*', 's', seq, 'e', marker)
redis.call('HSET', KEYS[5], 'epoch', epoch, 'id', id, 'seq', seq, 'state', ARGV[3])
redis.call('XTRIM', KEYS[3], 'MINID', id)
redis.call('DEL', KEYS[7])
return {'OK', epoch, id, seq}
"""

_CHECKPOINT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = redis.call('HGET', KEYS[2], 'seq')
if current and tonumber(current) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'id', ARGV[2], 'seq', ARGV[3], 'state', ARGV[4])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[2])
return 1
"""

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NeedsSync(Exception):
    """This replica's position no longer follows the log (a gap, or a new epoch)."""


class SharedStateUnavailableError(AgentLBError):
    """The shared state could not be joined (Redis or the database did not answer)."""


@dataclass(frozen=True)
class ReplicaStatus:
    replica_id: str
    live: bool
    diverged: bool
    epoch: str | None
    position: str
    seq: int
    down_reason: str | None
    down_since: float | None
    events_applied: int
    resyncs: int
    foundings: int


@dataclass
class Extras:
    """State kept beside the tracker in a checkpoint (the balancer's counts and weights)."""

    export: Callable[[], dict[str, Any]]
    load: Callable[[Mapping[str, Any]], None]


class _Keys:
    def __init__(self, prefix: str) -> None:
        base = "{" + prefix + "}"
        self.events = f"{base}:events"
        self.seq = f"{base}:seq"
        self.epoch = f"{base}:epoch"
        self.epochs = f"{base}:epochs"
        self.checkpoint = f"{base}:checkpoint"
        self.slot_prefix = f"{base}:slots:"
        self.slot_agents = f"{base}:slot-agents"
        self.founding = f"{base}:founding"
        self.checkpointing = f"{base}:checkpointing"

    def slots(self, agent_id: str) -> str:
        return self.slot_prefix + agent_id


class RedisFleetLog:
    """A `FleetLog` shared by replicas through Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        tracker: AgentLoadTracker,
        counters: SharedCounters,
        extras: Extras,
        rebuild: Callable[[], AgentLoadTracker],
        replica_id: str | None = None,
        checkpoint_interval_s: float = 30.0,
    ) -> None:
        self.url = url
        self.keys = _Keys(prefix)
        self.tracker = tracker
        self.counters = counters
        self.extras = extras
        self.rebuild = rebuild
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.checkpoint_interval_s = checkpoint_interval_s
        # typed Any: redis-py types replies as bytes | str whatever decode_responses says
        self.redis: Any = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
        # The consumer blocks in XREAD on a connection of its own.
        self.reader: Any = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S + READ_BLOCK_MS / 1000.0,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
        self._publish_lua = HotScript(self.redis, _PUBLISH)
        self._freeze_lua = self.redis.register_script(_FREEZE)
        self._found_lua = self.redis.register_script(_FOUND)
        self._checkpoint_lua = self.redis.register_script(_CHECKPOINT)
        self._release_lua = self.redis.register_script(_RELEASE_LOCK)
        self._lock = threading.RLock()  # held while applying the log (and publishing)
        self._sync_lock = threading.Lock()  # one re-sync at a time
        self._live = False
        self._live_event = threading.Event()
        self._diverged = False
        self._epoch: str | None = None
        self._last_id = "0-0"
        self._last_seq = 0
        self._down_reason: str | None = "not joined yet"
        self._down_since: float | None = time.time()
        self._events_applied = 0
        self._last_apply = 0.0
        self._resyncs = 0
        self._foundings = 0
        self._last_checkpoint = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Join the shared state (or found it), then follow the log in a background thread.
        With Redis down, serve from the database's state until it answers."""
        try:
            self._sync()
        except (redis.RedisError, AgentLBError) as exc:
            self._mark_down(exc)
            with self._lock:
                import_state(self.tracker, export_state(self.rebuild()))
                self._diverged = True
        self._thread = threading.Thread(target=self._follow, name="agentlb-fleet-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_BLOCK_MS / 1000.0 + SOCKET_TIMEOUT_S + 1.0)
        with self._lock:
            self._publish_lua.close()
        self.redis.close()
        self.reader.close()

    def status(self) -> ReplicaStatus:
        with self._lock:
            return ReplicaStatus(
                self.replica_id,
                self._live,
                self._diverged,
                self._epoch,
                self._last_id,
                self._last_seq,
                self._down_reason,
                self._down_since,
                self._events_applied,
                self._resyncs,
                self._foundings,
            )

    def digest(self) -> tuple[int, str, dict[str, Any]]:
        """(seq, digest, state) at one position of the log."""
        with self._lock:
            state = {"tracker": export_state(self.tracker), "extras": self.extras.export()}
            return self._last_seq, state_digest(state), state

    # --- publishing -----------------------------------------------------------------
    def publish(self, event: FleetEvent, slots: SlotChange) -> Any:
        deadline = time.monotonic() + SYNC_WAIT_S
        while True:
            if not self._live:
                if self._down_reason is not None or time.monotonic() >= deadline:
                    return self._apply_alone(event)
                self._sync_here()  # a new epoch: join it (or wait for the thread that does)
                continue
            with self._lock:
                if not self._live:
                    continue
                try:
                    reply = self._run_publish(event, slots)
                except redis.RedisError as exc:
                    self._mark_down(exc)
                    return self._apply_alone(event)
                status = reply[0]
                if status == "OK":
                    return self._apply_through(reply[1], reply[2])
                if status == "FULL":
                    self._apply_entries_or_resync(reply[2])
                    raise ReservationLostError(slots.agent_id)
                if status == "DUPLICATE":
                    return None
                # STALE or NOSTATE: a new epoch is being founded, or must be
                self._set_not_live(None)

    def _sync_here(self) -> None:
        """Re-sync in this thread unless another one is at it; then wait a moment for it."""
        if self._sync_lock.acquire(blocking=False):
            try:
                if not self._live:
                    self._sync(wait_s=SYNC_WAIT_S)
            except SharedStateUnavailableError:
                pass  # another replica is still founding: serve alone for now
            except (redis.RedisError, AgentLBError) as exc:
                self._mark_down(exc)
            finally:
                self._sync_lock.release()
        else:
            self._live_event.wait(0.01)

    def catch_up(self) -> None:
        """Apply what the log holds after this replica's position (before a decision that
        must see the other replicas' latest events, e.g. an outcome's owner check)."""
        if not self._live:
            return
        with self._lock:
            try:
                entries = self.redis.xrange(self.keys.events, f"({self._last_id}", "+", count=CATCH_UP_COUNT)
            except redis.RedisError as exc:
                self._mark_down(exc)
                return
            self._apply_entries_or_resync(entries)

    def _run_publish(self, event: FleetEvent, slots: SlotChange) -> Any:
        k = self.keys
        slot_key = k.slots(slots.agent_id) if slots.agent_id else k.slot_agents
        limit = "" if slots.limit is None else str(slots.limit)
        return self._publish_lua(
            keys=[k.epoch, k.seq, k.events, slot_key, k.slot_agents],
            args=[
                self._epoch or "",
                slots.op,
                limit,
                slots.agent_id,
                event.encode(),
                self._last_id,
                CATCH_UP_COUNT,
                STREAM_MAXLEN,
                *slots.task_ids,
            ],
        )

    def _apply_through(self, own_id: str, entries: list[Any]) -> Any:
        """Apply the log up to this replica's own event (caller holds the lock)."""
        results = self._apply_entries_or_resync(entries)
        while own_id not in results and self._live:
            more = self.redis.xrange(self.keys.events, f"({self._last_id}", own_id, count=CATCH_UP_COUNT)
            if not more:
                break
            results.update(self._apply_entries_or_resync(more))
        return results.get(own_id)

    def _apply_alone(self, event: FleetEvent) -> Any:
        """Serve from local state (Redis down or not re-synced in time): this replica's state
        now differs from the log, so it founds a new epoch when Redis answers again."""
        with self._lock:
            self._diverged = True
            return apply_event(self.tracker, event, self.counters)

    # --- following the log ------------------------------------------------------------
    def _apply_entries_or_resync(self, entries: list[Any]) -> dict[str, Any]:
        try:
            return self._apply_entries(entries)
        except NeedsSync as exc:
            self._set_not_live(None)
            log_event(log, "fleet_log_resync", logging.WARNING, reason=str(exc), replica=self.replica_id)
            return {}

    def _apply_entries(self, entries: list[Any]) -> dict[str, Any]:
        """Apply stream entries in order (caller holds the lock); skip those already applied."""
        results: dict[str, Any] = {}
        for entry_id, raw in entries:
            # XRANGE through redis-py gives a dict, from a Lua script a flat list
            fields = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=True))
            seq = int(fields["s"])
            if seq <= self._last_seq:
                continue
            if seq != self._last_seq + 1:
                raise NeedsSync(f"gap in the fleet log: event {seq} after {self._last_seq}")
            event = FleetEvent.decode(fields["e"])
            if event.kind == EPOCH and event.data.get("epoch") != self._epoch:
                raise NeedsSync(f"the shared state was founded again (epoch {event.data.get('epoch')})")
            results[entry_id] = apply_event(self.tracker, event, self.counters)
            self._last_id, self._last_seq = entry_id, seq
            self._events_applied += 1
        self._last_apply = time.monotonic()
        return results

    def _follow(self) -> None:
        while not self._stop.is_set():
            if not self._live:
                with self._sync_lock:
                    try:
                        if not self._live:
                            self._sync()
                    except (redis.RedisError, AgentLBError) as exc:
                        self._mark_down(exc)
                if not self._live:
                    self._stop.wait(RETRY_S)
                continue
            if time.monotonic() - self._last_apply < FOLLOW_IDLE_S:
                # This replica's own publishes are applying the log (each catches up to its
                # event): waking on every event too would only contend for the lock and the GIL.
                self._stop.wait(FOLLOW_IDLE_S)
                self._checkpoint_or_mark_down()
                continue
            try:
                reply = self.reader.xread(
                    {self.keys.events: self._last_id}, count=CATCH_UP_COUNT, block=READ_BLOCK_MS
                )
                if reply:
                    with self._lock:
                        if self._live:
                            self._apply_entries_or_resync(reply[0][1])
                self._maybe_checkpoint()
            except redis.RedisError as exc:
                self._mark_down(exc)
                self._stop.wait(RETRY_S)

    def _checkpoint_or_mark_down(self) -> None:
        try:
            self._maybe_checkpoint()
        except redis.RedisError as exc:
            self._mark_down(exc)

    def _mark_down(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_reason is None
            self._set_not_live(f"{type(exc).__name__}: {exc}")
        if first:
            log_event(log, "fleet_log_unavailable", logging.WARNING, reason=str(exc), replica=self.replica_id)

    def _set_not_live(self, down_reason: str | None) -> None:
        self._live = False
        self._live_event.clear()
        if down_reason is not None:
            if self._down_since is None:
                self._down_since = time.time()
            self._down_reason = down_reason

    # --- joining: load the checkpoint, or found a new epoch ----------------------------
    def _sync(self, wait_s: float = FOUNDING_LOCK_MS / 1000.0 + 5.0) -> None:
        """Become live: found a new epoch when there is none (or this replica diverged),
        else load the checkpoint and apply the log after it. Raises RedisError when Redis
        does not answer, SharedStateUnavailableError when another replica's founding takes
        longer than `wait_s`."""
        deadline = time.monotonic() + wait_s
        failed_loads = 0
        while not self._stop.is_set():
            if not self.redis.exists(self.keys.founding):
                epoch = self.redis.get(self.keys.epoch)
                if epoch is None or epoch == "founding" or self._diverged or failed_loads >= 3:
                    if self._found():
                        return
                elif self._load_checkpoint(epoch):
                    return
                else:
                    failed_loads += 1
            if time.monotonic() > deadline:
                raise SharedStateUnavailableError(
                    "the shared fleet state is being founded by another replica"
                )
            time.sleep(0.02)

    def _load_checkpoint(self, epoch: str) -> bool:
        checkpoint = self.redis.hgetall(self.keys.checkpoint)
        if checkpoint.get("epoch") != epoch:
            return False
        document = json.loads(checkpoint["state"])
        with self._lock:
            import_state(self.tracker, document["tracker"])
            self.extras.load(document["extras"])
            self._epoch = epoch
            self._last_id, self._last_seq = checkpoint["id"], int(checkpoint["seq"])
            try:
                while True:
                    entries = self.redis.xrange(
                        self.keys.events, f"({self._last_id}", "+", count=CATCH_UP_COUNT
                    )
                    if not entries:
                        break
                    self._apply_entries(entries)
            except NeedsSync:
                return False
            self._become_live()
            self._resyncs += 1
        log_event(log, "fleet_state_loaded", replica=self.replica_id, epoch=epoch, seq=self._last_seq)
        return True

    def _found(self) -> bool:
        """Rebuild from the database and found a new epoch; False when another replica holds
        the founding lock."""
        token = uuid.uuid4().hex
        if not self.redis.set(self.keys.founding, token, nx=True, px=FOUNDING_LOCK_MS):
            return False
        try:
            seconds, micros = self.redis.time()
            since_ms = int(seconds) * 1000 + int(micros) // 1000 - int(REPLAY_S * 1000)
            fresh = self.rebuild()  # the database read, before publishing is frozen
            k = self.keys
            reply = self._freeze_lua(
                keys=[k.epoch, k.founding, k.events], args=[token, f"{max(since_ms, 0)}-0"]
            )
            if reply[0] != "OK":
                return False
            replay = SharedCounters()  # counts already in the extras
            for _entry_id, raw in reply[1]:
                fields = dict(zip(raw[::2], raw[1::2], strict=True))
                apply_event(fresh, FleetEvent.decode(fields["e"]), replay)
            with self._lock:
                extras = self.extras.export()
            state = {"tracker": export_state(fresh), "extras": {**extras, "since": time.time()}}
            slots = {
                record.agent.id: list(record.in_flight)
                for record in fresh._agents.values()
                if record.in_flight
            }
            found = self._found_script(token, slots, state)
            if found[0] != "OK":
                return False
            _, epoch, entry_id, seq = found
            with self._lock:
                import_state(self.tracker, state["tracker"])
                self.extras.load(state["extras"])
                self._epoch = str(epoch)
                self._last_id, self._last_seq = entry_id, int(seq)
                self._diverged = False
                self._become_live()
                self._foundings += 1
            log_event(
                log, "fleet_state_founded", replica=self.replica_id, epoch=epoch, replayed=len(reply[1])
            )
            return True
        finally:
            self._release_lua(keys=[self.keys.founding], args=[token])

    def _found_script(self, token: str, slots: dict[str, list[str]], state: dict[str, Any]) -> Any:
        k = self.keys
        return self._found_lua(
            keys=[k.epoch, k.seq, k.events, k.slot_agents, k.checkpoint, k.epochs, k.founding],
            args=[token, json.dumps(slots), json.dumps(state), k.slot_prefix],
        )

    def _become_live(self) -> None:
        self._live = True
        self._down_reason = None
        self._down_since = None
        self._live_event.set()

    # --- checkpoints --------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_checkpoint < self.checkpoint_interval_s:
            return
        self._last_checkpoint = now
        lock_ms = max(int(self.checkpoint_interval_s * 900), 100)
        if not self.redis.set(self.keys.checkpointing, self.replica_id, nx=True, px=lock_ms):
            return
        self.write_checkpoint()

    def write_checkpoint(self) -> bool:
        """Store this replica's state at its position as the checkpoint and trim the stream
        to it; False when the epoch moved on or a newer checkpoint exists."""
        with self._lock:
            if not self._live or self._epoch is None:
                return False
            state = {"tracker": export_state(self.tracker), "extras": self.extras.export()}
            epoch, entry_id, seq = self._epoch, self._last_id, self._last_seq
        k = self.keys
        written = self._checkpoint_lua(
            keys=[k.epoch, k.checkpoint, k.events], args=[epoch, entry_id, seq, json.dumps(state)]
        )
        return bool(written)
