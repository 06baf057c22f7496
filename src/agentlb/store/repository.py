"""The task history store and agent registry: the only code in agentlb that speaks SQL.

Every write commits before it returns, so an outcome the API acknowledged survives `kill -9`.
Outcomes are idempotent by task id (a unique key, so also under concurrent writers). Database
failures leave this module as `StoreUnavailableError` with a reason; nothing else in the
project sees SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    case,
    create_engine,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from agentlb.domain import Agent, AttributeValue, SelectionResult, TaskOutcome, TaskRequest
from agentlb.errors import (
    AgentLBError,
    ConflictingAgentError,
    ConflictingOutcomeError,
    DuplicateTaskError,
    HistoryValidationError,
    InvalidOutcomeError,
    InvalidRecordError,
    StoreUnavailableError,
    UnknownAgentError,
)
from agentlb.features import AGENT_STATE_FEATURES, attribute_columns
from agentlb.history import RejectedRow, summarise_rejections, validate_history
from agentlb.store.history_reader import read_history_frame
from agentlb.store.models import AgentModel, DeploymentModel, DispatchModel, OutcomeModel, WeightChangeModel
from agentlb.store.records import (
    AccuracyRow,
    AgentRow,
    ImportReport,
    OutcomeWrite,
    RestoreReport,
    StoredDispatch,
    StoredOutcome,
    as_plain,
)
from agentlb.tracker import FINISHED_MEMORY, AgentLoadTracker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 5
IN_CHUNK = 500
INSERT_CHUNK = 1000
# Advisory-lock key so concurrent `db upgrade`s on one PostgreSQL database run one at a time.
MIGRATION_LOCK_KEY = 0x6167_6C62

_AGENT_FIELDS = ("name", "capabilities", "max_concurrency", "weight", "enabled", "metadata")



def normalise_url(url: str) -> URL:
    """Parse a database URL; a bare `postgresql://` means psycopg 3 (the driver agentlb ships)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreUnavailableError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def with_search_path(url: str, schema: str) -> str:
    """The same PostgreSQL URL with every connection using `schema` (tests, benchmarks)."""
    parsed = normalise_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _json_value(value: Any) -> AttributeValue:
    """An attribute value as JSON can store it; NaN/inf mean unknown and are dropped."""
    value = as_plain(value)
    if _is_missing(value):
        return None
    if isinstance(value, (bool, str, int)):
        return value  # type: ignore[no-any-return]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


