"""The store's history read in arrival-time partitions (the Dask source of issue 21) gives what a
whole read gives: the same rows, columns, dtypes and order, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from store_helpers import LiveFleet, StoreClock

from agentlb.domain import TaskOutcome
from agentlb.errors import HistoryValidationError
from agentlb.history import validate_history
from agentlb.store import Store
from agentlb.training.distributed.source import history_partitions, read_partitioned_history

DAY_S = 86400.0


def _imported_rows(start: float, n: int) -> pd.DataFrame:
    """History from another system: attributes of every kind, some missing, some tasks with an
    unknown fallback flag, spread over two days."""
    rows = []
    for i in range(n):
        row: dict[str, object] = {
            "task_id": f"imp-{i:03d}",
            "agent_id": ("fast", "slow", "mid")[i % 3],
            "task_type": ("text", "video")[i % 2],
            "arrival_time": start + i * (2 * DAY_S / n),
            "duration_s": 1.0 + (i % 7),
            "success": i % 9 != 4,
            "region": ("eu", "us")[i % 2],
            "budget": 0.5 * i,
            "retries": i % 4,  # an integer in every row
            "fallback_used": None if i % 5 == 0 else bool(i % 2),
        }
        if i % 4:
            row["pages"] = i  # an integer some rows lack: float with NaN in a whole read
        rows.append(row)
    return pd.DataFrame(rows)


def _mixed_history(store: Store, clock: StoreClock) -> None:
    """Live dispatches over three days, imported rows, and outcomes reported without a dispatch."""
    live = LiveFleet(store, clock)
    for i in range(120):
        clock.advance(0.8 * DAY_S if i % 40 == 39 else 30.0)
        live.finish(live.dispatch(i), success=i % 7 != 3)
    store.import_history(_imported_rows(clock() - 5 * DAY_S, 60))
    for i in range(10):
        clock.advance(3000.0)
        store.record_outcome(
            TaskOutcome(agent_id="fast", duration_s=2.0 + i, success=True, task_id=f"orphan-{i}",
                        task_type="text"),
            clock(),
        )


def _whole(store: Store, since: float | None = None, until: float | None = None) -> pd.DataFrame:
    return validate_history(store.history_frame(since, until)).frame


def _partitioned(url: str, **kwargs: object) -> pd.DataFrame:
    frame = read_partitioned_history(db_url=url, **kwargs).compute(scheduler="sync")  # type: ignore[arg-type]
    return frame.reset_index(drop=True)


@pytest.mark.parametrize("partition_s", [DAY_S, 3600.0])
def test_partitions_give_the_rows_of_a_whole_read(
    store: Store, clock: StoreClock, db_url: str, partition_s: float
) -> None:
    _mixed_history(store, clock)
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
    _mixed_history(store, clock)
    finished = store.history_frame()["finished_at"]
    since, until = float(finished.quantile(0.2)), float(finished.quantile(0.7))

    got = _partitioned(db_url, since=since, until=until)

    pd.testing.assert_frame_equal(got, _whole(store, since, until))
    assert got["finished_at"].between(since, until, inclusive="left").all()


def test_partitions_are_in_arrival_order_with_counts_known_up_front(
    store: Store, clock: StoreClock, db_url: str
) -> None:
    _mixed_history(store, clock)
    layout = history_partitions(db_url=db_url)
    frame = read_partitioned_history(db_url=db_url)

    assert frame.npartitions == len(layout.partitions) > 3
    assert sum(r or 0 for r in layout.rows) == store.count_outcomes()
    parts = [frame.get_partition(i).compute(scheduler="sync") for i in range(frame.npartitions)]
    assert [len(p) for p in parts] == layout.rows
    for earlier, later in itertools.pairwise(parts):
        assert earlier["arrival_time"].max() <= later["arrival_time"].min()


def test_a_bad_row_names_its_partition_and_task(store: Store, clock: StoreClock, db_url: str) -> None:
    _mixed_history(store, clock)
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
    _mixed_history(store, clock)
    with pytest.raises(HistoryValidationError, match="no finished tasks"):
        history_partitions(db_url=db_url, since=clock() + DAY_S)
    with pytest.raises(ValueError, match="partition_s"):
        history_partitions(db_url=db_url, partition_s=0)
