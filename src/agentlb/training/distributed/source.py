"""Task history read in partitions for a Dask cluster, never whole into one process.

Three sources, one contract: a Parquet dataset directory (as `agentlb history export
--partition-by day` writes it, one `day=YYYY-MM-DD/part-N.parquet` per UTC day), a single
.parquet/.csv file, or the store (SQLite or PostgreSQL) read one arrival-time range per
partition, each on its own connection. Every partition is validated by
`agentlb.history.validate_history` (the same rules as a whole read) and given the dtypes a
whole read of the same data gives, so the pipeline sees the same frame either way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from agentlb.errors import HistoryValidationError
from agentlb.features import AGENT_STATE_FEATURES, RESERVED_COLUMN_ORDER, attribute_columns
from agentlb.history import (
    TEXT_COLUMNS,
    NoValidRowsError,
    read_history,
    validate_history,
)
from agentlb.store.history_reader import FLOAT_COLUMNS, ColumnProfile

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pyarrow as pa

DAY_S = 86400.0
_DAY_DIR = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")
_PART_FILE = re.compile(r"^part-(\d+)\.parquet$")


@dataclass(frozen=True)
class HistoryPartition:
    """One partition of a partitioned history: a file, or the store's tasks arriving in
    [arrival_from, arrival_to) (None = unbounded), the range that holds every task of the
    bucket starting at `bucket_start`. `rows` is how many rows it holds before validation
    (from Parquet metadata or a database count; None for a CSV file)."""

    label: str
    rows: int | None
    path: Path | None = None
    db_url: str | None = None
    arrival_from: float | None = None
    arrival_to: float | None = None
    bucket_start: float | None = None


@dataclass(frozen=True)
class HistoryLayout:
    """The partitions of a history, in arrival-time order, the frame every one is given and
    what each column holds over the whole history (none for a CSV file, whose dtypes are read)."""

    partitions: list[HistoryPartition]
    meta: pd.DataFrame
    profiles: Mapping[str, ColumnProfile] = field(default_factory=dict)

    @property
    def rows(self) -> list[int | None]:
        return [p.rows for p in self.partitions]


def read_partitioned_history(
    source: str | Path | None = None,
    *,
    db_url: str | None = None,
    since: float | None = None,
    until: float | None = None,
    partition_s: float = DAY_S,
    skip_bad_rows: bool = False,
) -> dd.DataFrame:
    """The history as a lazy Dask DataFrame in the history-file contract.

    `source` is a Parquet dataset directory (one partition per file), a single .parquet or
    .csv file (one partition), or None with `db_url` to read the store in arrival-time ranges
    of `partition_s` seconds aligned on multiples of it (UTC days by default), empty ranges
    left out. `since`/`until` keep tasks finished in [since, until), as `Store.history_frame`.

    Partitions are in arrival-time order: every arrival_time of partition i is <= every one of
    partition i+1, and each partition is sorted by arrival time, so the concatenation is the
    history a whole read gives, in its order; a time split may cut between partitions.
    Columns and dtypes are those of `read_history` + `validate_history` (or
    `Store.history_frame`) on the same data. A bad row raises HistoryValidationError naming
    the partition and the row, or is dropped with `skip_bad_rows`. Task ids are checked for
    repeats within a partition only. Each partition's index starts at 0.
    `history_partitions` gives the partitions and their row counts without reading any row.
    """
    import dask
    import dask.dataframe as dd

    layout = history_partitions(
        source, db_url=db_url, since=since, until=until, partition_s=partition_s
    )
    # Dask would turn text columns into its own pyarrow string dtype (NA, not NaN as missing):
    # the partitions keep the `str` dtype of a whole read instead.
    with dask.config.set({"dataframe.convert-string": False}):
        frame: dd.DataFrame = dd.from_map(  # type: ignore[no-untyped-call]
            read_partition,
            layout.partitions,
            meta=layout.meta,
            divisions=[None] * (len(layout.partitions) + 1),
            label="agentlb-history",
            enforce_metadata=False,
            skip_bad_rows=skip_bad_rows,
            since=since,
            until=until,
            meta_frame=layout.meta,
        )
    return frame


def history_partitions(
    source: str | Path | None = None,
    *,
    db_url: str | None = None,
    since: float | None = None,
    until: float | None = None,
    partition_s: float = DAY_S,
) -> HistoryLayout:
    """The partitions `read_partitioned_history` reads and the frame they conform to, from
    Parquet footers or database aggregates only (no row is read, except that a CSV file, one
    partition, is read once for its dtypes)."""
    if not (isinstance(partition_s, (int, float)) and math.isfinite(partition_s) and partition_s > 0):
        raise ValueError(f"partition_s must be a finite number of seconds > 0, got {partition_s!r}")
    if since is not None and until is not None and not since < until:
        raise ValueError(f"since ({since}) must be before until ({until})")
    if source is not None and db_url is not None:
        raise ValueError("give a history source or db_url, not both")
    if source is None:
        if db_url is None:
            raise ValueError("give a history source (Parquet dataset, .parquet or .csv file) or db_url")
        return _store_layout(db_url, since, until, partition_s)
    path = Path(source)
    if path.is_dir():
        return _dataset_layout(path)
    if not path.exists():
        raise HistoryValidationError(f"history source not found: {path}")
    return _file_layout(path)


# --- reading one partition ---------------------------------------------------------------------
def read_partition(
    partition: HistoryPartition,
    *,
    skip_bad_rows: bool,
    since: float | None,
    until: float | None,
    meta_frame: pd.DataFrame,
) -> pd.DataFrame:
    """One partition, read, validated and conformed to `meta_frame` (runs on a Dask worker)."""
    if partition.db_url is not None:
        attributes = [str(c) for c in meta_frame.columns if is_attribute(str(c))]
        raw = read_store_range(partition, since, until, attributes)
    else:
        assert partition.path is not None
        raw = read_history(partition.path)
        if since is not None or until is not None:
            raw = _finished_between(raw, partition.label, since, until)
    if raw.empty:
        return meta_frame.iloc[:0].copy()
    clean = _validated(raw, partition, skip_bad_rows)
    return conform(clean, meta_frame, partition.label)


def _validated(raw: pd.DataFrame, partition: HistoryPartition, skip_bad_rows: bool) -> pd.DataFrame:
    """`validate_history` on one partition; a bad row is named by partition, row and task id
    (a store range's row number alone means nothing to a user, its task id does)."""
    try:
        validated = validate_history(raw, skip_bad_rows=True)
    except NoValidRowsError as exc:
        if skip_bad_rows:
            return raw.iloc[:0]
        rejected = exc.rejected
    except HistoryValidationError as exc:  # the frame itself breaks the contract (its columns)
        raise HistoryValidationError(f"{partition.label}: {exc}") from None
    else:
        if skip_bad_rows or not validated.rejected:
            return validated.frame
        rejected = validated.rejected
    first = rejected[0]
    task = ""
    if "task_id" in raw.columns and 0 < first.row <= len(raw):
        task = f" (task_id {raw['task_id'].iloc[first.row - 1]!r})"
    raise HistoryValidationError(f"{partition.label}: row {first.row}{task}: {first.reason}")


def _finished_between(
    frame: pd.DataFrame, label: str, since: float | None, until: float | None
) -> pd.DataFrame:
    if "finished_at" not in frame.columns:
        raise HistoryValidationError(
            f"{label}: since/until select by finished_at, which it has no column for"
        )
    finished = pd.to_numeric(frame["finished_at"], errors="coerce")
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= finished >= since
    if until is not None:
        keep &= finished < until
    return frame[keep.to_numpy()].reset_index(drop=True)


def conform(frame: pd.DataFrame, meta: pd.DataFrame, label: str) -> pd.DataFrame:
    """`frame` with the columns and dtypes of `meta` (a column it lacks is all missing)."""
    extra = [c for c in frame.columns if c not in meta.columns]
    if extra:
        raise HistoryValidationError(f"{label}: column(s) {', '.join(extra)} not in the history's schema")
    out = {}
    for column, dtype in meta.dtypes.items():
        name = str(column)
        values = frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)
        if values.dtype != dtype:
            try:
                values = values.astype(dtype)
            except (TypeError, ValueError) as exc:
                raise HistoryValidationError(
                    f"{label}: column {name!r} holds {values.dtype} values where the rest of the "
                    f"history holds {dtype} ({exc})"
                ) from None
        out[name] = values
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


