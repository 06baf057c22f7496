"""History export/import: dispatch -> outcome -> export -> import into a fresh database ->
identical rows; and imports that must be refused, all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from store_helpers import LiveFleet, StoreClock

from agentlb.domain import TaskOutcome
from agentlb.errors import HistoryValidationError
from agentlb.features import AGENT_STATE_FEATURES
from agentlb.history import read_history, validate_history
from agentlb.store import Store


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store filled the way the live service fills it."""
    clock = StoreClock()
    store = Store.open(f"sqlite:///{tmp_path / 'source.db'}", clock=clock)
    live = LiveFleet(store, clock)
    live.run(30, fail_every=5)
    store.record_outcome(TaskOutcome("slow", 4.0, True, "no-dispatch", "text_analysis"), clock())
    yield store
    store.close()


def write_history(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_gives_identical_rows(source: Store, store: Store, tmp_path: Path, suffix: str) -> None:
    exported = source.history_frame()
    assert len(exported) == source.count_outcomes() == 31
    assert exported["agent_in_flight"].notna().sum() == 30  # all but the outcome without a dispatch
    assert {"complexity", "tokens", *AGENT_STATE_FEATURES} <= set(exported.columns)
    path = tmp_path / f"history{suffix}"
    write_history(exported, path)

    report = store.import_history(read_history(path))
    assert (report.written, report.rejected, report.history_only_agents) == (31, [], ["fast", "mid", "slow"])
    pd.testing.assert_frame_equal(store.history_frame(), exported)

    again = store.import_history(read_history(path))  # the same file twice writes nothing new
    assert (again.written, again.duplicates) == (0, 31)
    assert store.count_outcomes() == 31


def test_export_satisfies_the_history_contract(source: Store) -> None:
    exported = source.history_frame()
    clean = validate_history(exported).frame
    assert len(clean) == len(exported)
    assert set(exported["success"]) == {True, False}


def test_export_window_filters_on_finish_time(source: Store) -> None:
    frame = source.history_frame()
    middle = float(frame["finished_at"].sort_values().iloc[15])
    early, late = source.history_frame(until=middle), source.history_frame(since=middle)
    assert len(early) + len(late) == len(frame)
    assert (early["finished_at"] < middle).all() and (late["finished_at"] >= middle).all()


def test_unknown_agents_become_history_only(store: Store) -> None:
    frame = pd.DataFrame(
        {"task_type": ["a", "b"], "duration_s": [1.0, 2.0], "agent_id": ["legacy-1", "legacy-2"]}
    )
    report = store.import_history(frame)
    assert report.history_only_agents == ["legacy-1", "legacy-2"]
    assert store.get_agent("legacy-1") is None
    assert store.list_agents() == []
    assert [r.agent.id for r in store.list_agents(include_history_only=True)] == ["legacy-1", "legacy-2"]
    assert store.agent_history_summary("legacy-2")["count"] == 1


BAD_HISTORY = """task_id,agent_id,task_type,duration_s
t1,a1,text,1.0
t2,a1,text,-3
t3,,text,2.0
t4,a2,video,4.0
"""


def test_bad_rows_reject_the_whole_import(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_HISTORY)
    with pytest.raises(HistoryValidationError, match=r"row 2: duration_s: must be > 0"):
        store.import_history(read_history(path))
    assert store.count_outcomes() == 0 and store.count_dispatches() == 0
    assert store.list_agents(include_history_only=True) == []


def test_skip_bad_rows_writes_the_rest_and_counts_them(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(BAD_HISTORY)
    report = store.import_history(read_history(path), skip_bad_rows=True)
    assert report.written == 2
    assert [(r.row, r.reason.split(":")[0]) for r in report.rejected] == [(2, "duration_s"), (3, "agent_id")]
    assert store.count_outcomes() == 2


def test_conflict_with_a_stored_outcome_names_the_row(store: Store) -> None:
    store.record_outcome(TaskOutcome("a1", 1.0, True, "t1", "text"), 10.0)
    frame = pd.DataFrame({"task_id": ["t0", "t1"], "agent_id": ["a1", "a1"], "task_type": ["text", "text"],
                          "duration_s": [2.0, 7.0]})
    with pytest.raises(HistoryValidationError, match=r"row 2: task_id: 't1' is already stored .*duration_s"):
        store.import_history(frame)
    assert store.count_outcomes() == 1
