"""`agentlb history export --partition-by day` as a user runs it: a day-partitioned Parquet
dataset that reads back (lazily, in partitions) as the store's history, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from store_helpers import DAY_S, LiveFleet, StoreClock, fleet, imported_rows, mixed_history
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.domain import TaskOutcome, TaskRequest
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


def _orphan_day_then_imported_days(store: Store, clock: StoreClock, urgent: bool = False) -> None:
    """A day of outcomes reported without a dispatch (no fallback_used, no attribute), then two
    days of imported rows that have them; with `urgent`, a true/false attribute only the first
    imported day holds."""
    for agent in fleet():
        store.add_agent(agent)
    for i in range(5):
        clock.advance(600.0)
        store.record_outcome(
            TaskOutcome(
                agent_id="fast", duration_s=1.0 + i, success=True, task_id=f"orphan-{i}", task_type="text"
            ),
            clock(),
        )
    start = (clock() // DAY_S + 1) * DAY_S + 3600.0
    rows = imported_rows(start, 40)
    if urgent:
        first_day = rows["arrival_time"] < start - 3600.0 + DAY_S
        rows["urgent"] = pd.Series([i % 2 == 1 for i in range(40)], dtype="boolean").where(first_day)
    store.import_history(rows)


def _one_schema(target: Path, rows: int) -> pa.Schema:
    """Every part file's schema, which must be one; and a Parquet reader reads every row."""
    files = sorted(target.glob("day=*/part-0.parquet"))
    assert len(files) == 3
    schemas = [pq.read_schema(f) for f in files]
    assert all(s.equals(schemas[0], check_metadata=True) for s in schemas)
    assert len(pd.read_parquet(target)) == rows
    assert ds.dataset(target, format="parquet", partitioning="hive").count_rows() == rows
    return schemas[0]


def test_a_column_empty_on_one_day_has_its_type_in_every_file(
    store: Store, clock: StoreClock, db_url: str, tmp_path: Path
) -> None:
    _orphan_day_then_imported_days(store, clock)
    target = tmp_path / "history"

    code, output = invoke("history", "export", str(target), "--partition-by", "day", "--url", db_url)

    assert code == 0, output
    expected = validate_history(store.history_frame()).frame
    orphans = pd.read_parquet(sorted(target.glob("day=*/part-0.parquet"))[0])
    assert orphans["fallback_used"].isna().all() and orphans["region"].isna().all()
    schema = _one_schema(target, len(expected))
    assert schema.field("fallback_used").type == pa.bool_()
    assert sorted(pd.read_parquet(target)["task_id"]) == sorted(expected["task_id"])
    frame = read_partitioned_history(target)
    assert frame.npartitions == 3
    pd.testing.assert_frame_equal(frame.compute(scheduler="sync").reset_index(drop=True), expected)


def test_a_true_false_attribute_some_days_lack_has_one_type(
    store: Store, clock: StoreClock, db_url: str, tmp_path: Path
) -> None:
    _orphan_day_then_imported_days(store, clock, urgent=True)
    target = tmp_path / "history"

    code, output = invoke("history", "export", str(target), "--partition-by", "day", "--url", db_url)

    assert code == 0, output
    schema = _one_schema(target, len(store.history_frame()))
    assert schema.field("urgent").type == pa.bool_()
    assert pd.read_parquet(target)["urgent"].count() == 20
    expected = validate_history(store.history_frame()).frame
    assert expected["urgent"].dtype == "boolean" and expected["urgent"].count() == 20
    frame = read_partitioned_history(target)
    assert frame.npartitions == 3
    pd.testing.assert_frame_equal(frame.compute(scheduler="sync").reset_index(drop=True), expected)
    from_store = read_partitioned_history(db_url=db_url).compute(scheduler="sync")
    pd.testing.assert_frame_equal(from_store.reset_index(drop=True), expected)


def test_an_attribute_of_two_kinds_is_refused_before_anything_is_written(
    store: Store, clock: StoreClock, db_url: str, tmp_path: Path
) -> None:
    live = LiveFleet(store, clock)
    for i, tier in enumerate((1, 2, "gold", "silver")):
        clock.advance(DAY_S / 2)
        task = TaskRequest(
            task_type="text",
            required_capabilities=frozenset({"work"}),
            requirements={"tier": tier},
            task_id=f"tier-{i}",
        )
        result = live.balancer.select(task, "least_connection")
        store.record_dispatch(result)
        live.open.append(result)
        live.finish(result)
    target = tmp_path / "history"

    code, output = invoke("history", "export", str(target), "--partition-by", "day", "--url", db_url)

    assert code == 1 and "'tier'" in output and "more than one kind" in output
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".history")]  # no staging either


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
