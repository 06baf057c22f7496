"""Experiments across replicas: started at one replica, routed the same way at every replica,
outcomes attributed wherever they are reported, one report from the shared store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from replica_support import Cluster, Database

pytestmark = pytest.mark.slow


def test_an_experiment_started_at_one_replica_routes_and_reports_at_every_replica(
    tmp_path: Path, database: Database, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    cluster = Cluster(tmp_path, database.url, url, prefix, AGENTLB_EXPERIMENT_UPKEEP_INTERVAL_S="0.2")
    try:
        first, second = (r.base for r in cluster.start(2))
        cluster.register_agents(4, 50)
        body = {
            "name": "lc vs hybrid",
            "arms": [
                {"name": "control", "strategy": "least_connection", "share": 0.5},
                {"name": "hybrid", "strategy": "hybrid", "share": 0.5, "weights": {"predictive": 1.0}},
            ],
        }
        created = httpx.post(f"{first}/load-balancing/experiments", json=body, timeout=10)
        assert created.status_code == 201, created.text
        experiment_id = created.json()["id"]
        deadline = time.monotonic() + 10
        while True:  # the other replica picks it up at its next upkeep
            probe = httpx.post(
                f"{second}/load-balancing/select-agent", json={"task_type": "text"}, timeout=10
            ).json()
            if probe["experiment"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert probe["experiment"] == {"id": experiment_id, "arm": probe["experiment"]["arm"]}
        httpx.post(
            f"{first}/load-balancing/update-performance",
            json={"agent_id": probe["selected_agent_id"], "task_id": probe["task_id"], "task_duration": 0.2},
            timeout=10,
        )
        arms = {probe["task_id"]: probe["experiment"]["arm"]}
        for i in range(120):  # select at one replica, report at the other
            at, other = (first, second) if i % 2 else (second, first)
            chosen = httpx.post(
                f"{at}/load-balancing/select-agent",
                json={"task_type": "text", "task_id": f"x{i}"},
                timeout=10,
            ).json()
            arms[chosen["task_id"]] = chosen["experiment"]["arm"]
            outcome = {
                "agent_id": chosen["selected_agent_id"],
                "task_id": chosen["task_id"],
                "task_duration": 0.2,
            }
            assert (
                httpx.post(f"{other}/load-balancing/update-performance", json=outcome, timeout=10).status_code
                == 200
            )
        # the same task id lands in the same arm whichever replica routes it
        reports = [
            httpx.get(f"{b}/load-balancing/experiments/{experiment_id}", timeout=10).json()
            for b in (first, second)
        ]
        assert reports[0]["arms"] == reports[1]["arms"]
        by_arm = {a["name"]: a for a in reports[0]["arms"]}
        for name in ("control", "hybrid"):
            assert by_arm[name]["tasks"] == sum(1 for a in arms.values() if a == name)
        assert sum(a["completed"] for a in reports[0]["arms"]) == 121
        stopped = httpx.delete(f"{second}/load-balancing/experiments/{experiment_id}", timeout=10)
        assert stopped.status_code == 200
        time.sleep(0.6)  # the first replica's upkeep follows the store
        after = httpx.post(
            f"{first}/load-balancing/select-agent", json={"task_type": "text"}, timeout=10
        ).json()
        assert after["experiment"] is None
    finally:
        cluster.stop_all()
