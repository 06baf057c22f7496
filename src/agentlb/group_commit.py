"""Group commit for the hot writes (dispatch records and outcomes).

Requests enqueue their write and wait until one writer thread has committed the batch holding
it: PostgreSQL's `commit_delay` idea without the delay. While the writer commits one batch,
the next one gathers, so under load a transaction (BEGIN, executemany, COMMIT, and on SQLite
the WAL append) is shared by every request that arrived meanwhile, and under no load a write
waits for nobody. Durability is unchanged: a waiter is only woken after its batch committed
(or failed, and then with the error), so an acknowledged write is in the store.

Waiters are either asyncio futures (the API's event loop, woken with one `call_soon_threadsafe`
per loop per batch) or threading events (synchronous callers: CLI, scripts, threadpool routes).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agentlb.domain import SelectionResult, TaskOutcome
from agentlb.errors import AgentLBError, StoreUnavailableError
from agentlb.store import OutcomeWrite, Store

log = logging.getLogger("agentlb.group_commit")

T = TypeVar("T")
MAX_BATCH = 512
CLOSE_TIMEOUT_S = 30.0


class PendingWrite(Generic[T]):
    """One queued write. The writer settles it once its batch committed (value) or failed
    (error); `wait` / `wait_async` then return the value or raise the error."""

    __slots__ = ("_done", "_error", "_event", "_future", "_loop", "_value", "payload")

    def __init__(self, payload: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self.payload = payload
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = False
        self._loop = loop
        self._event: threading.Event | None = None
        self._future: asyncio.Future[None] | None = None
        if loop is None:
            self._event = threading.Event()
        else:
            self._future = loop.create_future()

    @classmethod
    def settled(cls, value: T) -> PendingWrite[T]:
        """A handle that needs no writer (e.g. a write skipped while the database is down)."""
        pending: PendingWrite[T] = cls(None, None)
        pending._settle(value, None)
        return pending

    def wait(self) -> T:
        """Block until the batch holding this write is committed (synchronous callers)."""
        if not self._done:
            if self._event is None:
                raise RuntimeError("this write was queued for an event loop: use `await wait_async()`")
            self._event.wait()
        return self._result()

    async def wait_async(self) -> T:
        """Await the commit of the batch holding this write (callers on an event loop)."""
        if not self._done:
            if self._future is None:
                raise RuntimeError("this write was queued without an event loop: use `wait()`")
            await self._future
        return self._result()

    def _result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def _settle(self, value: T | None, error: BaseException | None) -> None:
        """Writer thread: record the answer (`_done` last); waking happens per batch in `_wake`."""
        self._value = value
        self._error = error
        self._done = True


def _resolve(futures: Sequence[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a waiter whose request was cancelled leaves its future cancelled
            future.set_result(None)


@dataclass
class GroupCommitStats:
    """How much batching happened: rows per transaction is the CPU the write path saves."""

    submitted: int = 0
    batches: int = 0
    dispatches: int = 0
    outcomes: int = 0
    largest_batch: int = 0
    failed_batches: int = 0


Entry = tuple[str, PendingWrite[Any]]


class GroupCommitWriter:
    """A single writer thread committing queued dispatch records and outcomes in batches.

    Writes from an event loop are first gathered on the loop: everything its current iteration
    queued is handed to the writer in one piece (one `call_soon` per iteration). Handing each
    write over on its own wakes the writer per request, and the two threads then trade the GIL
    at every step: measured, that cost more CPU than the transaction it saved.
    """

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self.stats = GroupCommitStats()
        self._queue: queue.SimpleQueue[list[Entry] | None] = queue.SimpleQueue()
        self._gathering: dict[asyncio.AbstractEventLoop, list[Entry]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="agentlb-group-commit", daemon=True)
        self._thread.start()

    # --- callers ----------------------------------------------------------------------------
    def submit_dispatch(
        self, result: SelectionResult, loop: asyncio.AbstractEventLoop | None = None
    ) -> PendingWrite[AgentLBError | None]:
        """Queue a dispatch record. Its value is None when committed, else the error (the
        dispatch log is best effort, so a failed write is an answer, not an exception).
        With `loop` (the running loop, called from it) the handle is awaited, else waited."""
        pending: PendingWrite[AgentLBError | None] = PendingWrite(result, loop)
        self._put(("dispatch", pending), loop)
        return pending

    def submit_outcome(
        self, outcome: TaskOutcome, finished_at: float, loop: asyncio.AbstractEventLoop | None = None
    ) -> PendingWrite[OutcomeWrite]:
        """Queue an outcome; waiting returns the OutcomeWrite or raises what `record_outcome`
        would (ConflictingOutcomeError, InvalidOutcomeError, StoreUnavailableError...)."""
        pending: PendingWrite[OutcomeWrite] = PendingWrite((outcome, finished_at), loop)
        self._put(("outcome", pending), loop)
        return pending

    def submit_call(self, call: Callable[[], T]) -> PendingWrite[T]:
        """Run `call` on the writer thread, after the hot writes of its batch: other writes (e.g.
        shadow predictions) then never contend with the hot ones for the database's write lock
        (on SQLite, a contended writer sleeps in its busy handler)."""
        pending: PendingWrite[T] = PendingWrite(call, None)
        self._put(("call", pending), None)
        return pending

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(CLOSE_TIMEOUT_S)

    def _put(self, entry: Entry, loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            if self._closed:
                raise StoreUnavailableError("the service is shutting down: write not accepted")
            self.stats.submitted += 1
            if loop is None:
                self._queue.put([entry])
                return
        gathering = self._gathering.get(loop)
        if gathering is None:
            gathering = self._gathering[loop] = []
            loop.call_soon(self._hand_over, loop)
        gathering.append(entry)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop, once per iteration that queued writes: pass them to the writer at once."""
        entries = self._gathering.pop(loop, [])
        with self._lock:
            if not self._closed:
                self._queue.put(entries)
                return
        error = StoreUnavailableError("the service is shutting down: write not accepted")
        for _kind, pending in entries:
            pending._settle(None, error)
        _wake([pending for _kind, pending in entries])

    # --- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            handed: list[Entry] | None = self._queue.get()
            batch: list[Entry] = []
            while True:
                if handed is None:
                    stopping = True
                else:
                    batch.extend(handed)
                if len(batch) >= self.max_batch:
                    break
                try:
                    handed = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[str, PendingWrite[Any]]]) -> None:
        dispatches = [pending for kind, pending in batch if kind == "dispatch"]
        outcomes = [pending for kind, pending in batch if kind == "outcome"]
        calls = [pending for kind, pending in batch if kind == "call"]
        try:
            if dispatches:
                self._commit_dispatches(dispatches)
            if outcomes:
                self._commit_outcomes(outcomes)
            for pending in calls:
                try:
                    pending._settle(pending.payload(), None)
                except AgentLBError as exc:
                    pending._settle(None, exc)
        except Exception as exc:  # a bug must reach every waiter (re-raised there), not hang them
            log.exception("group commit failed unexpectedly", extra={"event": "group_commit_failed"})
            for _kind, pending in batch:
                if not pending._done:
                    pending._settle(None, exc)
        finally:
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            _wake([pending for _kind, pending in batch])

    def _commit_dispatches(self, dispatches: list[PendingWrite[Any]]) -> None:
        try:
            errors: Sequence[AgentLBError | None] = self.store.record_dispatches(
                [pending.payload for pending in dispatches]
            )
        except StoreUnavailableError as exc:
            self.stats.failed_batches += 1
            errors = [exc] * len(dispatches)
        for pending, error in zip(dispatches, errors, strict=True):
            pending._settle(error, None)
        self.stats.dispatches += len(dispatches)

    def _commit_outcomes(self, outcomes: list[PendingWrite[Any]]) -> None:
        try:
            answers = self.store.record_outcomes([pending.payload for pending in outcomes])
        except StoreUnavailableError as exc:
            self.stats.failed_batches += 1
            for pending in outcomes:
                pending._settle(None, exc)
            return
        for pending, answer in zip(outcomes, answers, strict=True):
            if isinstance(answer, OutcomeWrite):
                pending._settle(answer, None)
            else:
                pending._settle(None, answer)
        self.stats.outcomes += len(outcomes)


def _wake(batch: Sequence[PendingWrite[Any]]) -> None:
    """Wake every waiter of a batch: events directly, futures with one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in batch:
        if pending._event is not None:
            pending._event.set()
        elif pending._future is not None and pending._loop is not None:
            by_loop.setdefault(pending._loop, []).append(pending._future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures)
        except RuntimeError:
            log.warning(
                "event loop closed before its writes were acknowledged",
                extra={"event": "group_commit_loop_closed", "waiters": len(futures)},
            )
