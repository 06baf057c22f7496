"""Database outage (real: PostgreSQL refusing connections) and the bounded benchmark endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import ClientFactory, make_settings, register_fleet
from fastapi.testclient import TestClient

from agentlb.api import create_app
from postgres_support import OwnDatabase


@pytest.mark.postgres
def test_database_outage_selections_continue_outcomes_503(
    tmp_path: Path, postgres_database: OwnDatabase
) -> None:
    url = postgres_database.url
    with TestClient(create_app(make_settings(tmp_path, url))) as client:
        register_fleet(client)
        before = client.post(
            "/load-balancing/select-agent", json={"task_type": "t", "task_id": "before"}
        ).json()
        postgres_database.set_online(False)
        try:
            during = client.post("/load-balancing/select-agent", json={"task_type": "t", "task_id": "during"})
            assert during.status_code == 200, during.text
            refused = client.post(
                "/load-balancing/update-performance",
                json={"agent_id": before["selected_agent_id"], "task_id": "before", "task_duration": 2.0},
            )
            assert refused.status_code == 503
            assert refused.json()["error"] == "store_unavailable"
            assert "record_outcome" in refused.json()["detail"] or "get_outcome" in refused.json()["detail"]
            health = client.get("/load-balancing/health").json()
            assert health["status"] == "degraded"
            assert health["database"].startswith("unavailable")
            assert health["dispatch_write_failures"] == 1
            metrics = client.get("/metrics").text
            assert 'load_balancer_store_write_failures_total{operation="record_dispatch"} 1.0' in metrics
            # the refused outcome left the tracker untouched: the task is still in flight
            agent = before["selected_agent_id"]
            state = client.app.state.service.tracker.state(agent)  # type: ignore[attr-defined]
            assert any(t.task_id == "before" for t in state.in_flight)
        finally:
            postgres_database.set_online(True)
        retried = client.post(
            "/load-balancing/update-performance",
            json={"agent_id": before["selected_agent_id"], "task_id": "before", "task_duration": 2.0},
        )
        assert retried.status_code == 200 and retried.json()["closed_dispatch"] is True


def test_benchmark_runs_bounded(sqlite_fleet_client: TestClient) -> None:
    fleet_client = sqlite_fleet_client
    response = fleet_client.post(
        "/load-balancing/benchmark",
        json={"strategies": ["least_connection", "power_of_two"], "seeds": 1, "tasks": 200},
    )
    assert response.status_code == 200, response.text
    assert "least_connection" in response.text and "power_of_two" in response.text
    too_big = fleet_client.post("/load-balancing/benchmark", json={"tasks": 10_000_000})
    assert too_big.status_code == 422 and too_big.json()["error"] == "benchmark_limit"
    unknown = fleet_client.post("/load-balancing/benchmark", json={"strategies": ["fastest"], "tasks": 100})
    assert unknown.status_code == 422
    assert "fastest" in unknown.json()["detail"]


def test_model_reload_without_a_model_is_503_and_keeps_heuristic(client_factory: ClientFactory) -> None:
    client = client_factory.start()
    response = client.post("/load-balancing/model/reload")
    assert response.status_code == 503
    assert response.json()["error"] == "model_unavailable"
    assert client.get("/load-balancing/health").json()["predictor"]["source"] == "heuristic"
