"""`agentlb history export --partition-by day`: the store's history as a Parquet dataset.

One `day=YYYY-MM-DD/part-0.parquet` per UTC day of arrival, written one day at a time from
the store (the exporting process holds one day, never the whole history), every file with the
same columns and types, so `read_partitioned_history` (and any Parquet reader) reads it lazily.
Rows are written as stored; the reader validates them.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agentlb.errors import HistoryValidationError
from agentlb.training.distributed.source import (
    DAY_S,
    conform,
    history_partitions,
    is_attribute,
    read_store_range,
)

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
    _check_target(directory, overwrite)
    layout = history_partitions(db_url=db_url, since=since, until=until, partition_s=DAY_S)
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
                frame.to_parquet(target / "part-0.parquet", index=False)
            except (TypeError, ValueError) as exc:  # pyarrow: a column mixing types
                raise HistoryValidationError(f"{partition.label}: cannot write as Parquet: {exc}") from None
            rows += len(frame)
            days.append(day)
        _replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(rows, days, directory)


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