# --- dtypes ------------------------------------------------------------------------------------
def is_attribute(column: str) -> bool:
    return bool(attribute_columns([column]))


def canonical_dtype(column: str, profile: ColumnProfile) -> Any:
    """The dtype `validate_history` gives `column` for a whole history holding `profile`."""
    if column in FLOAT_COLUMNS:
        return np.dtype("float64")
    if column == "success":
        return np.dtype("bool")
    if column in TEXT_COLUMNS:
        return pd.StringDtype(na_value=np.nan) if profile.kind != "null" else np.dtype("object")
    kind, nulls = profile.kind, profile.has_nulls
    if kind == "float" or (kind == "int" and nulls):
        return np.dtype("float64")
    if kind == "int":
        return np.dtype("int64")
    if kind == "bool" and not nulls:
        return np.dtype("bool")
    if kind == "bool" and is_attribute(column):
        return pd.BooleanDtype()
    if kind == "text":
        return pd.StringDtype(na_value=np.nan)
    return np.dtype("object")


def meta_frame(columns: Sequence[str], profiles: dict[str, ColumnProfile]) -> pd.DataFrame:
    """An empty frame with the columns, in order, and their canonical dtypes."""
    unknown = ColumnProfile("null", True)
    return pd.DataFrame(
        {c: pd.Series([], dtype=canonical_dtype(c, profiles.get(c, unknown))) for c in columns}
    )


