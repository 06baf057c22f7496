"""Online experiments through the API: created by an admin, routing live selections by task id,
reported from the store, surviving a restart, stopped by DELETE."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import ClientFactory, register_fleet
from fastapi.testclient import TestClient

from agentlb.store import Store
from agentlb.store.experiments import ExperimentRecords

PATH = "/load-balancing/experiments"
BODY: dict[str, Any] = {
    "name": "least connection vs hybrid",
    "arms": [
        {"name": "control", "strategy": "least_connection", "share": 0.7},
        {
            "name": "hybrid",
            "strategy": "hybrid",
            "share": 0.3,
            "weights": {"predictive": 0.6, "least_connection": 0.4},
        },
    ],
    "task_types": ["video_task"],
}
SELECT = {"task_type": "video_task", "required_capabilities": ["video_analysis"]}


def run_tasks(client: TestClient, n: int, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Select, then report each task (durations differ by arm), as an orchestrator would."""
    chosen = []
    for i in range(n):
        response = client.post("/load-balancing/select-agent", json=body or SELECT)
        assert response.status_code == 200, response.text
        selected = response.json()
        chosen.append(selected)
        arm = (selected.get("experiment") or {}).get("arm")
        outcome = {
            "agent_id": selected["selected_agent_id"],
            "task_id": selected["task_id"],
            "task_duration": 1.0 + (i % 3) * 0.1 + (0.5 if arm == "control" else 0.0),
            "success": i % 10 != 0,
        }
        assert client.post("/load-balancing/update-performance", json=outcome).status_code == 200
    return chosen


def test_an_experiment_splits_traffic_reports_from_the_store_and_survives_a_restart(
    client_factory: ClientFactory, db_url: str
) -> None:
    client = client_factory.start(experiment_upkeep_interval_s=0)
    register_fleet(client)
    created = client.post(PATH, json=BODY)
    assert created.status_code == 201, created.text
    experiment_id = created.json()["id"]
    assert created.json()["status"] == "running"

    chosen = run_tasks(client, 400)
    arms = [c["experiment"]["arm"] for c in chosen]
    assert arms.count("hybrid") / len(arms) == pytest.approx(0.3, abs=0.06)
    assert {c["strategy_used"] for c in chosen if c["experiment"]["arm"] == "control"} == {"least_connection"}
    assert {c["strategy_used"] for c in chosen if c["experiment"]["arm"] == "hybrid"} == {
        f"hybrid[{experiment_id}/hybrid]"
    }
    # a selection that names a strategy, or falls outside the scope, is never re-routed
    named = client.post("/load-balancing/select-agent", json={**SELECT, "strategy": "round_robin"}).json()
    assert named["experiment"] is None and named["strategy_used"] == "round_robin"
    other = client.post(
        "/load-balancing/select-agent",
        json={"task_type": "text_task", "required_capabilities": ["text_analysis"]},
    ).json()
    assert other["experiment"] is None

    report = client.get(f"{PATH}/{experiment_id}").json()
    by_arm = {a["name"]: a for a in report["arms"]}
    assert by_arm["control"]["tasks"] + by_arm["hybrid"]["tasks"] == 400
    assert by_arm["hybrid"]["tasks"] == arms.count("hybrid")
    assert by_arm["hybrid"]["mean_duration_s"] < by_arm["control"]["mean_duration_s"]
    assert report["verdict"]["method"].startswith("mSPRT")

    # the report is what the store holds
    store = Store.open(db_url)
    try:
        rows = ExperimentRecords(store).arm_rows(experiment_id)
    finally:
        store.close()
    assert len(rows) == 400
    assert sum(1 for r in rows if r[0] == "hybrid") == by_arm["hybrid"]["tasks"]
    control_rows = [r for r in rows if r[0] == "control"]
    assert sum(1 for r in control_rows if r[3]) / len(control_rows) == pytest.approx(
        by_arm["control"]["success_rate"]
    )
    completion = [r[2] - r[1] for r in control_rows]  # outcome report time minus selection time
    assert sum(completion) / len(completion) == pytest.approx(by_arm["control"]["mean_completion_s"])

    client_factory.stop(client)
    restarted = client_factory.start(experiment_upkeep_interval_s=0)
    again = restarted.get(f"{PATH}/{experiment_id}").json()
    assert again["arms"] == report["arms"]
    more = run_tasks(restarted, 20)
    assert all(c["experiment"]["id"] == experiment_id for c in more)

    stopped = restarted.delete(f"{PATH}/{experiment_id}")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    after = run_tasks(restarted, 5)
    assert all(c["experiment"] is None for c in after)
    listed = restarted.get(PATH).json()
    assert [e["id"] for e in listed] == [experiment_id]


def test_max_tasks_completes_the_experiment(client_factory: ClientFactory) -> None:
    client = client_factory.start(experiment_upkeep_interval_s=0)
    register_fleet(client)
    experiment_id = client.post(PATH, json={**BODY, "max_tasks": 30}).json()["id"]
    chosen = run_tasks(client, 40)
    assert sum(1 for c in chosen if c["experiment"]) == 30
    client.app.state.service.experiments.upkeep()  # type: ignore[attr-defined]
    report = client.get(f"{PATH}/{experiment_id}").json()
    assert report["status"] == "completed" and "max_tasks" in report["stop_reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"arms": [BODY["arms"][0]]}, "arms"),
        ({"arms": [BODY["arms"][0], {**BODY["arms"][1], "share": 0.5}]}, "arms"),
        ({"arms": [BODY["arms"][0], {**BODY["arms"][1], "strategy": "telepathy"}]}, "arms[1].strategy"),
        ({"arms": [BODY["arms"][0], {**BODY["arms"][1], "weights": {"x": 1.0}}]}, "arms[1].weights"),
        ({"arms": [BODY["arms"][0], {**BODY["arms"][1], "model_version": "999"}]}, "arms[1].model_version"),
        ({"max_tasks": 0}, "max_tasks"),
    ],
)
def test_an_invalid_experiment_is_a_422_naming_the_field(
    sqlite_fleet_client: TestClient, change: dict[str, Any], field: str
) -> None:
    response = sqlite_fleet_client.post(PATH, json={**BODY, **change})
    assert response.status_code == 422, response.text
    assert field in [problem["field"] for problem in response.json()["detail"]]
    assert sqlite_fleet_client.get(PATH).json() == []


def test_only_an_admin_starts_or_stops_and_unknown_ids_are_404(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(api_key="client-key", admin_key="admin-key")
    as_client = {"Authorization": "Bearer client-key"}
    as_admin = {"Authorization": "Bearer admin-key"}
    assert client.post(PATH, json=BODY, headers=as_client).status_code == 403
    created = client.post(PATH, json=BODY, headers=as_admin)
    assert created.status_code == 201 and created.json()["created_by"]
    experiment_id = created.json()["id"]
    assert client.get(f"{PATH}/{experiment_id}", headers=as_client).status_code == 200
    assert client.delete(f"{PATH}/{experiment_id}", headers=as_client).status_code == 403
    assert client.get(f"{PATH}/nope", headers=as_client).status_code == 404
    assert client.get(PATH).status_code == 401
