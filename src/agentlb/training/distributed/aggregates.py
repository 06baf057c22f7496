"""Exact means and quantiles over partitions, without gathering the rows or shuffling them.

A quantile at `alpha` of n values depends only on the values at and above numpy's sorted
position (about (n - 1) x alpha): each partition sends its top values of each group, the client
keeps the group's overall top and pads the rest with -inf, and `np.quantile` on that gives the
value it gives on all n (same arithmetic, same interpolation). For the p90 that is about a
tenth of the rows, as 8-byte floats.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.training.candidates import GroupMeanTables, group_mean_keys
from agentlb.training.config import GroupMeanConfig

if TYPE_CHECKING:
    import pandas as pd

    from agentlb.training.distributed.partitions import SplitHistory
    from distributed import Client

MARGIN = 2  # positions below numpy's index kept, against rounding in its index arithmetic
Groups = dict[Hashable, np.ndarray]


def top_count(rows: int, alpha: float) -> int:
    """How many of the largest of `rows` values decide their `alpha` quantile."""
    return rows - max(0, int(np.floor((rows - 1) * alpha)) - MARGIN)


def quantile_from_top(top: np.ndarray, rows: int, alpha: float, method: str = "linear") -> float:
    """`np.quantile` of `rows` values at `alpha` from their `top_count(rows, alpha)` largest."""
    kept = np.sort(np.asarray(top, dtype=np.float64))[-top_count(rows, alpha) :]
    padded = np.concatenate([np.full(rows - len(kept), -np.inf), kept])
    return float(np.quantile(padded, alpha, method=method))  # type: ignore[call-overload]


def largest(values: np.ndarray, count: int) -> np.ndarray:
    if count >= len(values):
        return values
    return np.partition(values, len(values) - count)[len(values) - count :]


def _keys(part: pd.DataFrame, keys: list[str]) -> list[pd.Series]:
    return [part[k].astype(str) for k in keys]


def _sums(part: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, float, int]:
    y = part["duration_s"].astype("float64")
    pair = y.groupby(_keys(part, keys)).agg(["sum", "count"])
    by_type = y.groupby(part["task_type"].astype(str)).agg(["sum", "count"])
    return pair, by_type, float(y.sum()), len(y)


def _tops(
    part: pd.DataFrame, keys: list[str], pair_k: dict[Hashable, int], type_k: dict[Hashable, int], all_k: int
) -> tuple[Groups, Groups, np.ndarray]:
    y = part["duration_s"].astype("float64")
    pair = {g: largest(s.to_numpy(), pair_k[g]) for g, s in y.groupby(_keys(part, keys))}
    by_type = {g: largest(s.to_numpy(), type_k[g]) for g, s in y.groupby(part["task_type"].astype(str))}
    return pair, by_type, largest(y.to_numpy(), all_k)


def _add(total: pd.DataFrame | None, part: pd.DataFrame) -> pd.DataFrame:
    return part if total is None else total.add(part, fill_value=0)


def _merge_tops(parts: list[Groups]) -> dict[Hashable, np.ndarray]:
    merged: dict[Hashable, list[np.ndarray]] = {}
    for groups in parts:
        for key, values in groups.items():
            merged.setdefault(key, []).append(values)
    return {key: np.concatenate(blocks) for key, blocks in merged.items()}


def _table(sums: pd.DataFrame, tops: dict[Hashable, np.ndarray], alpha: float) -> pd.DataFrame:
    import pandas as pd

    counts = sums["count"].astype("int64")
    quantiles = [quantile_from_top(tops[key], int(counts[key]), alpha) for key in sums.index]
    return pd.DataFrame(
        {"mean": sums["sum"] / counts, "q": pd.Series(quantiles, index=sums.index), "n": counts},
        index=sums.index,
    )


def group_mean_tables_on(
    client: Client, split: SplitHistory, config: GroupMeanConfig, alpha: float
) -> GroupMeanTables:
    """`group_mean_tables` of the training partitions: sums and counts per group in one pass,
    then each group's top values in a second."""
    from dask.delayed import delayed

    keys = group_mean_keys(split.meta.columns)
    sums: list[Any] = client.compute([delayed(_sums)(part, keys) for part in split.train], sync=True)
    pair_sums: pd.DataFrame | None = None
    type_sums: pd.DataFrame | None = None
    for pair, by_type, _, _ in sums:
        pair_sums, type_sums = _add(pair_sums, pair), _add(type_sums, by_type)
    assert pair_sums is not None and type_sums is not None
    total = sum(s for _, _, s, _ in sums)
    rows = sum(n for _, _, _, n in sums)
    pair_k = {g: top_count(int(n), alpha) for g, n in pair_sums["count"].items()}
    type_k = {g: top_count(int(n), alpha) for g, n in type_sums["count"].items()}
    tops: list[Any] = client.compute(
        [delayed(_tops)(part, keys, pair_k, type_k, top_count(rows, alpha)) for part in split.train],
        sync=True,
    )
    pair_table = _table(pair_sums, _merge_tops([t[0] for t in tops]), alpha)
    type_table = _table(type_sums, _merge_tops([t[1] for t in tops]), alpha)
    overall_q = quantile_from_top(np.concatenate([t[2] for t in tops]), rows, alpha)
    return GroupMeanTables(
        keys,
        pair_table[pair_table["n"] >= config.min_samples],
        type_table[["mean", "q"]],
        total / rows,
        overall_q,
    )
