"""The store's history read in arrival-time partitions (the Dask source of issue 21) gives what a
whole read gives: the same rows, columns, dtypes and order, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from store_helpers import LiveFleet, StoreClock, mixed_history

from agentlb.domain import TaskOutcome
from agentlb.errors import HistoryValidationError
from agentlb.history import validate_history
from agentlb.store import Store
from agentlb.training.distributed.source import history_partitions, read_partitioned_history

DAY_S = 86400.0


def _whole(store: Store, since: float | None = None, until: float | None = None) -> pd.DataFrame:
    return validate_history(store.history_frame(since, until)).frame


def _partitioned(url: str, **kwargs: object) -> pd.DataFrame:
    frame = read_partitioned_history(db_url=url, **kwargs).compute(scheduler="sync")  # type: ignore[arg-type]
    return frame.reset_index(drop=True)


@pytest.mark.parametrize("partition_s", [DAY_S, 3600.0])
def test_partitions_give_the_rows_of_a_whole_read(
    store: Store, clock: StoreClock, db_url: str, partition_s: float
) -> None:
    mixed_history(store, clock)
    expected = _whole(store)
    assert expected["pages"].dtype == "float64" and expected["region"].dtype == "str"

    got = _partitioned(db_url, partition_s=partition_s)

    pd.testing.assert_frame_equal(got, expected)


def test_integer_attributes_in_every_row_stay_integers(
    store: Store, clock: StoreClock, db_url: str
) -> None:
    live = LiveFleet(store, clock)
    for i in range(60):
        clock.advance(0.1 * DAY_S)
        live.finish(live.dispatch(i))
    expected = _whole(store)
    assert expected["tokens"].dtype == "int64"

    pd.testing.assert_frame_equal(_partitioned(db_url), expected)


def test_since_until_select_by_finish_time_as_a_whole_read(
    store: Store, clock: StoreClock, db_url: str
) -> None:
    mixed_history(store, clock)
    finished = store.history_frame()["finished_at"]
    since, until = float(finished.quantile(0.2)), float(finished.quantile(0.7))

    got = _partitioned(db_url, since=since, until=until)

    pd.testing.assert_frame_equal(got, _whole(store, since, until))
    assert got["finished_at"].between(since, until, inclusive="left").all()


def test_partitions_are_in_arrival_order_with_counts_known_up_front(
    store: Store, clock: StoreClock, db_url: str
) -> None:
    mixed_history(store, clock)
    layout = history_partitions(db_url=db_url)
    frame = read_partitioned_history(db_url=db_url)

    assert frame.npartitions == len(layout.partitions) > 3
    assert sum(r or 0 for r in layout.rows) == store.count_outcomes()
    parts = [frame.get_partition(i).compute(scheduler="sync") for i in range(frame.npartitions)]
    assert [len(p) for p in parts] == layout.rows
    for earlier, later in itertools.pairwise(parts):
        assert earlier["arrival_time"].max() <= later["arrival_time"].min()


def test_a_bad_row_names_its_partition_and_task(store: Store, clock: StoreClock, db_url: str) -> None:
    mixed_history(store, clock)
    clock.advance(DAY_S)
    store.record_outcome(
        TaskOutcome(agent_id="fast", duration_s=3.0, success=True, task_id="no-type", task_type=None), clock()
    )

    with pytest.raises(HistoryValidationError) as raised:
        _partitioned(db_url)
    message = str(raised.value)
    assert "store tasks arriving in [" in message
    assert "task_type: missing" in message and "'no-type'" in message

    got = _partitioned(db_url, skip_bad_rows=True)
    expected = validate_history(store.history_frame(), skip_bad_rows=True).frame
    pd.testing.assert_frame_equal(got, expected)
    assert "no-type" not in set(got["task_id"])


def test_an_empty_window_is_a_clear_error(store: Store, clock: StoreClock, db_url: str) -> None:
    mixed_history(store, clock)
    with pytest.raises(HistoryValidationError, match="no finished tasks"):
        history_partitions(db_url=db_url, since=clock() + DAY_S)
    with pytest.raises(ValueError, match="partition_s"):
        history_partitions(db_url=db_url, partition_s=0)
    with pytest.raises(ValueError, match="in-memory SQLite"):
        history_partitions(db_url="sqlite://")


def test_an_arrival_range_is_read_by_index(store: Store, db_url: str) -> None:
    from sqlalchemy import text

    from agentlb.store.history_reader import history_query

    with store.reading("test") as conn:
        if store.is_sqlite:
            indexes = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
        else:
            indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes")).scalars())
        assert {"ix_task_outcomes_estimated_arrival", "ix_task_dispatches_dispatched_at"} <= indexes
        if store.is_sqlite:  # PostgreSQL's planner picks by table statistics; SQLite's plan is fixed
            query = history_query(arrival_from=0.0, arrival_to=DAY_S)
            sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "USING INDEX ix_task_dispatches_dispatched_at" in plan
            assert "USING INDEX ix_task_outcomes_estimated_arrival" in plan
