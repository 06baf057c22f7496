"""Faults: the database going away mid-run (SQLite made immutable, PostgreSQL refusing
connections), a corrupt model bundle, a dead MLflow tracking server, an agent that fails every
task, and every agent ejected."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reliability_helpers import (
    OUTCOME,
    SELECT,
    STATS,
    AppClients,
    register_fleet,
    row_counts,
    sqlite_url,
)
from sqlalchemy import create_engine, text

from agentlb.predictor.model import BUNDLE_FILE, P50_FILE, P90_FILE
from live_server import HEALTH, free_port
from postgres_support import OwnDatabase

VIDEO = {"task_type": "video_task", "required_capabilities": ["video_analysis"]}


def _chattr_skip_reason(probe_dir: Path) -> str | None:
    if shutil.which("chattr") is None:
        return "chattr is not installed: cannot make the SQLite file immutable"
    probe = probe_dir / "chattr-probe"
    probe.write_text("x")
    done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True)
    subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
    probe.unlink()
    if done.returncode != 0:
        return f"chattr +i not supported here (needs root and ext4/xfs): {done.stderr.strip()}"
    return None


@contextmanager
def sqlite_immutable(db_file: Path) -> Iterator[None]:
    """Make SQLite writes really fail, also as root (where chmod does not stop writes): the
    immutable attribute on the database file, its WAL file and the directory. The `-shm`
    file stays writable: SQLite maps it into memory, and an immutable mapping is a SIGBUS."""
    targets = [
        str(p) for p in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.parent) if p.exists()
    ]
    subprocess.run(["chattr", "+i", *targets], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True)


def _outcome(chosen: dict[str, Any], duration: float = 1.0, success: bool = True) -> dict[str, Any]:
    return {
        "agent_id": chosen["selected_agent_id"],
        "task_id": chosen["task_id"],
        "task_duration": duration,
        "success": success,
    }


def _stored_outcomes(db_url: str) -> dict[str, tuple[str, float, bool]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT task_id, agent_id, duration_s, success FROM task_outcomes")
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], float(r[2]), bool(r[3])) for r in rows}


def _outage_run(
    client: TestClient, db_url: str, take_offline: Any, bring_online: Any, reads_fail: bool
) -> dict[str, int]:
    """The common script: work, outage (selections go on, writes 503), recovery by itself."""
    acknowledged: dict[str, dict[str, Any]] = {}
    for i in range(10):
        chosen = client.post(SELECT, json=VIDEO).json()
        body = _outcome(chosen, 1.0 + i)
        assert client.post(OUTCOME, json=body).status_code == 200
        acknowledged[body["task_id"]] = body
    open_before = [client.post(SELECT, json=VIDEO).json() for _ in range(3)]
    rows_before = row_counts(db_url)

    take_offline()
    try:
        during = [client.post(SELECT, json=VIDEO) for _ in range(20)]
        assert all(r.status_code == 200 for r in during), [r.text for r in during if r.status_code != 200]
        refused = 0
        for chosen in open_before + [r.json() for r in during[:3]]:
            response = client.post(OUTCOME, json=_outcome(chosen, 2.5))
            assert response.status_code == 503, response.text
            problem = response.json()
            assert problem["error"] == "store_unavailable"
            assert "unavailable during" in problem["detail"], problem
            refused += 1
        health = client.get(HEALTH).json()
        assert health["status"] == "degraded", health
        if reads_fail:
            assert health["database"].startswith("unavailable"), health
            assert any("selections continue from memory" in reason for reason in health["reasons"]), health
        else:  # an immutable SQLite file still reads: the failed writes are the reason
            assert any("database write failed" in reason for reason in health["reasons"]), health
        # A refused outcome did not close anything: the tasks are still in flight.
        in_flight = sum(a["active_tasks"] for a in client.get(STATS).json()["agents"])
        assert in_flight == len(open_before) + len(during)
    finally:
        bring_online()

    # Recovery without a restart: the same client retries and is accepted.
    deadline = time.monotonic() + 20
    retried = open_before + [r.json() for r in during]
    pending = list(retried)
    while pending and time.monotonic() < deadline:
        chosen = pending[0]
        body = _outcome(chosen, 2.5)
        response = client.post(OUTCOME, json=body)
        if response.status_code == 503:
            time.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        assert response.json()["closed_dispatch"] is True
        acknowledged[body["task_id"]] = body
        pending.pop(0)
    assert not pending, "the service did not recover by itself within 20 s"
    health = client.get(HEALTH).json()
    assert health["database"] == "ok", health
    assert sum(a["active_tasks"] for a in client.get(STATS).json()["agents"]) == 0

    stored = _stored_outcomes(db_url)
    for task_id, body in acknowledged.items():
        assert stored[task_id] == (body["agent_id"], body["task_duration"], body["success"]), task_id
    assert len(stored) == len(acknowledged)
    assert row_counts(db_url)["task_outcomes"] == rows_before["task_outcomes"] + len(retried)
    return {
        "selections_during_outage": len(during),
        "writes_refused": refused,
        "acknowledged": len(acknowledged),
    }


def test_sqlite_made_immutable_mid_run(apps: AppClients, tmp_path: Path) -> None:
    reason = _chattr_skip_reason(tmp_path)
    if reason is not None:
        pytest.skip(reason)
    client = apps.start()
    register_fleet(client)
    db_file = tmp_path / "var" / "agentlb.db"
    outage = sqlite_immutable(db_file)
    figures = _outage_run(
        client, sqlite_url(tmp_path), outage.__enter__, lambda: outage.__exit__(None, None, None), False
    )
    print(f"\nSQLite immutable (chattr +i): {figures}, lost: 0")


@pytest.mark.postgres
def test_postgres_refusing_connections_mid_run(apps: AppClients, postgres_database: OwnDatabase) -> None:
    client = apps.start(postgres_database.url)
    register_fleet(client)
    figures = _outage_run(
        client,
        postgres_database.url,
        lambda: postgres_database.set_online(False),
        lambda: postgres_database.set_online(True),
        True,
    )
    print(f"\nPostgreSQL ALLOW_CONNECTIONS false: {figures}, lost: 0")


# --- the model ------------------------------------------------------------------------------
def test_corrupt_model_bundle_starts_on_the_heuristic(apps: AppClients, tmp_path: Path) -> None:
    """A truncated bundle.json next to boosters that are not boosters (a half-copied bundle)."""
    bundle = tmp_path / "models" / "champion"
    bundle.mkdir(parents=True)
    (bundle / BUNDLE_FILE).write_text('{"model_version": "v1", "feature_spec": {tru')
    (bundle / P50_FILE).write_bytes(b"\x00garbage booster\xff")
    (bundle / P90_FILE).write_bytes(b"\x00garbage booster\xff")
    client = apps.start()
    register_fleet(client)
    health = client.get(HEALTH)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded"
    assert body["predictor"]["fallback_reason"], body
    assert any("model unavailable, heuristic predictor in use" in r for r in body["reasons"]), body
    chosen = client.post(SELECT, json={**VIDEO, "strategy": "predictive"})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["model_version"] != "v1"
    assert "unreadable" in body["predictor"]["fallback_reason"], body
    reload = client.post("/load-balancing/model/reload")
    assert reload.status_code == 503 and reload.json()["error"] == "model_unavailable"


def test_dead_mlflow_tracking_server_starts_on_the_heuristic_quickly(apps: AppClients) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    client = apps.start(model_uri="models:/agentlb-completion-time@champion", mlflow_tracking_uri=dead)
    startup_s = time.monotonic() - started
    register_fleet(client)
    body = client.get(HEALTH).json()
    assert body["status"] == "degraded"
    assert dead in body["predictor"]["fallback_reason"], body
    assert client.post(SELECT, json=VIDEO).status_code == 200
    started = time.monotonic()
    reload = client.post("/load-balancing/model/reload")
    reload_s = time.monotonic() - started
    assert reload.status_code == 503 and dead in reload.json()["detail"]
    assert startup_s < 15 and reload_s < 15, (startup_s, reload_s)
    print(f"\nMLflow down: started in {startup_s:.2f} s, reload refused in {reload_s:.2f} s")


# --- ejection and panic ----------------------------------------------------------------------
EJECTION = {
    "ejection_consecutive_failures": 3,
    "ejection_base_time_s": 1.0,
    "slow_start_window_s": 0.0,
}


def _fail(client: TestClient, agent_id: str, times: int) -> list[dict[str, Any]]:
    receipts = []
    for _ in range(times):
        response = client.post(OUTCOME, json={"agent_id": agent_id, "task_duration": 0.2, "success": False})
        assert response.status_code == 200, response.text
        receipts.append(response.json())
    return receipts


def test_failing_agent_is_ejected_then_returns_after_the_cool_down(apps: AppClients) -> None:
    client = apps.start(**EJECTION)
    register_fleet(client)
    receipts = _fail(client, "video-1", 3)
    assert [r["ejected"] for r in receipts] == [False, False, True]
    health = client.get(HEALTH).json()
    assert health["agents_ejected"] == 1 and health["status"] == "degraded"
    picks = []
    for _ in range(12):
        chosen = client.post(SELECT, json={**VIDEO, "strategy": "round_robin"}).json()
        picks.append(chosen["selected_agent_id"])
        client.post(OUTCOME, json=_outcome(chosen, 0.1))
    assert "video-1" not in picks, picks
    assert client.get(STATS).json()["ejections"] == 1

    time.sleep(1.3)  # base ejection time 1 s
    picks = []
    for _ in range(12):
        chosen = client.post(SELECT, json={**VIDEO, "strategy": "round_robin"}).json()
        picks.append(chosen["selected_agent_id"])
        client.post(OUTCOME, json=_outcome(chosen, 0.1))
    assert "video-1" in picks, picks
    assert client.get(HEALTH).json()["agents_ejected"] == 0


def test_all_agents_ejected_panic_mode_keeps_selecting(apps: AppClients) -> None:
    """Envoy's panic threshold (documented in balancer.py): below it, ejection is ignored."""
    client = apps.start(**EJECTION, max_ejection_percent=100.0)
    register_fleet(client)
    for agent in ("video-1", "video-2", "text-1"):
        _fail(client, agent, 3)
    assert client.get(HEALTH).json()["agents_ejected"] == 3
    chosen = client.post(SELECT, json=VIDEO)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["panic"] is True
    assert "panic mode" in chosen.json()["selection_reason"]
    assert client.get(STATS).json()["panic_selections"] >= 1


def test_all_agents_ejected_without_panic_mode_is_503(apps: AppClients) -> None:
    client = apps.start(**EJECTION, max_ejection_percent=100.0, panic_mode_enabled=False)
    register_fleet(client)
    for agent in ("video-1", "video-2", "text-1"):
        _fail(client, agent, 3)
    refused = client.post(SELECT, json=VIDEO)
    assert refused.status_code == 503
    assert refused.json()["error"] == "all_agents_ejected"
    health = client.get(HEALTH)
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    time.sleep(1.3)
    assert client.post(SELECT, json=VIDEO).status_code == 200
