"""The batched write path (group commit): `record_dispatches` and `record_outcomes` keep the
one-by-one semantics per item, and a failing batch writes nothing. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from store_helpers import TASK_TYPES, LiveFleet, StoreClock

from agentlb.domain import SelectionResult, TaskOutcome, TaskRequest
from agentlb.errors import (
    ConflictingOutcomeError,
    DuplicateTaskError,
    InvalidOutcomeError,
    StoreUnavailableError,
)
from agentlb.store import OutcomeWrite, Store, normalise_url


def selections(live: LiveFleet, first: int, n: int) -> list[SelectionResult]:
    """Selections the balancer made but nobody logged yet."""
    results = []
    for i in range(first, first + n):
        task = TaskRequest(
            task_type=TASK_TYPES[i % len(TASK_TYPES)],
            required_capabilities=frozenset({"work"}),
            requirements={"complexity": ("low", "high")[i % 2], "tokens": 100 + i},
            task_id=f"batch-{i:04d}",
        )
        results.append(live.balancer.select(task, "predictive"))
    return results


def break_outcome_writes(url: str, only_task_id: str | None = None) -> None:
    """Make the database fail inserts into task_outcomes with an operational error (not a
    constraint): PostgreSQL raises disk_full from a trigger; SQLite's trigger parses malformed
    JSON. With `only_task_id`, only that row's insert fails."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                condition = "" if only_task_id is None else f"IF NEW.task_id = '{only_task_id}' THEN "
                end = "" if only_task_id is None else " END IF;"
                conn.execute(
                    text(
                        "CREATE FUNCTION agentlb_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                        f"{condition}RAISE EXCEPTION 'No space left on device' "
                        f"USING ERRCODE = 'disk_full';{end} "
                        "RETURN NEW; END $$"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER agentlb_disk_full BEFORE INSERT ON task_outcomes "
                        "FOR EACH ROW EXECUTE FUNCTION agentlb_disk_full()"
                    )
                )
            else:
                poisoned = "1" if only_task_id is None else f"NEW.task_id = '{only_task_id}'"
                conn.execute(
                    text(
                        "CREATE TRIGGER agentlb_disk_full BEFORE INSERT ON task_outcomes "
                        f"BEGIN SELECT json(CASE WHEN {poisoned} THEN 'not json' ELSE '{{}}' END); END"
                    )
                )
    finally:
        engine.dispose()


def test_record_dispatches_logs_each_selection_exactly_once(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    results = selections(live, 0, 40)
    assert store.record_dispatches(results) == [None] * 40
    assert store.count_dispatches() == 40
    for result in (results[0], results[17], results[-1]):
        stored = store.get_dispatch(result.task_id)
        assert stored is not None
        assert stored.agent_id == result.selected_agent.id
        assert stored.task_type == result.task_type
        assert stored.attributes == dict(result.task_attributes)
        assert set(stored.features) >= {"agent_in_flight", "agent_load_score"}
        assert result.predicted_completion is not None
        assert stored.predicted_p50_s == pytest.approx(result.predicted_completion.p50_s)
        assert stored.dispatched_at == result.dispatched_at
    assert store.record_dispatches([]) == []


def test_a_duplicate_task_id_fails_only_its_own_row(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    results = selections(live, 0, 6)
    store.record_dispatch(results[2])
    answers = store.record_dispatches(results)
    assert [type(a) for a in answers] == [type(None)] * 2 + [DuplicateTaskError] + [type(None)] * 3
    assert store.count_dispatches() == 6


def test_record_outcomes_has_the_semantics_of_record_outcome(store: Store) -> None:
    store.record_outcome(TaskOutcome("alpha", 2.0, True, "stored-same"), 100.0)
    store.record_outcome(TaskOutcome("alpha", 2.0, True, "stored-other"), 100.0)
    answers = store.record_outcomes(
        [
            (TaskOutcome("alpha", 3.0, True, "new", "text", cpu_usage=40.0), 200.0),
            (TaskOutcome("alpha", 2.0, True, "stored-same"), 200.0),  # identical repeat
            (TaskOutcome("beta", 2.0, False, "stored-other"), 200.0),  # differs: agent, success
            (TaskOutcome("alpha", 0.0, True, "bad"), 200.0),  # a success takes time
            (TaskOutcome("alpha", 1.0, True, "twice"), 200.0),
            (TaskOutcome("alpha", 1.0, True, "twice"), 201.0),  # repeat inside the batch
            (TaskOutcome("alpha", 5.0, True, "twice"), 202.0),  # conflict inside the batch
        ]
    )
    assert answers[0] == OutcomeWrite("new", True)
    assert answers[1] == OutcomeWrite("stored-same", False)
    assert isinstance(answers[2], ConflictingOutcomeError) and answers[2].fields == ["agent_id", "success"]
    assert isinstance(answers[3], InvalidOutcomeError)
    assert answers[4] == OutcomeWrite("twice", True)
    assert answers[5] == OutcomeWrite("twice", False)
    assert isinstance(answers[6], ConflictingOutcomeError) and answers[6].fields == ["duration_s"]
    assert store.count_outcomes() == 4
    new = store.get_outcome("new")
    assert new is not None and (new.duration_s, new.cpu_usage, new.finished_at) == (3.0, 40.0, 200.0)
    twice = store.get_outcome("twice")
    assert twice is not None and (twice.duration_s, twice.finished_at) == (1.0, 200.0)
    # the same items one by one give the same answers
    assert store.record_outcome(TaskOutcome("alpha", 2.0, True, "stored-same"), 300.0).created is False
    with pytest.raises(ConflictingOutcomeError):
        store.record_outcome(TaskOutcome("alpha", 5.0, True, "twice"), 300.0)


def test_a_failing_batch_writes_nothing(store: Store, db_url: str) -> None:
    store.record_outcome(TaskOutcome("alpha", 2.0, True, "before"), 100.0)
    break_outcome_writes(db_url, only_task_id="poison")
    batch = [(TaskOutcome("alpha", 1.0 + i, True, f"good-{i}"), 200.0) for i in range(5)]
    batch.insert(3, (TaskOutcome("alpha", 1.0, True, "poison"), 200.0))
    with pytest.raises(StoreUnavailableError, match="record_outcomes"):
        store.record_outcomes(batch)
    assert store.count_outcomes() == 1
    assert store.get_outcome("good-0") is None
    # without the poisoned row the same batch goes through
    answers = store.record_outcomes(batch[:3] + batch[4:])
    assert all(isinstance(a, OutcomeWrite) and a.created for a in answers)
    assert store.count_outcomes() == 6