class Store:
    """Agents, dispatches, outcomes, weight changes and model deployments in one database.

    SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout;
    its write transactions start with BEGIN IMMEDIATE, so concurrent writers queue on the
    busy timeout instead of failing. PostgreSQL (psycopg 3) is for shared deployments.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        sqlite_synchronous: str = "NORMAL",
    ) -> None:
        self.url = normalise_url(url)
        self.clock = clock
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite and "synchronous" in self.url.query:
            # `sqlite:///var/agentlb.db?synchronous=FULL` also survives power loss, at ~4 ms a write.
            sqlite_synchronous = str(self.url.query["synchronous"])
            self.url = self.url.difference_update_query(["synchronous"])
        self.display_url = self.url.render_as_string(hide_password=True)
        if sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA, got {sqlite_synchronous!r}"
            )
        self._synchronous = sqlite_synchronous.upper()
        try:
            self._engine = self._create_engine()
        except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as exc:
            raise StoreUnavailableError(f"cannot use database {self.display_url}: {exc}") from exc

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            connect_args: dict[str, Any] = {}
            if self.url.get_backend_name() == "postgresql" and "connect_timeout" not in self.url.query:
                connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
            return create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        database = self.url.database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in database
        if not in_memory and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(
                    f"cannot create the directory of the SQLite database {database}: {exc}"
                ) from exc
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        }
        if in_memory:
            kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_size=10, max_overflow=30)
        engine = create_engine(self.url, **kwargs)
        synchronous = self._synchronous

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Transactions are begun by hand below (pysqlite's own handling defers them).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                if not in_memory:
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous}")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("agentlb_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    # --- lifecycle ------------------------------------------------------------------
    @classmethod
    def open(
        cls, url: str, *, clock: Callable[[], float] = time.time, sqlite_synchronous: str = "NORMAL"
    ) -> Store:
        """Open the database and migrate it to the newest schema (what `agentlb db upgrade` does)."""
        store = cls(url, clock=clock, sqlite_synchronous=sqlite_synchronous)
        try:
            store.upgrade()
        except BaseException:
            store.close()
            raise
        return store

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._guard("upgrade"), self._write() as conn:
            if self.url.get_backend_name() == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_revision(self) -> str | None:
        """The applied migration revision, or None for a database never upgraded."""
        from alembic.runtime.migration import MigrationContext

        with self._guard("schema_revision"), self._engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ping(self) -> None:
        """Prove the database answers and accepts writes (a write that changes nothing)."""
        with self._guard("ping"), self._write() as conn:
            conn.execute(delete(DeploymentModel).where(false()))

    def close(self) -> None:
        self._engine.dispose()

    # --- plumbing -------------------------------------------------------------------
    @contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Database failures become StoreUnavailableError naming the operation and the cause."""
        try:
            yield
        except IntegrityError:
            raise
        except DataError as exc:
            raise InvalidRecordError(f"{operation}: the database refused a value: {_reason(exc)}") from exc
        except DBAPIError as exc:
            reason = _reason(exc)
            if "no such table" in reason or "does not exist" in reason:
                reason += " (schema not created: run `agentlb db upgrade`)"
            raise StoreUnavailableError(
                f"database {self.display_url} unavailable during {operation}: {reason}"
            ) from exc
        except OSError as exc:
            raise StoreUnavailableError(
                f"database {self.display_url} unavailable during {operation}: {exc}"
            ) from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends (BEGIN IMMEDIATE on SQLite)."""
        with self._engine.connect() as conn:
            conn.execution_options(agentlb_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    @contextmanager
    def reading(self, operation: str) -> Iterator[Connection]:
        """A read connection whose database failures name `operation` (for store modules)."""
        with self._guard(operation), self._read() as conn:
            yield conn

    # --- agent registry ---------------------------------------------------------------
    def _agent_values(self, agent: Agent, now: float) -> dict[str, Any]:
        return {
            "name": agent.name,
            "capabilities": sorted(agent.capabilities),
            "max_concurrency": agent.max_concurrency,
            "weight": float(agent.weight),
            "enabled": agent.enabled,
            "metadata_": {str(k): _json_value(v) for k, v in agent.metadata.items()},
            "history_only": False,
            "updated_at": now,
        }

    @staticmethod
    def _agent_of(row: Row[Any]) -> Agent:
        return Agent(
            id=row.id,
            name=row.name,
            capabilities=frozenset(row.capabilities or ()),
            max_concurrency=row.max_concurrency,
            weight=row.weight,
            enabled=row.enabled,
            metadata=dict(row.metadata or {}),
        )

    _AGENT_COLUMNS = (
        AgentModel.id,
        AgentModel.name,
        AgentModel.capabilities,
        AgentModel.max_concurrency,
        AgentModel.weight,
        AgentModel.enabled,
        AgentModel.metadata_.label("metadata"),
        AgentModel.history_only,
        AgentModel.created_at,
        AgentModel.updated_at,
    )

    def add_agent(self, agent: Agent) -> bool:
        """Register an agent: True when created (or promoted from history-only), False when an
        identical definition exists; ConflictingAgentError when the id has another definition."""
        for _attempt in range(3):
            now = self.clock()
            try:
                with self._guard("add_agent"), self._write() as conn:
                    row = conn.execute(
                        select(*self._AGENT_COLUMNS).where(AgentModel.id == agent.id)
                    ).first()
                    if row is None:
                        values = self._agent_values(agent, now)
                        conn.execute(insert(AgentModel).values(id=agent.id, created_at=now, **values))
                        return True
                    if row.history_only:
                        conn.execute(
                            update(AgentModel)
                            .where(AgentModel.id == agent.id)
                            .values(**self._agent_values(agent, now))
                        )
                        return True
                    existing = self._agent_of(row)
                    if existing == agent:
                        return False
                    differs = [n for n in _AGENT_FIELDS if getattr(existing, n) != getattr(agent, n)]
                    raise ConflictingAgentError(
                        f"agent {agent.id!r} already exists with a different definition "
                        f"(differs in: {', '.join(differs)})"
                    )
            except IntegrityError:
                continue  # another writer created it between our read and insert: read again
        raise StoreUnavailableError(f"add_agent {agent.id!r}: the agent row kept changing underneath")

    def upsert_agent(self, agent: Agent) -> None:
        """Create the agent or replace its definition (keeps created_at and its history)."""
        for _attempt in range(3):
            now = self.clock()
            try:
                with self._guard("upsert_agent"), self._write() as conn:
                    values = self._agent_values(agent, now)
                    changed = conn.execute(
                        update(AgentModel).where(AgentModel.id == agent.id).values(**values)
                    ).rowcount
                    if not changed:
                        conn.execute(insert(AgentModel).values(id=agent.id, created_at=now, **values))
                    return
            except IntegrityError:
                continue
        raise StoreUnavailableError(f"upsert_agent {agent.id!r}: the agent row kept changing underneath")

    def get_agent(self, agent_id: str) -> Agent | None:
        """A registered agent (history-only agents are not returned)."""
        with self._guard("get_agent"), self._read() as conn:
            row = conn.execute(
                select(*self._AGENT_COLUMNS).where(
                    AgentModel.id == agent_id, AgentModel.history_only.is_(False)
                )
            ).first()
        return None if row is None else self._agent_of(row)

    def list_agents(self, include_history_only: bool = False) -> list[AgentRow]:
        query = select(*self._AGENT_COLUMNS).order_by(AgentModel.created_at, AgentModel.id)
        if not include_history_only:
            query = query.where(AgentModel.history_only.is_(False))
        with self._guard("list_agents"), self._read() as conn:
            rows = conn.execute(query).all()
        return [AgentRow(self._agent_of(r), r.created_at, r.updated_at, bool(r.history_only)) for r in rows]

    def delete_agent(self, agent_id: str) -> None:
        """Unregister an agent; its dispatches and outcomes stay (it becomes history-only)."""
        with self._guard("delete_agent"), self._write() as conn:
            changed = conn.execute(
                update(AgentModel)
                .where(AgentModel.id == agent_id, AgentModel.history_only.is_(False))
                .values(history_only=True, enabled=False, updated_at=self.clock())
            ).rowcount
        if not changed:
            raise UnknownAgentError(agent_id)

    # --- dispatches and outcomes --------------------------------------------------------
    def record_dispatch(self, result: SelectionResult) -> None:
        """Log a selection with what the predictor saw and predicted; commits before returning."""
        values = _dispatch_values(result)
        try:
            with self._guard("record_dispatch"), self._write() as conn:
                conn.execute(_DISPATCH_INSERT, values)
        except IntegrityError as exc:
            raise DuplicateTaskError(result.task_id) from exc

    def record_dispatches(self, results: Sequence[SelectionResult]) -> list[AgentLBError | None]:
        """Log many selections in one transaction (one executemany): the group-commit path.

        Returns one entry per result: None when written, else the error for that result
        (DuplicateTaskError, InvalidRecordError, or StoreUnavailableError from the one-by-one
        retry below). When the batch transaction itself fails the database is down:
        StoreUnavailableError is raised and nothing of the batch is written. A task id already
        on record fails the whole executemany, so the batch is then retried one row per
        transaction to find it.
        """
        if not results:
            return []
        rows = [_dispatch_values(result) for result in results]
        try:
            with self._guard("record_dispatches"), self._write() as conn:
                conn.execute(_DISPATCH_INSERT, rows)
            return [None] * len(rows)
        except (IntegrityError, InvalidRecordError):
            pass  # a duplicate task id or a refused value somewhere in the batch: find it row by row
        errors: list[AgentLBError | None] = []
        for result in results:
            try:
                self.record_dispatch(result)
                errors.append(None)
            except (DuplicateTaskError, InvalidRecordError, StoreUnavailableError) as exc:
                errors.append(exc)
        return errors

    def record_outcome(self, outcome: TaskOutcome, finished_at: float) -> OutcomeWrite:
        """Record a finished task once; committed before returning.

        An identical second report returns `created=False` (also when two writers race on the
        task id); one that differs in agent, duration or success raises ConflictingOutcomeError.
        """
        return self._insert_outcome(_outcome_values(outcome, finished_at))

    def _insert_outcome(self, values: dict[str, Any]) -> OutcomeWrite:
        task_id = values["task_id"]
        for _attempt in range(3):
            try:
                with self._guard("record_outcome"), self._write() as conn:
                    conn.execute(_OUTCOME_INSERT, values)
                return OutcomeWrite(task_id, True)
            except IntegrityError:
                existing = self.get_outcome(task_id)
                if existing is None:
                    continue  # pruned in between: try the insert again
                differs = _outcome_differences(
                    existing, values["agent_id"], values["duration_s"], values["success"]
                )
                if differs:
                    raise ConflictingOutcomeError(task_id, differs) from None
                return OutcomeWrite(task_id, False)
        raise StoreUnavailableError(f"record_outcome {task_id!r}: the outcome row kept changing underneath")

    def record_outcomes(
        self, items: Sequence[tuple[TaskOutcome, float]]
    ) -> list[OutcomeWrite | AgentLBError]:
        """Record many finished tasks `(outcome, finished_at)` in one transaction: the
        group-commit path, with exactly the semantics of `record_outcome` per item.

        Returns one entry per item, in order: an OutcomeWrite (`created=False` for an identical
        repeat, also of an earlier item of the same batch), or the item's error
        (InvalidOutcomeError, ConflictingOutcomeError, InvalidRecordError). When the batch
        transaction fails the database is down: StoreUnavailableError is raised and nothing of
        the batch is written.
        """
        answers: list[OutcomeWrite | AgentLBError] = []
        pending: list[tuple[int, dict[str, Any]]] = []
        for index, (outcome, finished_at) in enumerate(items):
            try:
                values = _outcome_values(outcome, finished_at)
            except InvalidOutcomeError as exc:
                answers.append(exc)
                continue
            answers.append(OutcomeWrite(values["task_id"], True))
            pending.append((index, values))
        if not pending:
            return answers
        try:
            with self._guard("record_outcomes"), self._write() as conn:
                known: dict[str, StoredOutcome] = {}
                task_ids = sorted({values["task_id"] for _, values in pending})
                for chunk in _chunks(task_ids, IN_CHUNK):
                    for row in conn.execute(_OUTCOME_SELECT.where(OutcomeModel.task_id.in_(chunk))):
                        known[row.task_id] = _stored_outcome(row)
                inserts: list[dict[str, Any]] = []
                for index, values in pending:
                    task_id = values["task_id"]
                    existing = known.get(task_id)
                    if existing is None:
                        known[task_id] = _stored_outcome_of(values)
                        inserts.append(values)
                        continue
                    differs = _outcome_differences(
                        existing, values["agent_id"], values["duration_s"], values["success"]
                    )
                    answers[index] = (
                        ConflictingOutcomeError(task_id, differs) if differs else OutcomeWrite(task_id, False)
                    )
                for chunk in _chunks(inserts, INSERT_CHUNK):
                    conn.execute(_OUTCOME_INSERT, chunk)
            return answers
        except (IntegrityError, InvalidRecordError):
            # Another process wrote one of these task ids after our read, or the database
            # refused one item's value: item by item, so only that item fails.
            pass
        for index, values in pending:
            try:
                answers[index] = self._insert_outcome(values)
            except (ConflictingOutcomeError, InvalidRecordError, StoreUnavailableError) as exc:
                answers[index] = exc
        return answers

    def get_outcome(self, task_id: str) -> StoredOutcome | None:
        with self._guard("get_outcome"), self._read() as conn:
            row = conn.execute(_OUTCOME_SELECT.where(OutcomeModel.task_id == task_id)).first()
        return None if row is None else _stored_outcome(row)

    def get_dispatch(self, task_id: str) -> StoredDispatch | None:
        with self._guard("get_dispatch"), self._read() as conn:
            row = conn.execute(_DISPATCH_SELECT.where(DispatchModel.task_id == task_id)).first()
        return None if row is None else _stored_dispatch(row)

    def count_outcomes(self) -> int:
        with self._guard("count_outcomes"), self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(OutcomeModel)).scalar_one())

    def count_dispatches(self) -> int:
        with self._guard("count_dispatches"), self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(DispatchModel)).scalar_one())

    # --- weights and deployments ----------------------------------------------------------
    def record_weights(self, weights: Mapping[str, float], changed_by: str) -> None:
        with self._guard("record_weights"), self._write() as conn:
            conn.execute(
                insert(WeightChangeModel).values(
                    weights={str(k): float(v) for k, v in weights.items()},
                    changed_by=changed_by,
                    changed_at=self.clock(),
                )
            )

    def latest_weights(self) -> dict[str, float] | None:
        with self._guard("latest_weights"), self._read() as conn:
            weights = conn.execute(
                select(WeightChangeModel.weights).order_by(WeightChangeModel.id.desc()).limit(1)
            ).scalar_one_or_none()
        return None if weights is None else {str(k): float(v) for k, v in weights.items()}

    def weight_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent hybrid weight changes, newest first: who, when, what."""
        with self._guard("weight_history"), self._read() as conn:
            rows = conn.execute(
                select(WeightChangeModel.weights, WeightChangeModel.changed_by, WeightChangeModel.changed_at)
                .order_by(WeightChangeModel.id.desc())
                .limit(limit)
            ).all()
        return [
            {"weights": dict(r.weights), "changed_by": r.changed_by, "changed_at": r.changed_at} for r in rows
        ]

    def record_deployment(self, version: str, alias: str | None, source: str) -> None:
        with self._guard("record_deployment"), self._write() as conn:
            conn.execute(
                insert(DeploymentModel).values(
                    version=version, alias=alias, source=source, loaded_at=self.clock()
                )
            )

    def deployments(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent model deployments, newest first."""
        with self._guard("deployments"), self._read() as conn:
            rows = conn.execute(
                select(DeploymentModel.version, DeploymentModel.alias, DeploymentModel.source,
                       DeploymentModel.loaded_at)
                .order_by(DeploymentModel.id.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # --- restart recovery -------------------------------------------------------------------
    def restore_tracker(
        self, tracker: AgentLoadTracker, expiry_s: float, now: float, per_agent_outcomes: int = 200
    ) -> RestoreReport:
        """Rebuild the tracker after a restart.

        Registers agents, replays each agent's most recent outcomes oldest first (EWMAs,
        success rate, consecutive failures), sets the all-time completed/failed counts,
        re-dispatches tasks not yet finished and younger than `expiry_s`, and remembers
        recently finished task ids so a late duplicate is recognised; per-type sample counts are
        the all-time counts of successful outcomes.
        """
        horizon = now - expiry_s
        task_type = func.coalesce(OutcomeModel.task_type, DispatchModel.task_type)
        ranked = (
            select(
                OutcomeModel.seq,
                OutcomeModel.agent_id,
                OutcomeModel.task_id,
                task_type.label("task_type"),
                OutcomeModel.duration_s,
                OutcomeModel.success,
                OutcomeModel.cpu_usage,
                OutcomeModel.memory_usage,
                OutcomeModel.error,
                OutcomeModel.finished_at,
                func.row_number()
                .over(
                    partition_by=OutcomeModel.agent_id,
                    order_by=(OutcomeModel.finished_at.desc(), OutcomeModel.seq.desc()),
                )
                .label("recency"),
            )
            .select_from(OutcomeModel)
            .outerjoin(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id)
            .subquery()
        )
        with self._guard("restore_tracker"), self._read() as conn:
            agents = conn.execute(select(*self._AGENT_COLUMNS).order_by(AgentModel.created_at)).all()
            counts = conn.execute(
                select(
                    OutcomeModel.agent_id,
                    func.sum(case((OutcomeModel.success.is_(True), 1), else_=0)).label("completed"),
                    func.count().label("total"),
                ).group_by(OutcomeModel.agent_id)
            ).all()
            type_samples = conn.execute(
                select(OutcomeModel.agent_id, task_type.label("task_type"), func.count().label("n"))
                .select_from(OutcomeModel)
                .outerjoin(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id)
                .where(OutcomeModel.success.is_(True), task_type.is_not(None))
                .group_by(OutcomeModel.agent_id, task_type)
            ).all()
            recent = conn.execute(
                select(ranked)
                .where(ranked.c.recency <= per_agent_outcomes)
                .order_by(ranked.c.finished_at, ranked.c.seq)
            ).all()
            open_tasks = conn.execute(
                _DISPATCH_SELECT.where(
                    ~exists().where(OutcomeModel.task_id == DispatchModel.task_id),
                    DispatchModel.dispatched_at.is_not(None),
                ).order_by(DispatchModel.dispatched_at, DispatchModel.seq)
            ).all()
            finished = conn.execute(
                select(OutcomeModel.task_id, OutcomeModel.agent_id)
                .where(OutcomeModel.finished_at >= horizon)
                .order_by(OutcomeModel.finished_at.desc(), OutcomeModel.seq.desc())
                .limit(FINISHED_MEMORY)
            ).all()

        registered: set[str] = set()
        history_only = 0
        for row in agents:
            if row.history_only:
                tracker.register_history_only(row.id)
                history_only += 1
            else:
                tracker.register(self._agent_of(row), registered_at=row.created_at)
                registered.add(row.id)
        for row in counts:
            if not tracker.has_agent(row.agent_id):
                tracker.register_history_only(row.agent_id)
                history_only += 1
        for row in recent:
            tracker.learn(
                TaskOutcome(
                    agent_id=row.agent_id,
                    duration_s=row.duration_s,
                    success=bool(row.success),
                    task_id=row.task_id,
                    task_type=row.task_type,
                    cpu_usage=row.cpu_usage,
                    memory_usage=row.memory_usage,
                    error=row.error,
                ),
                row.finished_at,
            )
        for row in counts:
            completed = int(row.completed or 0)
            tracker.set_counts(row.agent_id, completed, int(row.total) - completed)
        samples: dict[str, dict[str, int]] = {}
        for row in type_samples:
            samples.setdefault(row.agent_id, {})[row.task_type] = int(row.n)
        for agent_id, by_type in samples.items():
            if tracker.has_agent(agent_id):
                tracker.set_type_samples(agent_id, by_type)
        restored = expired = skipped = 0
        for row in open_tasks:
            if row.dispatched_at < horizon:
                expired += 1
                continue
            if row.agent_id not in registered:
                skipped += 1
                continue
            tracker.dispatch(
                row.agent_id,
                TaskRequest(
                    task_type=row.task_type, requirements=dict(row.attributes or {}), task_id=row.task_id
                ),
                predicted_service_s=row.service_p50_s,
                dispatched_at=row.dispatched_at,
            )
            restored += 1
        for row in reversed(finished):
            tracker.mark_finished(row.task_id, row.agent_id)
        return RestoreReport(
            agents=len(registered),
            history_only_agents=history_only,
            outcomes_replayed=len(recent),
            in_flight_restored=restored,
            in_flight_expired=expired,
            in_flight_skipped=skipped,
            finished_marked=len(finished),
        )

    # --- analytics ------------------------------------------------------------------------
    def prediction_accuracy(
        self, since: float | None = None, model_version: str | None = None
    ) -> list[AccuracyRow]:
        """Per model version, over successful finished tasks whose dispatch carried a prediction:
        mean absolute error of the p50, share of durations at or under the p90, and the
        Pearson correlation of p50 and duration (None when n < 2 or either is constant).
        The predicted service time is compared; imported rows fall back to the logged p50/p90.
        `since` keeps tasks finished at or after that epoch; `model_version` one version."""
        p50 = func.coalesce(DispatchModel.service_p50_s, DispatchModel.predicted_p50_s)
        p90 = func.coalesce(DispatchModel.service_p90_s, DispatchModel.predicted_p90_s)
        y = OutcomeModel.duration_s
        version = func.coalesce(DispatchModel.model_version, "unknown").label("model_version")
        covered = func.sum(case((y <= p90, 1), else_=0))
        query = (
            select(
                version,
                func.count().label("n"),
                func.avg(func.abs(y - p50)).label("mae"),
                covered.label("covered"),
                func.count(p90).label("n90"),
                func.sum(p50).label("sx"),
                func.sum(y).label("sy"),
                func.sum(p50 * p50).label("sxx"),
                func.sum(y * y).label("syy"),
                func.sum(p50 * y).label("sxy"),
            )
            .select_from(OutcomeModel)
            .join(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id)
            .where(p50.is_not(None), OutcomeModel.success.is_(True))
            .group_by(version)
            .order_by(version)
        )
        if since is not None:
            query = query.where(OutcomeModel.finished_at >= since)
        if model_version is not None:
            query = query.where(DispatchModel.model_version == model_version)
        with self._guard("prediction_accuracy"), self._read() as conn:
            rows = conn.execute(query).all()
        result = []
        for r in rows:
            n = int(r.n)
            correlation: float | None = None
            if n >= 2:
                var_x = n * float(r.sxx) - float(r.sx) ** 2
                var_y = n * float(r.syy) - float(r.sy) ** 2
                if var_x > 1e-12 * max(n * float(r.sxx), 1.0) and var_y > 1e-12 * max(n * float(r.syy), 1.0):
                    cov = n * float(r.sxy) - float(r.sx) * float(r.sy)
                    correlation = max(-1.0, min(1.0, cov / math.sqrt(var_x * var_y)))
            coverage = float(r.covered or 0) / int(r.n90) if r.n90 else None
            result.append(AccuracyRow(str(r.model_version), n, float(r.mae), coverage, correlation))
        return result

    def agent_history_summary(self, agent_id: str, limit: int = 100) -> dict[str, Any]:
        """An agent's most recent outcomes: count, success rate, duration mean/p50/p95 (of
        successful tasks) and the same per task type."""
        task_type = func.coalesce(OutcomeModel.task_type, DispatchModel.task_type)
        with self._guard("agent_history_summary"), self._read() as conn:
            rows = conn.execute(
                select(task_type.label("task_type"), OutcomeModel.duration_s, OutcomeModel.success,
                       OutcomeModel.finished_at)
                .select_from(OutcomeModel)
                .outerjoin(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id)
                .where(OutcomeModel.agent_id == agent_id)
                .order_by(OutcomeModel.finished_at.desc(), OutcomeModel.seq.desc())
                .limit(limit)
            ).all()
        summary = _duration_summary([(bool(r.success), float(r.duration_s)) for r in rows])
        by_type: dict[str, list[tuple[bool, float]]] = defaultdict(list)
        for r in rows:
            by_type[r.task_type or "unknown"].append((bool(r.success), float(r.duration_s)))
        return {
            "agent_id": agent_id,
            **summary,
            "last_finished_at": rows[0].finished_at if rows else None,
            "by_task_type": {t: _duration_summary(v) for t, v in sorted(by_type.items())},
        }

    # --- the history-file contract --------------------------------------------------------
    def history_frame(self, since: float | None = None, until: float | None = None) -> pd.DataFrame:
        """One row per finished task (finished_at in [since, until)), in the history-file
        contract of DESIGN.md: reserved columns, every agent_* feature logged at dispatch
        (NaN when unknown) and every task attribute as its own column. `arrival_time` is the
        dispatch time; for an outcome reported without a dispatch it is estimated as
        finished_at - duration_s. Sorted by arrival time, then finish time
        (`agentlb.store.history_reader`, shared with the partitioned reader)."""
        with self._guard("history_frame"), self._read() as conn:
            return read_history_frame(conn, since, until)

    def import_history(self, frame: pd.DataFrame, skip_bad_rows: bool = False) -> ImportReport:
        """Load a history frame. All or nothing: any bad row (contract break, no agent id, a
        task id already stored with a different outcome) rejects the whole import with the row
        and field named, unless `skip_bad_rows`, which writes the good rows and lists the rest.
        Agent ids the registry does not know become history-only agents. Re-importing the same
        file writes nothing new (rows without a task id get one derived from their content)."""
        try:
            validated = validate_history(frame, skip_bad_rows=skip_bad_rows)
        except HistoryValidationError as exc:
            raise HistoryValidationError(f"import rejected, nothing written: {exc}") from exc
        rejected = list(validated.rejected)
        clean = validated.frame
        columns = list(clean.columns)
        state_columns = [c for c in AGENT_STATE_FEATURES if c in columns]
        attributes = attribute_columns(columns)
        now = self.clock()
        candidates: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
        for row_number, raw in zip(validated.row_numbers, clean.to_dict(orient="records"), strict=True):
            agent_id = raw.get("agent_id")
            if _is_missing(agent_id):
                rejected.append(RejectedRow(row_number, "agent_id: required to import into the store"))
                continue
            task_id = raw.get("task_id")
            if _is_missing(task_id):
                task_id = _derived_task_id(raw, row_number)
            arrival = raw.get("arrival_time")
            arrival = None if _is_missing(arrival) else float(arrival)
            finished = raw.get("finished_at")
            if _is_missing(finished):
                finished = arrival + float(raw["duration_s"]) if arrival is not None else now
            dispatch = {
                "task_id": task_id,
                "agent_id": agent_id,
                "strategy": _text_or_none(raw.get("strategy")),
                "task_type": raw["task_type"],
                "attributes": {
                    name: value
                    for name in attributes
                    if (value := _json_value(raw.get(name))) is not None
                },
                "features": {name: _finite_or_none(raw.get(name)) for name in state_columns},
                "predicted_p50_s": _finite_or_none(raw.get("predicted_p50_s")),
                "predicted_p90_s": _finite_or_none(raw.get("predicted_p90_s")),
                "service_p50_s": None,
                "service_p90_s": None,
                "model_version": _text_or_none(raw.get("model_version")),
                "confidence": _finite_or_none(raw.get("confidence")),
                "fallback_used": _bool_or_none(raw.get("fallback_used")),
                "dispatched_at": arrival,
                "source": "import",
            }
            outcome = {
                "task_id": task_id,
                "agent_id": agent_id,
                "task_type": raw["task_type"],
                "duration_s": float(raw["duration_s"]),
                "success": bool(raw["success"]),
                "error": _text_or_none(raw.get("error")),
                "cpu_usage": None,
                "memory_usage": None,
                "finished_at": float(finished),
                "source": "import",
            }
            candidates.append((row_number, dispatch, outcome))

        with self._guard("import_history"), self._write() as conn:
            task_ids = [o["task_id"] for _, _, o in candidates]
            stored_outcomes: dict[str, Any] = {}
            stored_dispatch_agents: dict[str, str] = {}
            for chunk in _chunks(task_ids, IN_CHUNK):
                for row in conn.execute(_OUTCOME_SELECT.where(OutcomeModel.task_id.in_(chunk))):
                    stored_outcomes[row.task_id] = row
                owners = select(DispatchModel.task_id, DispatchModel.agent_id).where(
                    DispatchModel.task_id.in_(chunk)
                )
                for owner in conn.execute(owners):
                    stored_dispatch_agents[owner.task_id] = owner.agent_id
            dispatches: list[dict[str, Any]] = []
            outcomes: list[dict[str, Any]] = []
            duplicates = 0
            for row_number, dispatch, outcome in candidates:
                task_id = outcome["task_id"]
                existing = stored_outcomes.get(task_id)
                if existing is not None:
                    differs = _outcome_differences(
                        _stored_outcome(existing),
                        outcome["agent_id"],
                        outcome["duration_s"],
                        outcome["success"],
                    )
                    if differs:
                        rejected.append(RejectedRow(
                            row_number,
                            f"task_id: {task_id!r} is already stored with a different outcome "
                            f"(differs in: {', '.join(differs)})",
                        ))
                    else:
                        duplicates += 1
                    continue
                dispatched_to = stored_dispatch_agents.get(task_id)
                if dispatched_to is not None and dispatched_to != outcome["agent_id"]:
                    rejected.append(RejectedRow(
                        row_number, f"agent_id: task {task_id!r} was dispatched to {dispatched_to!r}"
                    ))
                    continue
                if dispatched_to is None:
                    dispatches.append(dispatch)
                outcomes.append(outcome)
            rejected.sort(key=lambda r: r.row)
            if rejected and not skip_bad_rows:
                raise HistoryValidationError(
                    f"import rejected, nothing written: {len(rejected)} bad row(s): "
                    + summarise_rejections(rejected)
                )
            agent_ids = sorted({o["agent_id"] for o in outcomes})
            known: set[str] = set()
            for chunk in _chunks(agent_ids, IN_CHUNK):
                known.update(conn.execute(select(AgentModel.id).where(AgentModel.id.in_(chunk))).scalars())
            unknown = [a for a in agent_ids if a not in known]
            if unknown:
                conn.execute(insert(AgentModel), [_history_only_agent(a, now) for a in unknown])
            for chunk in _chunks(dispatches, INSERT_CHUNK):
                conn.execute(insert(DispatchModel), chunk)
            for chunk in _chunks(outcomes, INSERT_CHUNK):
                conn.execute(insert(OutcomeModel), chunk)
        return ImportReport(len(outcomes), rejected, unknown, duplicates)

    def prune(self, older_than_s: float, now: float) -> int:
        """Delete tasks finished before `now - older_than_s` (outcome and dispatch), and
        dispatches never finished that are older than that; returns the number of tasks removed."""
        if not older_than_s > 0:
            raise ValueError(f"older_than_s must be > 0, got {older_than_s}")
        cutoff = now - older_than_s
        with self._guard("prune"), self._write() as conn:
            old = select(OutcomeModel.task_id).where(OutcomeModel.finished_at < cutoff)
            conn.execute(delete(DispatchModel).where(DispatchModel.task_id.in_(old)))
            finished = conn.execute(delete(OutcomeModel).where(OutcomeModel.finished_at < cutoff)).rowcount
            unfinished = conn.execute(
                delete(DispatchModel).where(
                    DispatchModel.dispatched_at < cutoff,
                    ~exists().where(OutcomeModel.task_id == DispatchModel.task_id),
                )
            ).rowcount
        return int(finished) + int(unfinished)


# --- module helpers ------------------------------------------------------------------------
_OUTCOME_SELECT = select(
    OutcomeModel.task_id,
    OutcomeModel.agent_id,
    OutcomeModel.task_type,
    OutcomeModel.duration_s,
    OutcomeModel.success,
    OutcomeModel.error,
    OutcomeModel.cpu_usage,
    OutcomeModel.memory_usage,
    OutcomeModel.finished_at,
    OutcomeModel.source,
)

_DISPATCH_SELECT = select(
    DispatchModel.task_id,
    DispatchModel.agent_id,
    DispatchModel.strategy,
    DispatchModel.task_type,
    DispatchModel.attributes,
    DispatchModel.features,
    DispatchModel.predicted_p50_s,
    DispatchModel.predicted_p90_s,
    DispatchModel.service_p50_s,
    DispatchModel.service_p90_s,
    DispatchModel.model_version,
    DispatchModel.confidence,
    DispatchModel.fallback_used,
    DispatchModel.dispatched_at,
    DispatchModel.source,
)


_DISPATCH_INSERT = insert(DispatchModel)
_OUTCOME_INSERT = insert(OutcomeModel)


def _dispatch_values(result: SelectionResult) -> dict[str, Any]:
    """The task_dispatches row of a selection (column names, for execute and executemany)."""
    features = result.dispatch_features
    prediction = result.predicted_completion
    task_type = result.task_type or str(features.get("task_type") or "")
    return {
        "task_id": result.task_id,
        "agent_id": result.selected_agent.id,
        "strategy": result.strategy_used,
        "task_type": task_type,
        "attributes": {
            str(k): v
            for k, v in ((k, _json_value(v)) for k, v in result.task_attributes.items())
            if v is not None
        },
        "features": {name: _finite_or_none(features.get(name)) for name in AGENT_STATE_FEATURES},
        "predicted_p50_s": _finite_or_none(prediction.p50_s) if prediction else None,
        "predicted_p90_s": _finite_or_none(prediction.p90_s) if prediction else None,
        "service_p50_s": _finite_or_none(prediction.service_p50_s) if prediction else None,
        "service_p90_s": _finite_or_none(prediction.service_p90_s) if prediction else None,
        "model_version": result.model_version,
        "confidence": _finite_or_none(result.confidence_score),
        "fallback_used": bool(result.fallback_used),
        "dispatched_at": float(result.dispatched_at),
        "source": "live",
        "experiment_id": result.experiment.experiment_id if result.experiment else None,
        "experiment_arm": result.experiment.arm if result.experiment else None,
    }


def _outcome_values(outcome: TaskOutcome, finished_at: float) -> dict[str, Any]:
    """The task_outcomes row of an outcome; InvalidOutcomeError for values never stored."""
    duration = float(outcome.duration_s)
    if not math.isfinite(duration) or duration < 0:
        raise InvalidOutcomeError(f"duration_s must be a finite number >= 0, got {duration}")
    if outcome.success and duration <= 0:
        raise InvalidOutcomeError(f"duration_s must be > 0 for a successful task, got {duration}")
    if not math.isfinite(finished_at):
        raise InvalidOutcomeError(f"finished_at must be finite, got {finished_at}")
    return {
        "task_id": outcome.task_id or uuid.uuid4().hex,
        "agent_id": outcome.agent_id,
        "task_type": outcome.task_type,
        "duration_s": duration,
        "success": bool(outcome.success),
        "error": outcome.error,
        "cpu_usage": _finite_or_none(outcome.cpu_usage),
        "memory_usage": _finite_or_none(outcome.memory_usage),
        "finished_at": float(finished_at),
        "source": "live",
    }


def _stored_outcome_of(values: Mapping[str, Any]) -> StoredOutcome:
    """An outcome row about to be inserted, as a later item of the same batch compares it."""
    return StoredOutcome(**values)


def _stored_outcome(row: Any) -> StoredOutcome:
    return StoredOutcome(
        task_id=row.task_id,
        agent_id=row.agent_id,
        task_type=row.task_type,
        duration_s=float(row.duration_s),
        success=bool(row.success),
        error=row.error,
        cpu_usage=row.cpu_usage,
        memory_usage=row.memory_usage,
        finished_at=float(row.finished_at),
        source=row.source,
    )


def _stored_dispatch(row: Any) -> StoredDispatch:
    return StoredDispatch(
        task_id=row.task_id,
        agent_id=row.agent_id,
        strategy=row.strategy,
        task_type=row.task_type,
        attributes=dict(row.attributes or {}),
        features=dict(row.features or {}),
        predicted_p50_s=row.predicted_p50_s,
        predicted_p90_s=row.predicted_p90_s,
        service_p50_s=row.service_p50_s,
        service_p90_s=row.service_p90_s,
        model_version=row.model_version,
        confidence=row.confidence,
        fallback_used=row.fallback_used,
        dispatched_at=row.dispatched_at,
        source=row.source,
    )


def _outcome_differences(
    existing: StoredOutcome, agent_id: str, duration_s: float, success: bool
) -> list[str]:
    differs = []
    if existing.agent_id != agent_id:
        differs.append("agent_id")
    if not math.isclose(existing.duration_s, duration_s, rel_tol=1e-9, abs_tol=1e-9):
        differs.append("duration_s")
    if existing.success != bool(success):
        differs.append("success")
    return differs


def _duration_summary(samples: Sequence[tuple[bool, float]]) -> dict[str, Any]:
    durations = np.array([d for ok, d in samples if ok], dtype=np.float64)
    count = len(samples)
    successes = int(sum(1 for ok, _ in samples if ok))
    return {
        "count": count,
        "successes": successes,
        "success_rate": successes / count if count else None,
        "mean_duration_s": float(durations.mean()) if durations.size else None,
        "p50_duration_s": float(np.percentile(durations, 50)) if durations.size else None,
        "p95_duration_s": float(np.percentile(durations, 95)) if durations.size else None,
    }


def _history_only_agent(agent_id: str, now: float) -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": agent_id,
        "capabilities": [],
        "max_concurrency": 1,
        "weight": 1.0,
        "enabled": False,
        "metadata": {},  # the column name: executemany binds by column, not attribute
        "history_only": True,
        "created_at": now,
        "updated_at": now,
    }


def _derived_task_id(raw: Mapping[str, Any], row_number: int) -> str:
    """A stable id for a history row without one: re-importing the file finds it again."""
    payload = json.dumps(
        {k: _json_value(v) for k, v in sorted(raw.items()) if not _is_missing(v)} | {"__row": row_number},
        sort_keys=True,
        default=str,
    )
    return "import-" + hashlib.sha256(payload.encode()).hexdigest()[:24]


def _bool_or_none(value: Any) -> bool | None:
    return None if _is_missing(value) else bool(value)


def _text_or_none(value: Any) -> str | None:
    return None if _is_missing(value) else str(value)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
