"""The store's task history in the history-file contract: one query for whole and partitioned reads.

`Store.history_frame` reads every finished task in one go; the partitioned reader
(`agentlb.training.distributed.source`) reads the same query one arrival-time range at a time,
each range on its own connection. Both go through `history_query` and `history_records_frame`,
so a row means the same thing either way.

Arrival time is the dispatch time, or finished_at - duration_s for an outcome reported without
one. The query is a UNION ALL of those two cases so that an arrival-time range is a plain range
on an indexed column in each branch (`ix_task_dispatches_dispatched_at` and the expression index
`ix_task_outcomes_estimated_arrival` of migration 0003), never a scan of the whole join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    cast,
    func,
    literal,
    select,
    text,
    union_all,
)

from agentlb.features import AGENT_STATE_FEATURES, RESERVED_COLUMN_ORDER, attribute_columns
from agentlb.store.models import DispatchModel, OutcomeModel

# Contract columns that are float64 (NaN = unknown) in every history frame: the store's, a
# validated one and each partition of a partitioned read.
FLOAT_COLUMNS: tuple[str, ...] = (
    "arrival_time",
    "duration_s",
    "finished_at",
    "predicted_p50_s",
    "predicted_p90_s",
    "confidence",
    *AGENT_STATE_FEATURES,
)


def estimated_arrival() -> ColumnElement[float]:
    """Arrival of an outcome reported without a dispatch time (indexed by migration 0003)."""
    return OutcomeModel.finished_at - OutcomeModel.duration_s


def _branch(
    dispatched: bool,
    since: float | None,
    until: float | None,
    arrival_from: float | None,
    arrival_to: float | None,
) -> Select[Any]:
    """Finished tasks with a dispatch time (`dispatched`) or without one, filtered by finish
    time [since, until) and arrival time [arrival_from, arrival_to)."""
    arrival: ColumnElement[Any] = (
        DispatchModel.dispatched_at.expression if dispatched else estimated_arrival()
    )
    query: Select[Any] = select(
        OutcomeModel.task_id,
        arrival.label("arrival_time"),
        OutcomeModel.agent_id,
        OutcomeModel.success,
        func.coalesce(DispatchModel.task_type, OutcomeModel.task_type).label("task_type"),
        OutcomeModel.duration_s,
        OutcomeModel.finished_at,
        DispatchModel.strategy,
        DispatchModel.model_version,
        DispatchModel.predicted_p50_s,
        DispatchModel.predicted_p90_s,
        DispatchModel.confidence,
        DispatchModel.fallback_used,
        OutcomeModel.error,
        DispatchModel.features,
        DispatchModel.attributes,
        OutcomeModel.seq,
    ).select_from(OutcomeModel)
    if dispatched:
        query = query.join(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id).where(
            DispatchModel.dispatched_at.is_not(None)
        )
    else:
        query = query.outerjoin(DispatchModel, DispatchModel.task_id == OutcomeModel.task_id).where(
            DispatchModel.dispatched_at.is_(None)
        )
    conditions = []
    if since is not None:
        conditions.append(OutcomeModel.finished_at >= since)
    if until is not None:
        conditions.append(OutcomeModel.finished_at < until)
    if arrival_from is not None:
        conditions.append(arrival >= arrival_from)
    if arrival_to is not None:
        conditions.append(arrival < arrival_to)
    return query.where(and_(*conditions)) if conditions else query


def history_query(
    since: float | None = None,
    until: float | None = None,
    arrival_from: float | None = None,
    arrival_to: float | None = None,
) -> Select[Any]:
    """Finished tasks with finished_at in [since, until) and arrival time in
    [arrival_from, arrival_to), in (finished_at, seq) order: one row per task with its dispatch
    columns, features and attributes (JSON)."""
    both = union_all(
        _branch(True, since, until, arrival_from, arrival_to),
        _branch(False, since, until, arrival_from, arrival_to),
    ).subquery("history")
    return select(both).order_by(both.c.finished_at, both.c.seq)


def arrival_bucket_counts(
    conn: Connection, width_s: float, since: float | None = None, until: float | None = None
) -> list[tuple[int, int]]:
    """(bucket, rows) for every non-empty arrival-time bucket [bucket*width_s, (bucket+1)*width_s),
    in bucket order: one aggregate the database computes without sending rows."""
    both = union_all(_branch(True, since, until, None, None), _branch(False, since, until, None, None))
    history = both.subquery("history")
    ratio = history.c.arrival_time / literal(float(width_s))
    if conn.dialect.name == "sqlite":  # no floor() in every SQLite build: truncate, then step down
        truncated = cast(ratio, Integer)
        bucket: ColumnElement[Any] = truncated - cast(ratio < truncated, Integer)
    else:
        bucket = cast(func.floor(ratio), Integer)
    labelled = bucket.label("bucket")
    rows = conn.execute(
        select(labelled, func.count().label("n")).group_by(labelled).order_by(labelled)
    ).all()
    return [(int(r.bucket), int(r.n)) for r in rows]


@dataclass(frozen=True)
class ColumnProfile:
    """What the rows of a history hold in one column: a kind (`float`, `int`, `bool`, `text`,
    `null` for nothing, `mixed`) and whether some row lacks a value."""

    kind: str
    has_nulls: bool

    def merge(self, other: ColumnProfile) -> ColumnProfile:
        if self.kind == other.kind or other.kind == "null":
            kind = self.kind
        elif self.kind == "null":
            kind = other.kind
        elif {self.kind, other.kind} == {"int", "float"}:
            kind = "float"
        else:
            kind = "mixed"
        return ColumnProfile(kind, self.has_nulls or other.has_nulls)


_NULLABLE_RESERVED = ("strategy", "model_version", "error", "fallback_used")


def history_profile(
    conn: Connection, since: float | None = None, until: float | None = None
) -> tuple[int, dict[str, ColumnProfile]]:
    """The row count and, for the columns whose dtype depends on the data (nullable reserved
    columns and every task attribute), what they hold, so that every partition of a
    partitioned read gets the dtypes a whole read would give. Computed in the database."""
    history = union_all(
        _branch(True, since, until, None, None), _branch(False, since, until, None, None)
    ).subquery("history")
    counts = conn.execute(
        select(func.count(), *[func.count(history.c[name]) for name in _NULLABLE_RESERVED])
    ).one()
    total = int(counts[0])
    profiles: dict[str, ColumnProfile] = {}
    for name, present in zip(_NULLABLE_RESERVED, counts[1:], strict=True):
        kind = "null" if not present else ("bool" if name == "fallback_used" else "text")
        profiles[name] = ColumnProfile(kind, int(present) < total)
    found: dict[str, tuple[str, int]] = {}
    for key, kind, n in _attribute_kinds(conn, since, until):
        previous = found.get(key)
        if previous is None:
            found[key] = (kind, n)
        else:
            merged = ColumnProfile(previous[0], False).merge(ColumnProfile(kind, False)).kind
            found[key] = (merged, previous[1] + n)
    names = [k for k in found if k not in RESERVED_COLUMN_ORDER and k not in AGENT_STATE_FEATURES]
    for key in attribute_columns(names):
        kind, n = found[key]
        profiles[key] = ColumnProfile(kind, n < total)
    return total, profiles


_JSON_KINDS_SQLITE = {"integer": "int", "real": "float", "text": "text", "true": "bool", "false": "bool"}


def _attribute_kinds(
    conn: Connection, since: float | None, until: float | None
) -> Iterable[tuple[str, str, int]]:
    """(attribute, kind, rows holding it) over the finished tasks, from the dispatches' JSON."""
    where = ["d.task_id = o.task_id"]
    params: dict[str, float] = {}
    if since is not None:
        where.append("o.finished_at >= :since")
        params["since"] = since
    if until is not None:
        where.append("o.finished_at < :until")
        params["until"] = until
    condition = " AND ".join(where)
    if conn.dialect.name == "sqlite":
        sql = (
            "SELECT j.key, j.type, count(*) FROM task_outcomes o, task_dispatches d, "
            f"json_each(d.attributes) j WHERE {condition} GROUP BY j.key, j.type"
        )
        for key, json_type, n in conn.execute(text(sql), params):
            yield str(key), _JSON_KINDS_SQLITE.get(str(json_type), "mixed"), int(n)
        return
    sql = (
        "SELECT j.key, CASE json_typeof(j.value) "
        "WHEN 'number' THEN CASE WHEN j.value::text ~ '^-?[0-9]+$' THEN 'int' ELSE 'float' END "
        "WHEN 'string' THEN 'text' WHEN 'boolean' THEN 'bool' WHEN 'null' THEN 'null' "
        "ELSE 'mixed' END AS kind, count(*) "
        "FROM task_outcomes o, task_dispatches d, json_each(d.attributes::json) j "
        f"WHERE {condition} GROUP BY 1, 2"
    )
    for key, kind, n in conn.execute(text(sql), params):
        yield str(key), str(kind), int(n)


