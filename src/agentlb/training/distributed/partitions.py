"""A history on a Dask cluster as time-ordered partitions of known length, and the in-process
steps applied to them partition by partition: the successful-task filter, the time split at
the exact row the in-process split cuts at, the feature spec (kinds from the schema, category
vocabularies from counts summed over partitions, uninformative columns from per-column
statistics summed over partitions) and the encoding through `features.py`.

Nothing here gathers the training rows into one process: only per-partition counts,
statistics, row hashes (8 bytes a row, for the lineage hash) and the holdout come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import HistoryValidationError
from agentlb.features import FeatureSpec, hash_row_blocks, row_hashes
from agentlb.training.data import split_point, training_rows
from agentlb.training.feature_select import (
    ColumnStats,
    FeatureSelection,
    identifiers_from_counts,
    kept_selection,
    uninformative_from_stats,
)
from agentlb.training.tracking import SCHEMA_SAMPLE_ROWS, DatasetSummary

if TYPE_CHECKING:
    import dask.array as da
    import pandas as pd
    from dask.delayed import Delayed

    from distributed import Client


@dataclass(frozen=True)
class PartSummary:
    """One partition's rows, arrival-time range and row hashes."""

    rows: int
    time_start: float | None
    time_end: float | None
    hashes: np.ndarray


def _successful(part: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    return training_rows(part)


def _summary(part: pd.DataFrame) -> PartSummary:
    if "arrival_time" in part.columns and len(part):
        times = part["arrival_time"].to_numpy(dtype=np.float64)
        return PartSummary(len(part), float(times.min()), float(times.max()), row_hashes(part))
    return PartSummary(len(part), None, None, row_hashes(part))


def _rows(part: pd.DataFrame, start: int, stop: int | None) -> pd.DataFrame:
    return part.iloc[start:stop].reset_index(drop=True)


def _value_counts(part: pd.DataFrame, columns: list[str]) -> dict[str, pd.Series]:
    return {c: part[c].dropna().astype(str).value_counts() for c in columns if c in part.columns}


def _sum_counts(*parts: dict[str, pd.Series]) -> dict[str, pd.Series]:
    total: dict[str, pd.Series] = {}
    for counts in parts:
        for column, series in counts.items():
            total[column] = series if column not in total else total[column].add(series, fill_value=0)
    return {c: s.astype("int64") for c, s in total.items()}


def _merge_stats(*parts: ColumnStats) -> ColumnStats:
    merged = parts[0]
    for stats in parts[1:]:
        merged = merged.merge(stats)
    return merged


def _columns(matrix: np.ndarray, kept: list[int]) -> np.ndarray:
    return np.ascontiguousarray(matrix[:, kept])


def _log_duration(part: pd.DataFrame) -> np.ndarray:
    return np.asarray(np.log(part["duration_s"].to_numpy(dtype=np.float64)), dtype=np.float64)


@dataclass
class SplitHistory:
    """Successful tasks split by time: training partitions (on the cluster) and the holdout
    (gathered: the gate, the heuristic and the group mean score it in the client)."""

    meta: pd.DataFrame
    train: list[Delayed]
    train_lengths: list[int]
    holdout: pd.DataFrame
    holdout_parts: list[Delayed]
    dropped: dict[str, int]
    summaries: list[PartSummary]
    cut: int

    @property
    def train_rows(self) -> int:
        return sum(self.train_lengths)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.summaries)

    @property
    def time_range(self) -> tuple[float | None, float | None]:
        starts = [s.time_start for s in self.summaries if s.time_start is not None]
        ends = [s.time_end for s in self.summaries if s.time_end is not None]
        return (min(starts) if starts else None, max(ends) if ends else None)

    def data_hash(self) -> str:
        """`frame_hash` of the successful rows, as in process."""
        return hash_row_blocks(s.hashes for s in self.summaries)

    def datasets(self, client: Client) -> dict[str, DatasetSummary]:
        """The training and holdout sets as MLflow records: the same digests as in process."""
        blocks = [s.hashes for s in self.summaries]
        train_blocks, holdout_blocks = _split_blocks(blocks, self.cut)
        width = len(self.meta.columns)
        sample = client.compute(self.train[0]).result().head(SCHEMA_SAMPLE_ROWS) if self.train else self.meta
        return {
            "training": DatasetSummary(
                sample, hash_row_blocks(train_blocks), self.train_rows, self.train_rows * width
            ),
            "holdout": DatasetSummary(
                self.holdout.head(SCHEMA_SAMPLE_ROWS),
                hash_row_blocks(holdout_blocks),
                len(self.holdout),
                int(self.holdout.size),
            ),
        }

    def train_tail(self, client: Client, rows: int) -> pd.DataFrame:
        """The most recent `rows` training rows, from as few trailing partitions as hold them."""
        import pandas as pd

        wanted: list[Delayed] = []
        have = 0
        for part, length in zip(reversed(self.train), reversed(self.train_lengths), strict=True):
            wanted.append(part)
            have += length
            if have >= rows:
                break
        frames = client.compute(list(reversed(wanted)), sync=True)
        return pd.concat(frames, ignore_index=True).tail(rows).reset_index(drop=True)


