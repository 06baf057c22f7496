"""`agentlb serve --workers 2` with Redis: two replicas behind one port, one fleet, and a
/metrics scrape (answered by either worker) that counts every worker's selections."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from replica_support import Database

from live_server import BIN, ServerProcess, server_env
from postgres_support import postgres_skip_reason
from redis_support import delete_prefix, redis_skip_reason, redis_url, unique_prefix

pytestmark = pytest.mark.slow

SELECTIONS = 60


@pytest.fixture
def workers_server(tmp_path: Path) -> Iterator[ServerProcess]:
    for reason in (
        postgres_skip_reason("workers share one database"),
        redis_skip_reason("workers share Redis"),
    ):
        if reason is not None:
            pytest.skip(reason)
    database = Database()
    prefix = unique_prefix("workers")
    env = server_env(
        tmp_path,
        AGENTLB_DATABASE_URL=database.url,
        AGENTLB_REDIS_URL=redis_url(),
        AGENTLB_REDIS_PREFIX=prefix,
        AGENTLB_LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    server = ServerProcess([str(BIN / "agentlb"), "serve", "--workers", "2"], tmp_path, env)
    try:
        yield server
    finally:
        server.stop()
        delete_prefix(redis_url(), prefix)
        database.drop()


def _selections_in_scrape(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("load_balancer_agent_selections_total{")
    )


def test_two_workers_serve_one_fleet_and_one_metrics_view(workers_server: ServerProcess) -> None:
    base = workers_server.base
    # both workers up: new connections reach either one
    replicas: set[str] = set()
    deadline = time.monotonic() + 60
    while len(replicas) < 2 and time.monotonic() < deadline:
        with httpx.Client(timeout=10) as fresh:
            response = fresh.get(f"{base}/load-balancing/replication")
        if response.status_code == 200:
            replicas.add(response.json()["replica_id"])
        time.sleep(0.05)
    assert len(replicas) == 2, replicas

    for i in range(3):
        body = {"id": f"w{i}", "name": f"w{i}", "capabilities": ["text"], "max_concurrency": 2}
        assert httpx.post(f"{base}/load-balancing/agents", json=body, timeout=10).status_code in (200, 201)
    for _ in range(SELECTIONS):  # a new connection each: the kernel spreads them over the workers
        selected = httpx.post(f"{base}/load-balancing/select-agent", json={"task_type": "t"}, timeout=10)
        assert selected.status_code == 200, selected.text
        choice = selected.json()
        outcome = {
            "agent_id": choice["selected_agent_id"],
            "task_id": choice["task_id"],
            "task_duration": 1.0,
        }
        reported = httpx.post(f"{base}/load-balancing/update-performance", json={**outcome, "success": True})
        assert reported.status_code == 200, reported.text

    time.sleep(0.5)  # the log reaches both workers within milliseconds
    # multiprocess mode: each worker writes its samples to files of its own
    pids = {path.stem.rsplit("_", 1)[-1] for path in (workers_server.home / "metrics").glob("counter_*.db")}
    assert len(pids) == 2, pids
    for _ in range(6):  # whichever worker answers, it counts both workers' selections
        assert _selections_in_scrape(base) == SELECTIONS
        stats = httpx.get(f"{base}/load-balancing/statistics", timeout=10).json()
        assert stats["total_selections"] == SELECTIONS
        assert all(agent["active_tasks"] == 0 for agent in stats["agents"])
