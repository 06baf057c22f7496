"""Group commit through the real app: concurrent requests share write transactions, every
acknowledged write is in the database exactly once, and a database that fails fails every
waiter of the batch with 503 and writes nothing (SQLite file, and PostgreSQL when available)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from agentlb.service import AgentLBService
from agentlb.store import normalise_url

SELECT = "/load-balancing/select-agent"
UPDATE = "/load-balancing/update-performance"
TASKS = 16
AGENTS = [
    {"id": f"worker-{i}", "name": f"Worker {i}", "capabilities": ["work"], "max_concurrency": 100}
    for i in range(4)
]


def service_of(client: TestClient) -> AgentLBService:
    service: AgentLBService = client.app.state.service  # type: ignore[attr-defined]
    return service


@contextmanager
def writes_held(db_url: str, table: str) -> Iterator[None]:
    """Another client holds the write lock of `table` (SQLite: the whole database) until the
    block ends, so the writes of concurrent requests pile up into one batch."""
    if make_url(db_url).get_backend_name() == "sqlite":
        conn = sqlite3.connect(make_url(db_url).database or "", isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def set_outcome_writes_failing(db_url: str, failing: bool) -> None:
    """A real database error on every insert into task_outcomes (not a constraint violation):
    PostgreSQL raises disk_full from a trigger; SQLite's trigger writes to a dropped table."""
    engine = create_engine(normalise_url(db_url))
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as conn:
            if not failing:
                on_table = " ON task_outcomes" if postgres else ""
                conn.execute(text(f"DROP TRIGGER agentlb_disk_full{on_table}"))
            elif postgres:
                conn.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION agentlb_disk_full() RETURNS trigger "
                        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'No space left on device' "
                        "USING ERRCODE = 'disk_full'; END $$"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER agentlb_disk_full BEFORE INSERT ON task_outcomes "
                        "FOR EACH ROW EXECUTE FUNCTION agentlb_disk_full()"
                    )
                )
            else:
                conn.execute(text("CREATE TABLE agentlb_tripwire (x INTEGER)"))
                conn.execute(
                    text(
                        "CREATE TRIGGER agentlb_disk_full BEFORE INSERT ON task_outcomes "
                        "BEGIN INSERT INTO agentlb_tripwire VALUES (1); END"
                    )
                )
                conn.execute(text("DROP TABLE agentlb_tripwire"))
    finally:
        engine.dispose()


def concurrently(
    client: TestClient, db_url: str, table: str, calls: list[Callable[[], Any]]
) -> tuple[list[Any], int]:
    """Run `calls` at once while writes to `table` are held, release once every one of them has
    queued its write; returns their answers and how many write batches they took."""
    writer = service_of(client).writer
    submitted, batches = writer.stats.submitted, writer.stats.batches
    with ThreadPoolExecutor(len(calls)) as pool:
        futures: list[Future[Any]] = []
        with writes_held(db_url, table):
            futures = [pool.submit(call) for call in calls]
            deadline = time.monotonic() + 20
            while writer.stats.submitted - submitted < len(calls):
                assert time.monotonic() < deadline, "requests did not reach the writer"
                assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
                time.sleep(0.01)
        answers = [f.result(timeout=60) for f in futures]
    return answers, writer.stats.batches - batches


def register(client: TestClient) -> None:
    for agent in AGENTS:
        assert client.post("/load-balancing/agents", json=agent).status_code == 201


def select_tasks(client: TestClient, db_url: str) -> list[dict[str, Any]]:
    def call() -> Any:
        return client.post(SELECT, json={"task_type": "work", "required_capabilities": ["work"]})

    responses, batches = concurrently(client, db_url, "task_dispatches", [call] * TASKS)
    assert [r.status_code for r in responses] == [200] * TASKS, responses[0].text
    assert batches <= 2  # the first write waits alone on the held lock; the rest share one batch
    return [r.json() for r in responses]


def outcome_call(client: TestClient, selection: dict[str, Any]) -> Callable[[], Any]:
    body = {
        "agent_id": selection["selected_agent_id"],
        "task_id": selection["task_id"],
        "task_duration": 2.5,
        "success": True,
    }
    return lambda: client.post(UPDATE, json=body)


def test_concurrent_requests_are_acknowledged_and_stored_exactly_once(
    client: TestClient, db_url: str
) -> None:
    register(client)
    selections = select_tasks(client, db_url)
    store = service_of(client).store
    task_ids = [s["task_id"] for s in selections]
    assert len(set(task_ids)) == TASKS
    assert store.count_dispatches() == TASKS  # every returned selection's dispatch is logged
    for selection in selections:
        dispatch = store.get_dispatch(selection["task_id"])
        assert dispatch is not None and dispatch.agent_id == selection["selected_agent_id"]

    # every outcome sent twice at once: one is recorded, the other is acknowledged as a duplicate
    calls = [outcome_call(client, s) for s in selections for _ in range(2)]
    responses, batches = concurrently(client, db_url, "task_outcomes", calls)
    assert [r.status_code for r in responses] == [200] * len(calls), responses[0].text
    assert batches <= 2
    receipts = [r.json() for r in responses]
    for task_id in task_ids:
        mine = [r for r in receipts if r["task_id"] == task_id]
        assert sorted(r["duplicate"] for r in mine) == [False, True]
        assert [r["closed_dispatch"] for r in mine if not r["duplicate"]] == [True]
    assert store.count_outcomes() == TASKS
    service = service_of(client)
    assert all(service.tracker.state(a["id"]).in_flight == () for a in AGENTS)
    assert client.get("/load-balancing/health").json()["dispatch_write_failures"] == 0


def test_a_failing_database_fails_every_waiter_of_the_batch(client: TestClient, db_url: str) -> None:
    register(client)
    selections = select_tasks(client, db_url)
    service = service_of(client)
    set_outcome_writes_failing(db_url, True)
    calls = [outcome_call(client, s) for s in selections]
    responses, _batches = concurrently(client, db_url, "task_outcomes", calls)
    assert [r.status_code for r in responses] == [503] * TASKS
    assert {r.json()["error"] for r in responses} == {"store_unavailable"}
    assert "record_outcomes" in responses[-1].json()["detail"]
    assert service.store.count_outcomes() == 0  # nothing partial
    in_flight = {t.task_id for a in AGENTS for t in service.tracker.state(a["id"]).in_flight}
    assert in_flight == {s["task_id"] for s in selections}  # the tracker learned nothing either

    set_outcome_writes_failing(db_url, False)
    retried = [call() for call in calls]
    assert [r.status_code for r in retried] == [200] * TASKS
    assert all(r.json()["closed_dispatch"] and not r.json()["duplicate"] for r in retried)
    assert service.store.count_outcomes() == TASKS