def _split_blocks(blocks: list[np.ndarray], cut: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    seen = 0
    for block in blocks:
        if seen + len(block) <= cut:
            before.append(block)
        elif seen >= cut:
            after.append(block)
        else:
            before.append(block[: cut - seen])
            after.append(block[cut - seen :])
        seen += len(block)
    return before, after


def split_history(
    client: Client, history: Any, holdout_frac: float, min_train_rows: int, min_holdout_rows: int
) -> SplitHistory:
    """Keep successful tasks partition by partition and cut the most recent `holdout_frac` off,
    at the row `time_split` cuts at in process. Partitions must be in arrival-time order (each
    sorted by validation); one that starts before its predecessor ends is refused."""
    from dask.delayed import delayed

    from agentlb.training.data import check_split

    meta = history._meta
    pairs = client.persist([delayed(_successful)(part) for part in history.to_delayed()])
    parts = [pair[0] for pair in pairs]
    summaries, dropped_parts = client.compute(
        [[delayed(_summary)(p) for p in parts], [pair[1] for pair in pairs]], sync=True
    )
    _check_order(summaries)
    dropped: dict[str, int] = {}
    for counts in dropped_parts:
        for reason, n in counts.items():
            dropped[reason] = dropped.get(reason, 0) + n
    lengths = [s.rows for s in summaries]
    rows = sum(lengths)
    if rows == 0:
        raise HistoryValidationError("history has no successful tasks to train on")
    cut = split_point(rows, holdout_frac)
    check_split(rows, cut, rows - cut, min_train_rows, min_holdout_rows)
    train: list[Delayed] = []
    train_lengths: list[int] = []
    holdout_parts: list[Delayed] = []
    seen = 0
    for part, length in zip(parts, lengths, strict=True):
        if length == 0:
            pass
        elif seen + length <= cut:
            train.append(part)
            train_lengths.append(length)
        elif seen >= cut:
            holdout_parts.append(part)
        else:
            train.append(delayed(_rows)(part, 0, cut - seen))
            train_lengths.append(cut - seen)
            holdout_parts.append(delayed(_rows)(part, cut - seen, None))
        seen += length
    import pandas as pd

    holdout = pd.concat(client.compute(holdout_parts, sync=True), ignore_index=True)
    return SplitHistory(meta, train, train_lengths, holdout, holdout_parts, dropped, summaries, cut)


def _check_order(summaries: list[PartSummary]) -> None:
    previous_end: float | None = None
    for index, summary in enumerate(summaries):
        if summary.time_start is None or summary.time_end is None:
            continue
        if previous_end is not None and summary.time_start < previous_end:
            raise HistoryValidationError(
                f"history partition {index} starts at arrival_time {summary.time_start} before the previous "
                f"partition ends ({previous_end}); partitions must be in arrival-time order"
            )
        previous_end = summary.time_end


@dataclass
class ClusterFeatures:
    """The feature selection computed on the cluster and the training matrix and log target as
    Dask arrays whose chunks are the training partitions."""

    selection: FeatureSelection
    x_train: da.Array
    log_y: da.Array


def cluster_features(client: Client, split: SplitHistory, max_categories: int = 200) -> ClusterFeatures:
    """`select_features` on the training partitions: the same spec and dropped columns."""
    import dask.array as da
    from dask.delayed import delayed

    numeric, categorical = FeatureSpec.attribute_kinds(split.meta)
    from agentlb.features import CATEGORICAL_BASE

    text_columns = [*CATEGORICAL_BASE, *categorical]
    counts = client.compute(
        delayed(_sum_counts)(*[delayed(_value_counts)(p, text_columns) for p in split.train]), sync=True
    )
    full = FeatureSpec.from_counts(numeric, categorical, counts, max_categories)
    full_parts = client.persist([delayed(full.encode_frame)(p) for p in split.train])
    stats = client.compute(
        delayed(_merge_stats)(*[delayed(ColumnStats.of)(m) for m in full_parts]), sync=True
    )
    dropped = {
        **uninformative_from_stats(full, stats),
        **identifiers_from_counts(full, split.train_rows, counts),
    }
    selection, kept = kept_selection(full, dropped)
    width = len(selection.spec.feature_names)
    if kept == list(range(len(full.feature_names))):
        matrices = full_parts
    else:
        matrices = client.persist([delayed(_columns)(m, kept) for m in full_parts])
        del full_parts
    targets = client.persist([delayed(_log_duration)(p) for p in split.train])
    x_train = da.concatenate(
        [
            da.from_delayed(m, shape=(n, width), dtype=np.float64)
            for m, n in zip(matrices, split.train_lengths, strict=True)
        ]
    )
    log_y = da.concatenate(
        [
            da.from_delayed(t, shape=(n,), dtype=np.float64)
            for t, n in zip(targets, split.train_lengths, strict=True)
        ]
    )
    return ClusterFeatures(selection, x_train, log_y)
