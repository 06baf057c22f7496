"""History files and Parquet datasets read in partitions (the Dask source of issue 21): the same
frame `read_history` + `validate_history` give, partitions in arrival order, bad rows named."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from agentlb.errors import HistoryValidationError
from agentlb.features import FeatureSpec
from agentlb.history import read_history, validate_history
from agentlb.training.distributed.source import history_partitions, read_partitioned_history
from agentlb.training.synthetic import synthetic_history

DAY_S = 86400.0
START = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def _history(n: int = 600, seed: int = 5) -> pd.DataFrame:
    frame = synthetic_history(n, seed=seed)
    span = float(frame["arrival_time"].max())
    frame["arrival_time"] = START + frame["arrival_time"] * (4 * DAY_S / span)  # over five UTC days
    return frame


def _dataset(root: Path, frame: pd.DataFrame) -> Path:
    """One file per UTC day of arrival, as `history export --partition-by day` lays it out."""
    days = pd.to_datetime(frame["arrival_time"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    for day, part in frame.groupby(days):
        (root / f"day={day}").mkdir(parents=True)
        part.to_parquet(root / f"day={day}" / "part-0.parquet", index=False)
    return root


def _computed(source: Path, **kwargs: object) -> pd.DataFrame:
    frame = read_partitioned_history(source, **kwargs).compute(scheduler="sync")  # type: ignore[arg-type]
    return frame.reset_index(drop=True)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_single_file_is_what_a_whole_read_gives(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"history{suffix}"
    frame = _history()
    frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)

    got = _computed(path)

    pd.testing.assert_frame_equal(got, validate_history(read_history(path)).frame)


def test_a_dataset_reads_day_by_day_in_arrival_order(tmp_path: Path) -> None:
    frame = _history()
    root = _dataset(tmp_path / "ds", frame)
    layout = history_partitions(root)

    lazy = read_partitioned_history(root)

    assert lazy.npartitions == len(layout.partitions) == len(list(root.iterdir())) >= 3
    assert sum(r or 0 for r in layout.rows) == len(frame)
    pd.testing.assert_frame_equal(_computed(root), validate_history(frame).frame)
    parts = [lazy.get_partition(i).compute(scheduler="sync") for i in range(lazy.npartitions)]
    assert [len(p) for p in parts] == layout.rows
    assert all(a["arrival_time"].max() <= b["arrival_time"].min() for a, b in itertools.pairwise(parts))


def test_files_with_different_attributes_share_one_schema(tmp_path: Path) -> None:
    frame = _history()
    root = _dataset(tmp_path / "ds", frame)
    first = sorted(root.iterdir())[0] / "part-0.parquet"
    pd.read_parquet(first).drop(columns=["priority"]).assign(region="eu").to_parquet(first, index=False)

    got = _computed(root)

    assert "region" in got.columns and "priority" in got.columns
    assert got["priority"].dtype == "float64"  # missing in one file, as a whole read gives it
    assert got["region"].dtype == "str"
    whole = validate_history(pd.concat([pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))])).frame
    pd.testing.assert_frame_equal(got, whole, check_like=True)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_true_false_attribute_some_rows_lack_reads_as_a_whole_read(tmp_path: Path, suffix: str) -> None:
    frame = _history()
    days = pd.to_datetime(frame["arrival_time"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    cached = pd.Series([i % 3 == 0 for i in range(len(frame))], dtype=object)
    frame["cached"] = cached.where((days != days.min()) & (frame.index % 5 != 0), None)  # no value day 1
    path = tmp_path / f"history{suffix}"
    frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
    root = _dataset(tmp_path / "ds", frame)

    whole = validate_history(read_history(path)).frame

    assert whole["cached"].dtype == "boolean" and whole["cached"].count() == frame["cached"].count()
    pd.testing.assert_frame_equal(_computed(path), whole)
    pd.testing.assert_frame_equal(_computed(root), validate_history(frame).frame)
    kinds = FeatureSpec.attribute_kinds(whole)
    assert "cached" in kinds[0]  # a numeric (bool) feature, on a cluster as in one process:
    assert FeatureSpec.attribute_kinds(history_partitions(root).meta) == kinds


def test_out_of_order_partitions_are_refused(tmp_path: Path) -> None:
    frame = _history()
    root = _dataset(tmp_path / "ds", frame)
    last = sorted(root.iterdir())[-1] / "part-0.parquet"
    early = pd.read_parquet(last).assign(arrival_time=START - DAY_S)
    early.to_parquet(last, index=False)

    with pytest.raises(HistoryValidationError, match="arrival-time order") as raised:
        history_partitions(root)
    assert str(last) in str(raised.value)


def test_a_bad_row_names_its_file_and_row(tmp_path: Path) -> None:
    frame = _history()
    root = _dataset(tmp_path / "ds", frame)
    middle = sorted(root.iterdir())[1] / "part-0.parquet"
    part = pd.read_parquet(middle)
    part.loc[4, "duration_s"] = -1.0
    part.to_parquet(middle, index=False)
    bad_task = part.loc[4, "task_id"]

    with pytest.raises(HistoryValidationError) as raised:
        _computed(root)
    message = str(raised.value)
    assert str(middle) in message and f"row 5 (task_id {bad_task!r}): duration_s" in message

    got = _computed(root, skip_bad_rows=True)
    assert len(got) == len(frame) - 1 and bad_task not in set(got["task_id"])


def test_since_until_keep_tasks_finished_in_the_window(tmp_path: Path) -> None:
    frame = _history().assign(finished_at=lambda f: f["arrival_time"] + f["duration_s"])
    root = _dataset(tmp_path / "ds", frame)
    since, until = float(frame["finished_at"].quantile(0.3)), float(frame["finished_at"].quantile(0.6))

    got = _computed(root, since=since, until=until)

    expected = validate_history(frame[(frame["finished_at"] >= since) & (frame["finished_at"] < until)]).frame
    pd.testing.assert_frame_equal(got, expected)


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HistoryValidationError, match="not found"):
        history_partitions(tmp_path / "nowhere.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HistoryValidationError, match=r"no \.parquet files"):
        history_partitions(tmp_path / "empty")
    with pytest.raises(ValueError, match="db_url"):
        history_partitions()
