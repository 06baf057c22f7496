"""Repository behaviour on SQLite and PostgreSQL: registry, outcomes, analytics, failures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from store_helpers import LiveFleet, StoreClock

from agentlb.domain import Agent, TaskOutcome
from agentlb.errors import (
    ConflictingAgentError,
    ConflictingOutcomeError,
    DuplicateTaskError,
    InvalidOutcomeError,
    InvalidRecordError,
    StoreUnavailableError,
    UnknownAgentError,
)
from agentlb.store import Store

ALPHA = Agent(
    id="alpha", name="Alpha", capabilities=frozenset({"text", "video"}), max_concurrency=3, weight=1.5
)


# --- schema ------------------------------------------------------------------------------
def test_open_creates_the_sqlite_directory_and_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'agentlb.db'}"
    first = Store.open(url)
    first.add_agent(ALPHA)
    first.close()
    second = Store.open(url)  # upgrading again changes nothing and keeps the data
    assert second.schema_revision() == "0003"
    assert second.get_agent("alpha") == ALPHA
    second.close()


def test_sqlite_synchronous_can_be_chosen_in_the_url(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'full.db'}?synchronous=FULL")
    assert store.record_outcome(TaskOutcome("alpha", 1.0, True, "t1"), 1.0).created
    assert store.display_url.endswith("full.db")  # the option is not passed on to the driver
    store.close()


def test_unmigrated_database_says_to_run_db_upgrade(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(StoreUnavailableError, match="agentlb db upgrade"):
        store.ping()
    store.close()


# --- agent registry ----------------------------------------------------------------------
def test_add_agent_is_idempotent_and_refuses_a_different_definition(store: Store) -> None:
    assert store.add_agent(ALPHA) is True
    assert store.add_agent(ALPHA) is False
    with pytest.raises(ConflictingAgentError, match=r"'alpha'.*differs in: max_concurrency"):
        store.add_agent(Agent(id="alpha", name="Alpha", capabilities=ALPHA.capabilities, max_concurrency=9,
                              weight=1.5))
    assert store.get_agent("alpha") == ALPHA


def test_upsert_updates_the_definition_and_keeps_created_at(store: Store, clock: StoreClock) -> None:
    store.add_agent(ALPHA)
    created = store.list_agents()[0].created_at
    clock.advance(60)
    changed = Agent(id="alpha", name="Alpha 2", capabilities=frozenset({"text"}), enabled=False,
                    metadata={"region": "eu"})
    store.upsert_agent(changed)
    (row,) = store.list_agents()
    assert row.agent == changed
    assert (row.created_at, row.updated_at) == (created, created + 60)


def test_delete_keeps_history_and_the_agent_becomes_history_only(store: Store) -> None:
    store.add_agent(ALPHA)
    store.record_outcome(TaskOutcome("alpha", 2.0, True, "t1", "text"), 100.0)
    store.delete_agent("alpha")
    assert store.get_agent("alpha") is None
    assert store.list_agents() == []
    (row,) = store.list_agents(include_history_only=True)
    assert row.history_only and row.agent.id == "alpha"
    assert store.get_outcome("t1") is not None
    with pytest.raises(UnknownAgentError):
        store.delete_agent("alpha")
    assert store.add_agent(ALPHA) is True  # registering it again makes it selectable again
    assert store.get_agent("alpha") == ALPHA


def test_delete_unknown_agent_raises(store: Store) -> None:
    with pytest.raises(UnknownAgentError, match="ghost"):
        store.delete_agent("ghost")


# --- dispatches and outcomes ---------------------------------------------------------------
def test_dispatch_logs_what_the_predictor_saw(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    result = live.dispatch(1, strategy="predictive")
    stored = store.get_dispatch(result.task_id)
    assert stored is not None
    assert stored.agent_id == result.selected_agent.id
    assert stored.strategy == "predictive"
    assert stored.task_type == result.task_type
    assert stored.attributes == {"complexity": "high", "tokens": 137}
    assert stored.features["agent_max_concurrency"] == float(result.selected_agent.max_concurrency)
    assert set(stored.features) >= {"agent_in_flight", "agent_load_score", "agent_success_rate"}
    assert result.predicted_completion is not None
    assert stored.predicted_p50_s == pytest.approx(result.predicted_completion.p50_s)
    assert stored.service_p90_s == pytest.approx(result.predicted_completion.service_p90_s)
    assert stored.model_version == result.model_version
    assert stored.confidence == pytest.approx(result.confidence_score)
    assert stored.dispatched_at == clock()
    assert store.count_dispatches() == 1
    with pytest.raises(DuplicateTaskError):
        store.record_dispatch(result)


def test_same_outcome_twice_is_recorded_once(store: Store) -> None:
    outcome = TaskOutcome("alpha", 2.5, True, "t1", "text", cpu_usage=40.0)
    first = store.record_outcome(outcome, 100.0)
    second = store.record_outcome(outcome, 130.0)
    assert (first.created, second.created) == (True, False)
    assert store.count_outcomes() == 1
    stored = store.get_outcome("t1")
    assert stored is not None
    assert (stored.duration_s, stored.success, stored.finished_at) == (2.5, True, 100.0)
    assert stored.cpu_usage == 40.0


@pytest.mark.parametrize(
    ("second", "field"),
    [
        (TaskOutcome("alpha", 9.0, True, "t1"), "duration_s"),
        (TaskOutcome("alpha", 2.5, False, "t1"), "success"),
        (TaskOutcome("beta", 2.5, True, "t1"), "agent_id"),
    ],
)
def test_conflicting_second_outcome_is_rejected(store: Store, second: TaskOutcome, field: str) -> None:
    store.record_outcome(TaskOutcome("alpha", 2.5, True, "t1"), 100.0)
    with pytest.raises(ConflictingOutcomeError, match=field):
        store.record_outcome(second, 101.0)
    stored = store.get_outcome("t1")
    assert stored is not None and stored.duration_s == 2.5
    assert store.count_outcomes() == 1


def test_outcome_without_dispatch_or_task_id_is_stored(store: Store) -> None:
    write = store.record_outcome(TaskOutcome("alpha", 1.0, True, task_type="text"), 50.0)
    assert write.created and write.task_id
    assert store.get_dispatch(write.task_id) is None
    assert store.get_outcome(write.task_id) is not None


def test_a_successful_task_must_take_time(store: Store) -> None:
    with pytest.raises(InvalidOutcomeError, match="duration_s must be > 0 for a successful task"):
        store.record_outcome(TaskOutcome("alpha", 0.0, True, "t1"), 1.0)
    assert store.record_outcome(TaskOutcome("alpha", 0.0, False, "t2"), 1.0).created  # a failure may
    assert store.count_outcomes() == 1


# --- weights and deployments -----------------------------------------------------------------
def test_latest_weights_and_their_history(store: Store, clock: StoreClock) -> None:
    assert store.latest_weights() is None
    store.record_weights({"predictive": 0.7, "least_connection": 0.3}, "ops@example")
    clock.advance(5)
    store.record_weights({"predictive": 0.1, "least_connection": 0.9}, "admin")
    assert store.latest_weights() == {"predictive": 0.1, "least_connection": 0.9}
    history = store.weight_history()
    assert [h["changed_by"] for h in history] == ["admin", "ops@example"]
    store.record_deployment("7", "champion", "models:/agentlb-completion-time@champion")
    assert store.deployments()[0]["version"] == "7"


# --- analytics ---------------------------------------------------------------------------------
def test_prediction_accuracy_per_model_version(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    results = [live.dispatch(i, strategy="predictive") for i in range(4)]
    durations = [1.0, 2.0, 3.0, 50.0]
    for result, duration in zip(results, durations, strict=True):
        store.record_outcome(TaskOutcome(result.selected_agent.id, duration, True, result.task_id), clock())
    (row,) = store.prediction_accuracy()
    predictions = [r.predicted_completion for r in results]
    assert all(p is not None for p in predictions)
    p50 = [p.service_p50_s for p in predictions if p is not None]
    p90 = [p.service_p90_s for p in predictions if p is not None]
    assert row.model_version == (results[0].model_version or "unknown")
    assert row.n == 4
    assert row.mae_s == pytest.approx(sum(abs(d - p) for d, p in zip(durations, p50, strict=True)) / 4)
    assert row.p90_coverage == pytest.approx(sum(d <= p for d, p in zip(durations, p90, strict=True)) / 4)
    assert row.correlation is None or -1.0 <= row.correlation <= 1.0


def test_correlation_needs_two_points(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    result = live.dispatch(0, strategy="predictive")
    store.record_outcome(TaskOutcome(result.selected_agent.id, 2.0, True, result.task_id), clock())
    (row,) = store.prediction_accuracy()
    assert row.n == 1 and row.correlation is None


def test_agent_history_summary(store: Store) -> None:
    for i, (duration, success, task_type) in enumerate(
        [(1.0, True, "a"), (3.0, True, "a"), (5.0, True, "b"), (9.0, False, "b")]
    ):
        store.record_outcome(TaskOutcome("alpha", duration, success, f"t{i}", task_type), 100.0 + i)
    store.record_outcome(TaskOutcome("beta", 100.0, True, "other"), 200.0)
    summary = store.agent_history_summary("alpha")
    assert summary["count"] == 4
    assert summary["success_rate"] == pytest.approx(0.75)
    assert summary["mean_duration_s"] == pytest.approx(3.0)  # failed durations are left out
    assert summary["p50_duration_s"] == pytest.approx(3.0)
    assert summary["last_finished_at"] == 103.0
    assert summary["by_task_type"]["b"]["count"] == 2
    assert summary["by_task_type"]["b"]["success_rate"] == pytest.approx(0.5)
    assert store.agent_history_summary("alpha", limit=1)["count"] == 1
    empty = store.agent_history_summary("nobody")
    assert empty["count"] == 0 and empty["mean_duration_s"] is None


# --- retention -----------------------------------------------------------------------------------
def test_prune_removes_old_tasks_and_keeps_recent_ones(store: Store, clock: StoreClock) -> None:
    day = 86400.0
    live = LiveFleet(store, clock)
    old_finished = live.dispatch(0)
    old_open = live.dispatch(1)
    live.finish(old_finished)
    clock.advance(100 * day)
    recent = live.dispatch(2)
    live.finish(recent)
    removed = store.prune(90 * day, clock())
    assert removed == 2
    assert store.get_outcome(old_finished.task_id) is None
    assert store.get_dispatch(old_finished.task_id) is None
    assert store.get_dispatch(old_open.task_id) is None
    assert store.get_outcome(recent.task_id) is not None
    assert store.get_dispatch(recent.task_id) is not None
    assert math.isfinite(store.history_frame()["arrival_time"][0])


# --- failures become StoreUnavailableError -------------------------------------------------------
def test_read_only_sqlite_is_unavailable_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    Store.open(f"sqlite:///{path}").close()
    store = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(StoreUnavailableError, match="readonly"):
        store.ping()
    with pytest.raises(StoreUnavailableError, match="record_outcome"):
        store.record_outcome(TaskOutcome("alpha", 1.0, True, "t1"), 1.0)
    store.close()


def test_unreachable_postgres_is_unavailable_with_a_reason() -> None:
    store = Store("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailableError, match=r"(?i)connection refused|connection failed"):
        store.ping()
    store.close()


@pytest.mark.postgres
def test_value_postgres_cannot_hold_is_refused_not_unavailable(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    long_id = "t" * 300  # ids are unbounded text on both backends
    assert store.record_outcome(TaskOutcome("a" * 300, 1.0, True, long_id), 1.0).created
    with pytest.raises(InvalidRecordError, match="NUL"):
        store.record_outcome(TaskOutcome("alpha", 1.0, True, "bad\x00id"), 1.0)
    assert store.count_outcomes() == 1
    store.close()
