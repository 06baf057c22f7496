"""An experiment over real HTTP against a real `agentlb serve` process, across a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live_server import BIN, ServerProcess, server_env

FLEET = [
    {"id": f"agent-{i}", "name": f"Agent {i}", "capabilities": ["analysis"], "max_concurrency": 64}
    for i in range(4)
]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def start(home: Path, servers: list[ServerProcess]) -> ServerProcess:
    server = ServerProcess([str(BIN / "agentlb"), "serve"], home, server_env(home, AGENTLB_SEED="5"))
    servers.append(server)
    return server


@pytest.mark.slow
def test_an_experiment_splits_live_http_traffic_and_survives_a_restart(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = start(tmp_path, servers)
    with httpx.Client(base_url=server.base, timeout=10) as http:
        for agent in FLEET:
            assert http.post("/load-balancing/agents", json=agent).status_code == 201
        body = {
            "name": "round robin vs least connection",
            "arms": [
                {"name": "control", "strategy": "round_robin", "share": 0.25},
                {"name": "lc", "strategy": "least_connection", "share": 0.75},
            ],
        }
        created = http.post("/load-balancing/experiments", json=body)
        assert created.status_code == 201, created.text
        experiment_id = created.json()["id"]
        arms = []
        for i in range(300):
            chosen = http.post(
                "/load-balancing/select-agent", json={"task_type": "analysis", "task_id": f"t{i}"}
            )
            assert chosen.status_code == 200, chosen.text
            selected = chosen.json()
            arms.append(selected["experiment"]["arm"])
            outcome = {"agent_id": selected["selected_agent_id"], "task_id": f"t{i}", "task_duration": 0.5}
            assert http.post("/load-balancing/update-performance", json=outcome).status_code == 200
        assert arms.count("lc") / len(arms) == pytest.approx(0.75, abs=0.06)
        before = http.get(f"/load-balancing/experiments/{experiment_id}").json()
        assert [a["tasks"] for a in before["arms"]] == [arms.count("control"), arms.count("lc")]
        assert [a["completed"] for a in before["arms"]] == [arms.count("control"), arms.count("lc")]
        assert 'agentlb_experiment_selections_total{arm="lc"' in http.get("/metrics").text
    server.stop()

    again = start(tmp_path, servers)
    with httpx.Client(base_url=again.base, timeout=10) as http:
        after = http.get(f"/load-balancing/experiments/{experiment_id}").json()
        assert after["status"] == "running" and after["arms"] == before["arms"]
        chosen = http.post("/load-balancing/select-agent", json={"task_type": "analysis", "task_id": "t5"})
        assert chosen.status_code == 409  # the task id is on record; a new one is routed again:
        chosen = http.post("/load-balancing/select-agent", json={"task_type": "analysis", "task_id": "t-new"})
        assert chosen.json()["experiment"]["id"] == experiment_id
        stopped = http.delete(f"/load-balancing/experiments/{experiment_id}")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
