"""Which columns of a history carry information, and the feature spec trained on.

A history exported from another system may have columns with no values, one value in every
row, or a distinct text value in every row (an identifier). Such columns teach a model
nothing and break some learners (HistGradientBoosting cannot bin a column without values),
so they are left out and reported by name with the reason. Task attributes leave the feature
spec; the fixed serving columns (task type, agent id, `agent_*` state) keep their place in the
layout serving fills, and are reported because the model cannot learn from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agentlb.features import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

MIN_ROWS_FOR_IDENTIFIER = 50  # below this, all-distinct text is no evidence of an identifier


@dataclass(frozen=True)
class FeatureSelection:
    """The spec to train on, the columns left out (name -> why) and the matrix columns the
    learners may use (False for the fixed columns without information)."""

    spec: FeatureSpec
    dropped: dict[str, str]
    usable: np.ndarray


def _describe(value: float, name: str, spec: FeatureSpec) -> str:
    if name in spec.categorical_columns:
        vocabulary = spec.vocabularies.get(name, [])
        code = int(value)
        return repr(vocabulary[code]) if 0 <= code < len(vocabulary) else repr(value)
    return f"{value:g}"


@dataclass(frozen=True)
class ColumnStats:
    """Per feature column of an encoded training matrix: rows, values present, their min and max
    (NaN where none). Summed over blocks, so partitions on a cluster give the whole matrix's."""

    rows: int
    present: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray) -> ColumnStats:
        present = (~np.isnan(matrix)).sum(axis=0)
        with np.errstate(invalid="ignore"):
            masked_low = np.where(np.isnan(matrix), np.inf, matrix).min(axis=0, initial=np.inf)
            masked_high = np.where(np.isnan(matrix), -np.inf, matrix).max(axis=0, initial=-np.inf)
        low = np.where(present > 0, masked_low, np.nan)
        high = np.where(present > 0, masked_high, np.nan)
        return cls(len(matrix), present, low, high)

    def merge(self, other: ColumnStats) -> ColumnStats:
        return ColumnStats(
            self.rows + other.rows,
            self.present + other.present,
            np.fmin(self.low, other.low),
            np.fmax(self.high, other.high),
        )


def uninformative_from_stats(spec: FeatureSpec, stats: ColumnStats) -> dict[str, str]:
    """Feature columns with no values or a single value in every row, with the reason."""
    reasons: dict[str, str] = {}
    for j, name in enumerate(spec.feature_names):
        if stats.present[j] == 0:
            reasons[name] = "no values in the training rows"
        elif stats.present[j] == stats.rows and stats.low[j] == stats.high[j]:
            reasons[name] = f"one value ({_describe(float(stats.low[j]), name, spec)}) in every training row"
    return reasons


def uninformative_columns(spec: FeatureSpec, matrix: np.ndarray) -> dict[str, str]:
    """Feature columns of an encoded training matrix with no values or a single value in
    every row, with the reason."""
    return uninformative_from_stats(spec, ColumnStats.of(matrix))


def identifiers_from_counts(spec: FeatureSpec, rows: int, counts: Mapping[str, pd.Series]) -> dict[str, str]:
    """Text attributes whose value counts (text value -> rows) show a distinct value in every
    training row: an identifier, not a category."""
    reasons: dict[str, str] = {}
    if rows < MIN_ROWS_FOR_IDENTIFIER:
        return reasons
    for name in spec.categorical_attributes:
        found = counts.get(name)
        if found is not None and int(found.sum()) == rows and len(found) == rows:
            reasons[name] = "a distinct value in every training row (an identifier, not a category)"
    return reasons


def identifier_columns(spec: FeatureSpec, train: pd.DataFrame) -> dict[str, str]:
    """Text attributes with a distinct value in every training row: an identifier, not a category."""
    if len(train) < MIN_ROWS_FOR_IDENTIFIER:
        return {}
    counts = {name: train[name].dropna().astype(str).value_counts() for name in spec.categorical_attributes}
    return identifiers_from_counts(spec, len(train), counts)


def kept_selection(full: FeatureSpec, dropped: dict[str, str]) -> tuple[FeatureSelection, list[int]]:
    """The selection without the `dropped` attributes, and the kept columns' positions in the
    full spec's matrix (the kept names are the full spec's minus the dropped, in order)."""
    spec = FeatureSpec(
        [c for c in full.numeric_attributes if c not in dropped],
        [c for c in full.categorical_attributes if c not in dropped],
        {c: v for c, v in full.vocabularies.items() if c not in dropped},
    )
    positions = {name: j for j, name in enumerate(full.feature_names)}
    usable = np.array([name not in dropped for name in spec.feature_names], dtype=bool)
    return FeatureSelection(spec, dropped, usable), [positions[name] for name in spec.feature_names]


def select_features(train: pd.DataFrame) -> tuple[FeatureSelection, np.ndarray]:
    """The feature selection for a training frame, and its encoded matrix under the kept spec."""
    full = FeatureSpec.from_frame(train)
    full_matrix = full.encode_frame(train)
    dropped = {**uninformative_columns(full, full_matrix), **identifier_columns(full, train)}
    selection, kept = kept_selection(full, dropped)
    return selection, np.ascontiguousarray(full_matrix[:, kept])