def _ordered_columns(columns: Sequence[str]) -> list[str]:
    """Reserved columns in the store's order, agent_* features, then attributes sorted."""
    present = set(columns)
    reserved = [c for c in RESERVED_COLUMN_ORDER if c in present]
    state = [c for c in AGENT_STATE_FEATURES if c in present]
    return [*reserved, *state, *sorted(attribute_columns(columns))]


# --- Parquet and CSV ---------------------------------------------------------------------------
def _arrow_profile(field_type: pa.DataType, has_nulls: bool) -> ColumnProfile:
    import pyarrow as pa

    if pa.types.is_null(field_type):
        return ColumnProfile("null", True)
    if pa.types.is_floating(field_type):
        kind = "float"
    elif pa.types.is_integer(field_type):
        kind = "int"
    elif pa.types.is_boolean(field_type):
        kind = "bool"
    elif pa.types.is_string(field_type) or pa.types.is_large_string(field_type):
        kind = "text"
    elif pa.types.is_dictionary(field_type):
        return _arrow_profile(field_type.value_type, has_nulls)
    else:
        kind = "mixed"
    return ColumnProfile(kind, has_nulls)


@dataclass(frozen=True)
class _ParquetFacts:
    rows: int
    columns: list[str]
    profiles: dict[str, ColumnProfile]
    arrival_min: float | None
    arrival_max: float | None
    has_arrival: bool