def history_records_frame(rows: Sequence[Any], attribute_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of `history_query` as a frame in the contract: reserved columns, every agent_*
    feature logged at dispatch (NaN when unknown) and each task attribute as its own column
    (those of `attribute_names`, or every one the rows hold, sorted). Sorted by arrival time,
    then finish time."""
    records: list[dict[str, Any]] = []
    found: set[str] = set()
    for r in rows:
        record: dict[str, Any] = {name: getattr(r, name) for name in RESERVED_COLUMN_ORDER}
        record["task_type"] = record["task_type"] or ""
        features = r.features or {}
        for name in AGENT_STATE_FEATURES:
            value = features.get(name)
            record[name] = float("nan") if value is None else float(value)
        for key, value in (r.attributes or {}).items():
            if key in record:
                continue  # a reserved or agent_* name never becomes an attribute
            record[key] = value
            found.add(key)
        records.append(record)
    attributes = sorted(attribute_columns(found)) if attribute_names is None else list(attribute_names)
    columns = [*RESERVED_COLUMN_ORDER, *AGENT_STATE_FEATURES, *attributes]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for name in FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    frame["success"] = frame["success"].astype(bool)
    frame = frame.sort_values(["arrival_time", "finished_at"], kind="stable", na_position="last")
    return frame.reset_index(drop=True)


def read_history_frame(
    conn: Connection,
    since: float | None = None,
    until: float | None = None,
    *,
    arrival_from: float | None = None,
    arrival_to: float | None = None,
    attribute_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per finished task of `history_query`, as `history_records_frame` builds it."""
    rows = conn.execute(history_query(since, until, arrival_from, arrival_to)).all()
    return history_records_frame(rows, attribute_names)
