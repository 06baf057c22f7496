"""Loading, validating and splitting the history for training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import HistoryValidationError
from agentlb.features import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

    from agentlb.history import RejectedRow


@dataclass
class PreparedHistory:
    """A validated history split by time into train (the past) and holdout (the most recent)."""

    frame: pd.DataFrame
    train: pd.DataFrame
    holdout: pd.DataFrame
    rejected: list[RejectedRow] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def time_range(self) -> tuple[float | None, float | None]:
        if "arrival_time" not in self.frame.columns or self.frame.empty:
            return None, None
        return float(self.frame["arrival_time"].min()), float(self.frame["arrival_time"].max())


def load_history_frame(source: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A frame as given, or a CSV/Parquet file read through `agentlb.history.read_history`."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    from agentlb.history import read_history

    return read_history(source)


def training_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Successful tasks with a positive duration: the model predicts how long work takes when
    it succeeds. Returns the rows kept and how many were dropped, by reason."""
    dropped: dict[str, int] = {}
    keep = frame["success"].astype(bool) if "success" in frame.columns else None
    if keep is not None and not bool(keep.all()):
        dropped["failed_task"] = int((~keep).sum())
        frame = frame[keep]
    positive = frame["duration_s"].astype(float) > 0
    if not bool(positive.all()):
        dropped["non_positive_duration"] = int((~positive).sum())
        frame = frame[positive]
    return frame.reset_index(drop=True), dropped


def time_split(frame: pd.DataFrame, holdout_frac: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the past, hold out the most recent `holdout_frac` (by arrival_time; by row order
    when the history has no times). Never random: a random split leaks the future."""
    if "arrival_time" in frame.columns:
        frame = frame.sort_values("arrival_time", kind="stable")
    cut = split_point(len(frame), holdout_frac)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def split_point(rows: int, holdout_frac: float) -> int:
    """How many of `rows` time-ordered rows are trained on: all but the most recent
    `holdout_frac` (at least one row is held out)."""
    return rows - max(1, math.ceil(rows * holdout_frac))


def check_split(
    rows: int, train_rows: int, holdout_rows: int, min_train_rows: int, min_holdout_rows: int
) -> None:
    """Refuse a split too small to train and evaluate on."""
    if train_rows < min_train_rows or holdout_rows < min_holdout_rows:
        raise HistoryValidationError(
            f"too little history to train: {rows} successful tasks give {train_rows} training and "
            f"{holdout_rows} holdout rows; need at least {min_train_rows} and {min_holdout_rows}"
        )


def prepare_history(
    source: pd.DataFrame | str | Path,
    holdout_frac: float,
    *,
    skip_bad_rows: bool = False,
    min_train_rows: int = 100,
    min_holdout_rows: int = 20,
) -> PreparedHistory:
    """Validate (`agentlb.history.validate_history`), keep successful tasks, split by time."""
    from agentlb.history import validate_history

    validated = validate_history(load_history_frame(source), skip_bad_rows=skip_bad_rows)
    rows, dropped = training_rows(validated.frame)
    train, holdout = time_split(rows, holdout_frac)
    check_split(len(rows), len(train), len(holdout), min_train_rows, min_holdout_rows)
    return PreparedHistory(rows, train, holdout, list(validated.rejected), dropped)


def encode(spec: FeatureSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (through `FeatureSpec.encode_frame`, the serving encoding) and log target."""
    matrix = spec.encode_frame(frame)
    target = np.log(frame["duration_s"].to_numpy(dtype=np.float64))
    return matrix, target


def describe_rejections(rejected: list[RejectedRow], limit: int = 20) -> list[dict[str, Any]]:
    return [{"row": r.row, "reason": r.reason} for r in rejected[:limit]]