def _parquet_facts(path: Path) -> _ParquetFacts:
    """Rows, columns, what each column holds and the arrival-time range, from the footer."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:
        raise HistoryValidationError(f"cannot read history file {path}: {exc}") from exc
    schema = metadata.schema.to_arrow_schema()
    columns = [c for c in schema.names if c != "__index_level_0__"]
    nulls = dict.fromkeys(columns, 0)
    stats_missing: set[str] = set()
    arrival_min: float | None = None
    arrival_max: float | None = None
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for i in range(row_group.num_columns):
            chunk = row_group.column(i)
            name = chunk.path_in_schema
            if name not in nulls:
                continue
            stats = chunk.statistics
            if stats is None or stats.null_count is None:
                stats_missing.add(name)
                continue
            nulls[name] += stats.null_count
            if name == "arrival_time" and stats.has_min_max and isinstance(stats.min, (int, float)):
                low, high = float(stats.min), float(stats.max)
                arrival_min = low if arrival_min is None else min(arrival_min, low)
                arrival_max = high if arrival_max is None else max(arrival_max, high)
    profiles = {
        name: _arrow_profile(schema.field(name).type, nulls[name] > 0 or name in stats_missing)
        for name in columns
    }
    return _ParquetFacts(
        metadata.num_rows, columns, profiles, arrival_min, arrival_max, "arrival_time" in columns
    )


def _dataset_files(directory: Path) -> list[Path]:
    """The dataset's .parquet files: `day=` directories in date order, parts in number order;
    other layouts in path order."""

    def key(path: Path) -> tuple[Any, ...]:
        parts = path.relative_to(directory).parts
        day = _DAY_DIR.match(parts[0]) if len(parts) > 1 else None
        part = _PART_FILE.match(path.name)
        return (day.group(1) if day else "", int(part.group(1)) if part else -1, str(path))

    files = sorted((p for p in directory.rglob("*.parquet") if p.is_file()), key=key)
    if not files:
        raise HistoryValidationError(f"history dataset {directory} holds no .parquet files")
    return files


def _dataset_layout(directory: Path) -> HistoryLayout:
    files = _dataset_files(directory)
    facts = [_parquet_facts(f) for f in files]
    with_arrival = [f.has_arrival for f in facts]
    if any(with_arrival) and not all(with_arrival):
        lacking = files[with_arrival.index(False)]
        raise HistoryValidationError(f"{lacking}: no arrival_time column, unlike the rest of the dataset")
    if all(with_arrival):
        _check_arrival_order(files, facts)
    column_lists = [f.columns for f in facts]
    if all(c == column_lists[0] for c in column_lists):
        columns = list(column_lists[0])
    else:
        columns = _ordered_columns(sorted({c for cs in column_lists for c in cs}))
    if "success" not in columns:
        columns.append("success")
    profiles: dict[str, ColumnProfile] = {}
    for fact in facts:
        for name in columns:
            profile = fact.profiles.get(name, ColumnProfile("null", True))
            profiles[name] = profiles[name].merge(profile) if name in profiles else profile
    partitions = [
        HistoryPartition(str(f), fact.rows, path=f) for f, fact in zip(files, facts, strict=True) if fact.rows
    ]
    if not partitions:
        raise HistoryValidationError(f"history dataset {directory} has no data rows")
    return HistoryLayout(partitions, meta_frame(columns, profiles), profiles)


def _check_arrival_order(files: Sequence[Path], facts: Sequence[_ParquetFacts]) -> None:
    """Partitions must be in arrival-time order; the Parquet statistics prove it without reading."""
    previous_max: float | None = None
    previous: Path | None = None
    for path, fact in zip(files, facts, strict=True):
        if not fact.rows:
            continue
        if fact.arrival_min is None or fact.arrival_max is None:
            raise HistoryValidationError(
                f"{path}: arrival_time has no numeric min/max statistics, so the dataset's arrival "
                "order cannot be checked; write it with `agentlb history export --partition-by day`"
            )
        if previous_max is not None and fact.arrival_min < previous_max:
            raise HistoryValidationError(
                f"{path}: arrival_time starts at {fact.arrival_min}, before {previous} ends "
                f"({previous_max}); partitions must be in arrival-time order"
            )
        previous_max, previous = fact.arrival_max, path


def _file_layout(path: Path) -> HistoryLayout:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        fact = _parquet_facts(path)
        columns = list(fact.columns)
        if "success" not in columns:
            columns.append("success")
        profiles = dict(fact.profiles)
        profiles.setdefault("success", ColumnProfile("bool", False))
        partitions = [HistoryPartition(str(path), fact.rows, path=path)]
        return HistoryLayout(partitions, meta_frame(columns, profiles), profiles)
    # A CSV file's dtypes are only known once read: it is one partition, so read it once here.
    partition = HistoryPartition(str(path), None, path=path)
    frame = _validated(read_history(path), partition, skip_bad_rows=True)
    return HistoryLayout([partition], frame.iloc[:0].copy())


# --- the store ---------------------------------------------------------------------------------
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _store_layout(db_url: str, since: float | None, until: float | None, partition_s: float) -> HistoryLayout:
    from agentlb.store import Store
    from agentlb.store.history_reader import arrival_bucket_counts, history_profile

    store = Store(db_url)
    database = store.url.database or ""
    if store.is_sqlite and (database in ("", ":memory:") or "mode=memory" in database):
        store.close()
        raise ValueError(
            "an in-memory SQLite database cannot be read in partitions: each partition opens a "
            "connection of its own; use a database file or PostgreSQL"
        )
    try:
        with store.reading("history_partitions") as conn:
            buckets = arrival_bucket_counts(conn, partition_s, since, until)
            total, profiles = history_profile(conn, since, until)
    finally:
        store.close()
    if not buckets or not total:
        raise HistoryValidationError(f"no finished tasks in {store.display_url}{_window(since, until)}")
    # Ranges start at each non-empty bucket and run to the next one; the first is open below and
    # the last open above, so float rounding at a boundary can never drop a row.
    starts = [bucket * partition_s for bucket, _ in buckets]
    partitions = []
    for i, (_, rows) in enumerate(buckets):
        low = starts[i] if i > 0 else None
        high = starts[i + 1] if i + 1 < len(starts) else None
        label = f"store tasks arriving in [{_iso(starts[i])}, {_iso(starts[i] + partition_s)})"
        partitions.append(
            HistoryPartition(
                label, rows, db_url=db_url, arrival_from=low, arrival_to=high, bucket_start=starts[i]
            )
        )
    for always_there in ("task_id", "agent_id", "task_type"):
        profiles[always_there] = ColumnProfile("text", False)
    attributes = sorted(c for c in profiles if is_attribute(c))
    columns = [*RESERVED_COLUMN_ORDER, *AGENT_STATE_FEATURES, *attributes]
    return HistoryLayout(partitions, meta_frame(columns, profiles), profiles)


def _window(since: float | None, until: float | None) -> str:
    parts = []
    if since is not None:
        parts.append(f"finished at or after {_iso(since)}")
    if until is not None:
        parts.append(f"finished before {_iso(until)}")
    return f" ({' and '.join(parts)})" if parts else ""


def read_store_range(
    partition: HistoryPartition, since: float | None, until: float | None, attributes: list[str]
) -> pd.DataFrame:
    """One arrival-time range of the store, on a connection of its own."""
    from agentlb.store import Store
    from agentlb.store.history_reader import read_history_frame

    assert partition.db_url is not None
    store = Store(partition.db_url)
    try:
        with store.reading("read_partitioned_history") as conn:
            return read_history_frame(
                conn,
                since,
                until,
                arrival_from=partition.arrival_from,
                arrival_to=partition.arrival_to,
                attribute_names=attributes,
            )
    finally:
        store.close()


__all__ = [
    "HistoryLayout",
    "HistoryPartition",
    "conform",
    "history_partitions",
    "is_attribute",
    "read_partition",
    "read_partitioned_history",
    "read_store_range",
]
