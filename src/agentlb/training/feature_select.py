"""Which columns of a history carry information, and the feature spec trained on.

A history exported from another system may have columns with no values, one value in every
row, or a distinct text value in every row (an identifier). Such columns teach a model
nothing and break some learners (HistGradientBoosting cannot bin a column without values),
so they are left out and reported by name with the reason. Task attributes leave the feature
spec; the fixed serving columns (task type, agent id, `agent_*` state) keep their place in the
layout serving fills, and are reported because the model cannot learn from them.
"""

from __future__ import annotations

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


def uninformative_columns(spec: FeatureSpec, matrix: np.ndarray) -> dict[str, str]:
    """Feature columns of an encoded training matrix with no values or a single value in
    every row, with the reason."""
    reasons: dict[str, str] = {}
    for j, name in enumerate(spec.feature_names):
        column = matrix[:, j]
        present = column[~np.isnan(column)]
        if present.size == 0:
            reasons[name] = "no values in the training rows"
        elif present.size == len(column) and bool(np.all(present == present[0])):
            reasons[name] = f"one value ({_describe(float(present[0]), name, spec)}) in every training row"
    return reasons


def identifier_columns(spec: FeatureSpec, train: pd.DataFrame) -> dict[str, str]:
    """Text attributes with a distinct value in every training row: an identifier, not a category."""
    reasons: dict[str, str] = {}
    if len(train) < MIN_ROWS_FOR_IDENTIFIER:
        return reasons
    for name in spec.categorical_attributes:
        values = train[name].dropna()
        if len(values) == len(train) and values.astype(str).nunique() == len(train):
            reasons[name] = "a distinct value in every training row (an identifier, not a category)"
    return reasons


def select_features(train: pd.DataFrame) -> tuple[FeatureSelection, np.ndarray]:
    """The feature selection for a training frame, and its encoded matrix under the kept spec."""
    full = FeatureSpec.from_frame(train)
    full_matrix = full.encode_frame(train)
    dropped = {**uninformative_columns(full, full_matrix), **identifier_columns(full, train)}
    spec = FeatureSpec(
        [c for c in full.numeric_attributes if c not in dropped],
        [c for c in full.categorical_attributes if c not in dropped],
        {c: v for c, v in full.vocabularies.items() if c not in dropped},
    )
    # the kept spec's names are the full spec's minus dropped attributes, in the same order
    positions = {name: j for j, name in enumerate(full.feature_names)}
    matrix = np.ascontiguousarray(full_matrix[:, [positions[name] for name in spec.feature_names]])
    usable = np.array([name not in dropped for name in spec.feature_names], dtype=bool)
    return FeatureSelection(spec, dropped, usable), matrix
