"""Bad histories give clear errors naming the row and field; the time split never leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agentlb.errors import HistoryValidationError
from agentlb.training.data import prepare_history, time_split


def _bad(history: pd.DataFrame, **changes: object) -> pd.DataFrame:
    frame = history.copy()
    for key, value in changes.items():
        column, _, row = key.rpartition("__")
        frame[column] = frame[column].astype(object)
        frame.loc[int(row), column] = value
    return frame


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"duration_s__4": -1.0}, r"row 5: duration_s"),
        ({"duration_s__9": "slow"}, r"row 10: duration_s"),
        ({"duration_s__2": float("inf")}, r"row 3: duration_s"),
        ({"arrival_time__7": "yesterday-ish"}, r"row 8: arrival_time"),
        ({"task_type__3": None}, r"row 4: task_type"),
        ({"success__6": "maybe"}, r"row 7: success"),
        ({"task_id__11": "t1-0000000"}, r"row 12: task_id"),
        ({"agent_in_flight__5": "many"}, r"row 6: agent_in_flight"),
    ],
)
def test_bad_row_is_named(history: pd.DataFrame, change: dict[str, object], expected: str) -> None:
    with pytest.raises(HistoryValidationError, match=expected):
        prepare_history(_bad(history, **change), 0.2)


def test_skip_bad_rows_counts_them(history: pd.DataFrame) -> None:
    frame = _bad(history, duration_s__4=-1.0, arrival_time__7="never")
    prepared = prepare_history(frame, 0.2, skip_bad_rows=True)
    assert [r.row for r in prepared.rejected] == [5, 8]
    assert len(prepared.train) + len(prepared.holdout) == int(history["success"].sum()) - sum(
        bool(history["success"].iloc[i]) for i in (4, 7)
    )


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pd.DataFrame({"task_type": ["a"], "arrival_time": [1.0]}), "missing required column"),
        (
            pd.DataFrame({"task_type": pd.Series([], dtype=str), "duration_s": pd.Series([], dtype=float)}),
            "no data",
        ),
        (pd.DataFrame({"task_type": ["a"], "duration_s": [1.0], "agent_mood": [1.0]}), "agent_mood"),
    ],
)
def test_bad_columns(frame: pd.DataFrame, expected: str) -> None:
    with pytest.raises(HistoryValidationError, match=expected):
        prepare_history(frame, 0.2)


def test_too_little_history(history: pd.DataFrame) -> None:
    with pytest.raises(HistoryValidationError, match="too little history"):
        prepare_history(history.head(50), 0.2)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("")
    with pytest.raises(HistoryValidationError):
        prepare_history(path, 0.2)


def test_failed_tasks_are_not_training_targets(history: pd.DataFrame) -> None:
    prepared = prepare_history(history, 0.2)
    assert prepared.dropped == {"failed_task": int((~history["success"]).sum())}
    assert bool(prepared.train["success"].all()) and bool(prepared.holdout["success"].all())


def test_time_split_holds_out_the_most_recent(history: pd.DataFrame) -> None:
    shuffled = history.sample(frac=1.0, random_state=3)
    prepared = prepare_history(shuffled, 0.25)
    assert prepared.train["arrival_time"].max() <= prepared.holdout["arrival_time"].min()
    n = len(prepared.train) + len(prepared.holdout)
    assert len(prepared.holdout) == int(np.ceil(0.25 * n))
    assert not set(prepared.train["task_id"]) & set(prepared.holdout["task_id"])


def test_time_split_without_times_keeps_file_order() -> None:
    frame = pd.DataFrame({"task_type": ["a"] * 10, "duration_s": np.arange(1.0, 11.0)})
    train, holdout = time_split(frame, 0.3)
    assert holdout["duration_s"].tolist() == [8.0, 9.0, 10.0]
    assert train["duration_s"].tolist() == [float(i) for i in range(1, 8)]
