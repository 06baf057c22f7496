"""`agentlb history export --partition-by day`: the store's history as a Parquet dataset.

One `day=YYYY-MM-DD/part-0.parquet` per UTC day of arrival, written one day at a time from
the store (the exporting process holds one day, never the whole history), every file with the
same columns and types, so `read_partitioned_history` (and any Parquet reader) reads it lazily.
The types are one Arrow schema for the whole export, derived from what the store holds in each
column over the exported range, never guessed file by file: a column with no value on one day
(`fallback_used` on a day of outcomes reported without a dispatch, an attribute some days
lack) has the type it has on the other days. Rows are written as stored; the reader validates
them.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentlb.errors import HistoryValidationError
from agentlb.store.history_reader import ColumnProfile
from agentlb.training.distributed.source import (
    DAY_S,
    HistoryLayout,
    conform,
    history_partitions,
    is_attribute,
    read_store_range,
)

if TYPE_CHECKING:
    import pyarrow as pa

PARTITION_CHOICES: tuple[str, ...] = ("day",)


@dataclass(frozen=True)
class ExportReport:
    rows: int
    days: list[str]
    directory: Path


def export_partitioned_history(
    db_url: str,
    directory: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write the tasks finished in [since, until) as a day-partitioned Parquet dataset.

    The dataset is written next to `directory` and moved into place when complete, so a failed
    export leaves no half-written dataset. An existing non-empty `directory` is replaced only
    with `overwrite`, and only when it holds nothing but `day=` partitions.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_target(directory, overwrite)
    layout = history_partitions(db_url=db_url, since=since, until=until, partition_s=DAY_S)
    schema = dataset_schema(layout)
    attributes = [str(c) for c in layout.meta.columns if is_attribute(str(c))]
    staging = directory.parent / f".{directory.name}.partial-{uuid.uuid4().hex[:8]}"
    rows = 0
    days: list[str] = []
    try:
        staging.mkdir(parents=True)
        for partition in layout.partitions:
            frame = conform(
                read_store_range(partition, since, until, attributes), layout.meta, partition.label
            )
            if frame.empty:
                continue
            assert partition.bucket_start is not None
            day = _day(partition.bucket_start)
            target = staging / f"day={day}"
            target.mkdir()
            try:
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            except (TypeError, ValueError) as exc:  # pyarrow: a value the column's type cannot hold
                raise HistoryValidationError(f"{partition.label}: cannot write as Parquet: {exc}") from None
            pq.write_table(table, target / "part-0.parquet")
            rows += len(frame)
            days.append(day)
        _replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(rows, days, directory)


def dataset_schema(layout: HistoryLayout) -> pa.Schema:
    """The Arrow schema of every file of the dataset.

    A column's type follows the dtype a whole read gives it (`layout.meta`); a column of Python
    objects (true/false with some values missing, or no value at all) takes its type from what
    the store holds in it over the whole export, so that a day on which it has no value writes
    it with the type of the days on which it has one.
    """
    import pyarrow as pa

    schema = pa.Schema.from_pandas(layout.meta, preserve_index=False)
    for index, (column, dtype) in enumerate(layout.meta.dtypes.items()):
        name = str(column)
        if dtype != np.dtype("object"):
            continue
        profile = layout.profiles.get(name, ColumnProfile("null", True))
        schema = schema.set(index, pa.field(name, _object_column_type(name, profile)))
    return schema


def _object_column_type(name: str, profile: ColumnProfile) -> pa.DataType:
    import pyarrow as pa

    if profile.kind == "bool":
        return pa.bool_()
    if profile.kind == "null":
        return pa.null()
    if profile.kind == "text":
        return pa.large_string()
    if profile.kind in ("int", "float"):
        return pa.float64()
    raise HistoryValidationError(
        f"column {name!r} holds values of more than one kind (numbers, text, true/false) in the "
        "exported history; a Parquet dataset needs one type per column"
    )


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _check_target(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise HistoryValidationError(f"{directory} exists and is not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        return
    if not overwrite:
        raise HistoryValidationError(f"{directory} is not empty; pass --overwrite to replace it")
    strangers = [p.name for p in directory.iterdir() if not (p.is_dir() and p.name.startswith("day="))]
    if strangers:
        raise HistoryValidationError(
            f"{directory} holds more than a history dataset ({', '.join(sorted(strangers)[:5])}); "
            "refusing to replace it"
        )


def _replace(staging: Path, directory: Path) -> None:
    """Move the finished dataset into place (the old one, if any, goes only once it is there)."""
    if not directory.exists():
        staging.rename(directory)
        return
    retired = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
