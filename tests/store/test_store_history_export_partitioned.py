"""`agentlb history export --partition-by day` as a user runs it: a day-partitioned Parquet
dataset that reads back (lazily, in partitions) as the store's history, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from store_helpers import StoreClock, mixed_history
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.history import validate_history
from agentlb.store import Store
from agentlb.training.distributed.source import history_partitions, read_partitioned_history

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def test_the_dataset_reads_back_as_the_stores_history(
    store: Store, clock: StoreClock, db_url: str, tmp_path: Path
) -> None:
    mixed_history(store, clock)
    target = tmp_path / "history"

    code, output = invoke("history", "export", str(target), "--partition-by", "day", "--url", db_url)

    assert code == 0, output
    expected = validate_history(store.history_frame()).frame
    days = sorted({_day(t) for t in expected["arrival_time"]})
    assert f"exported {len(expected)} rows" in output and f"{len(days)} day partition(s)" in output
    assert sorted(p.name for p in target.iterdir()) == [f"day={d}" for d in days]
    assert all((target / f"day={d}" / "part-0.parquet").is_file() for d in days)
    for directory in target.iterdir():
        arrivals = pd.read_parquet(directory / "part-0.parquet")["arrival_time"]
        assert {_day(t) for t in arrivals} == {directory.name.removeprefix("day=")}

    frame = read_partitioned_history(target)
    assert frame.npartitions == len(days)
    assert sum(r or 0 for r in history_partitions(target).rows) == len(expected)
    pd.testing.assert_frame_equal(frame.compute(scheduler="sync").reset_index(drop=True), expected)


def test_since_until_and_overwrite(store: Store, clock: StoreClock, db_url: str, tmp_path: Path) -> None:
    mixed_history(store, clock)
    target = tmp_path / "history"
    assert invoke("history", "export", str(target), "--partition-by", "day", "--url", db_url)[0] == 0
    finished = store.history_frame()["finished_at"]
    since = float(finished.quantile(0.5))

    code, output = invoke(
        "history", "export", str(target), "--partition-by", "day", "--since", str(since), "--url", db_url
    )
    assert code == 1 and "not empty; pass --overwrite" in output

    code, output = invoke(
        "history", "export", str(target), "--partition-by", "day", "--since", str(since),
        "--overwrite", "--url", db_url,
    )
    assert code == 0, output
    expected = validate_history(store.history_frame(since)).frame
    got = read_partitioned_history(target).compute(scheduler="sync").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".history")]  # no staging left


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--partition-by", "week"], "--partition-by"),
        (["--overwrite"], "--overwrite"),
    ],
)
def test_bad_flags_are_named(tmp_path: Path, args: list[str], needle: str) -> None:
    url = f"sqlite:///{tmp_path / 'agentlb.db'}"
    code, output = invoke("history", "export", str(tmp_path / "out.parquet"), *args, "--url", url)
    assert code == 2
    assert needle in output


def test_a_file_name_or_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agentlb.db'}"
    code, output = invoke("history", "export", str(tmp_path / "h.parquet"), "--partition-by", "day",
                          "--url", url)
    assert code == 2 and "dataset directory" in output
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, output = invoke("history", "export", str(foreign), "--partition-by", "day", "--overwrite",
                          "--url", url)
    assert code == 1 and "refusing to replace it" in output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_without_the_flag_export_writes_one_file_as_before(
    store: Store, clock: StoreClock, db_url: str, tmp_path: Path
) -> None:
    mixed_history(store, clock)
    target = tmp_path / "h.parquet"
    code, output = invoke("history", "export", str(target), "--url", db_url)
    assert code == 0, output
    pd.testing.assert_frame_equal(pd.read_parquet(target), store.history_frame())
