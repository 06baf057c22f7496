"""Select → outcome loop, statistics and weights through the real app and database."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import ClientFactory, register_fleet
from fastapi.testclient import TestClient

SELECT = "/load-balancing/select-agent"
UPDATE = "/load-balancing/update-performance"


def select(client: TestClient, **body: Any) -> Any:
    payload = {"task_type": "video_task", "required_capabilities": ["video_analysis"], **body}
    response = client.post(SELECT, json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def active_tasks(client: TestClient, agent_id: str) -> int:
    response = client.get(f"/load-balancing/agent/{agent_id}/metrics")
    assert response.status_code == 200, response.text
    return int(response.json()["metrics"]["active_tasks"])


def test_select_returns_a_capable_agent_with_alternatives_and_prediction(fleet_client: TestClient) -> None:
    body = select(
        fleet_client,
        strategy="hybrid",
        top_k=2,
        task_requirements={"priority": "high", "complexity": "medium", "frames": 1200},
    )
    assert body["selected_agent_id"] in {"video-1", "video-2"}
    assert body["strategy_used"] == "hybrid"
    assert 0.0 <= body["confidence_score"] <= 1.0
    assert [a["agent_id"] for a in body["alternative_agents"]] == [
        a for a in ("video-1", "video-2") if a != body["selected_agent_id"]
    ]
    assert body["predicted_completion_s"]["p90"] >= body["predicted_completion_s"]["p50"] > 0
    # no model in this home: the heuristic runs and the fallback is visible
    assert body["fallback_used"] is True
    assert "model unavailable" in body["selection_reason"]
    assert body["load_metrics"]["agent_id"] == body["selected_agent_id"]
    assert active_tasks(fleet_client, body["selected_agent_id"]) == 1


def test_default_strategy_comes_from_settings(client_factory: ClientFactory) -> None:
    client = client_factory.start(default_strategy="least_connection")
    register_fleet(client)
    assert select(client)["strategy_used"] == "least_connection"


@pytest.mark.parametrize(
    "strategy",
    [
        "weighted_round_robin",
        "least_connection",
        "predictive",
        "resource_aware",
        "round_robin",
        "power_of_two",
        "peak_ewma",
        "random",
    ],
)
def test_every_named_strategy_selects(sqlite_fleet_client: TestClient, strategy: str) -> None:
    assert select(sqlite_fleet_client, strategy=strategy)["strategy_used"] == strategy


def test_unknown_strategy_is_422_listing_valid_ones(fleet_client: TestClient) -> None:
    response = fleet_client.post(SELECT, json={"task_type": "t", "strategy": "fastest"})
    assert response.status_code == 422
    problem = response.json()["detail"][0]
    assert problem["field"] == "strategy"
    assert "least_connection" in problem["reason"] and "hybrid" in problem["reason"]


def test_missing_capability_is_409_naming_it(fleet_client: TestClient) -> None:
    response = fleet_client.post(
        SELECT, json={"task_type": "t", "required_capabilities": ["video_analysis", "lip_reading"]}
    )
    assert response.status_code == 409
    assert response.json()["missing_capabilities"] == ["lip_reading"]
    assert "lip_reading" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "task_type"),
        ({"task_type": "t", "top_k": -1}, "top_k"),
        ({"task_type": "t", "top_k": "many"}, "top_k"),
        ({"task_type": "t", "deadline_s": 0}, "deadline_s"),
        ({"task_type": "t", "task_requirements": {"nested": {"a": 1}}}, "task_requirements.nested"),
        ({"task_type": "t", "task_requirements": {"duration_s": 3}}, "task_requirements"),
        ({"task_type": "t", "unexpected": 1}, "unexpected"),
        ({"task_type": "t", "task_id": "has spaces"}, "task_id"),
    ],
)
def test_bad_select_body_is_422_with_field(
    sqlite_fleet_client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = sqlite_fleet_client.post(SELECT, json=body)
    assert response.status_code == 422, response.text
    assert any(p["field"].startswith(field) for p in response.json()["detail"]), response.json()


@pytest.mark.parametrize(
    ("raw", "content_type", "field", "reason"),
    [
        (b"", "application/json", "body", "required"),
        (b'{"task_type": ', "application/json", "body", "invalid json"),
        (b"[1, 2]", "application/json", "body", "object"),
        (b'{"task_type": "t", "deadline_s": NaN}', "application/json", "deadline_s", ""),
        (b'{"task_type": "t"}', "text/plain", "body", "content-type"),
    ],
)
def test_select_body_problems_are_422_like_every_route(
    sqlite_fleet_client: TestClient, raw: bytes, content_type: str, field: str, reason: str
) -> None:
    """select-agent reads its own body (no FastAPI body handling): the errors keep the shape."""
    response = sqlite_fleet_client.post(SELECT, content=raw, headers={"content-type": content_type})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert any(p["field"] == field and reason in p["reason"].lower() for p in body["detail"]), body


def test_select_accepts_json_with_a_charset_or_a_json_suffix(sqlite_fleet_client: TestClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.agentlb+json"):
        response = sqlite_fleet_client.post(
            SELECT, content=b'{"task_type": "video_task"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200, (content_type, response.text)


def test_select_agent_is_documented_with_its_body_and_key(sqlite_fleet_client: TestClient) -> None:
    spec = sqlite_fleet_client.get("/openapi.json").json()
    operation = spec["paths"]["/load-balancing/select-agent"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SelectAgentRequest"}
    assert "task_type" in spec["components"]["schemas"]["SelectAgentRequest"]["required"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SelectAgentResponse"}


def test_non_finite_numbers_are_422(fleet_client: TestClient) -> None:
    raw = '{"agent_id": "video-1", "task_duration": NaN}'
    response = fleet_client.post(UPDATE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "task_duration"


def test_task_id_already_in_flight_is_409(fleet_client: TestClient) -> None:
    select(fleet_client, task_id="job-1")
    response = fleet_client.post(SELECT, json={"task_type": "video_task", "task_id": "job-1"})
    assert response.status_code == 409
    assert response.json()["error"] == "duplicate_task"


def test_outcome_with_task_id_closes_dispatch_and_is_idempotent(fleet_client: TestClient) -> None:
    chosen = select(fleet_client, task_id="job-7")
    agent = chosen["selected_agent_id"]
    outcome = {
        "agent_id": agent,
        "task_id": "job-7",
        "task_duration": 2.5,
        "success": True,
        "cpu_usage": 40.0,
        "memory_usage": 30.0,
    }
    first = fleet_client.post(UPDATE, json=outcome)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "task_id": "job-7",
        "agent_id": agent,
        "recorded": True,
        "duplicate": False,
        "closed_dispatch": True,
        "ejected": False,
    }
    assert active_tasks(fleet_client, agent) == 0
    again = fleet_client.post(UPDATE, json=outcome)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    completed = fleet_client.get(f"/load-balancing/agent/{agent}/metrics").json()["metrics"][
        "completed_tasks"
    ]
    assert completed == 1
    different = fleet_client.post(UPDATE, json={**outcome, "task_duration": 9.0})
    assert different.status_code == 409
    assert different.json()["error"] == "conflicting_outcome"
    # a task id that finished may not be dispatched again
    reused = fleet_client.post(SELECT, json={"task_type": "video_task", "task_id": "job-7"})
    assert reused.status_code == 409


def test_outcome_errors_unknown_task_unknown_agent_wrong_agent(fleet_client: TestClient) -> None:
    chosen = select(fleet_client, task_id="job-9")
    other = "video-2" if chosen["selected_agent_id"] == "video-1" else "video-1"
    unknown_task = fleet_client.post(UPDATE, json={"agent_id": other, "task_id": "nope", "task_duration": 1})
    assert unknown_task.status_code == 404
    assert unknown_task.json()["error"] == "unknown_task"
    unknown_agent = fleet_client.post(
        UPDATE, json={"agent_id": "ghost", "task_id": "job-9", "task_duration": 1}
    )
    assert unknown_agent.status_code == 404
    assert unknown_agent.json()["error"] == "unknown_agent"
    wrong_agent = fleet_client.post(UPDATE, json={"agent_id": other, "task_id": "job-9", "task_duration": 1})
    assert wrong_agent.status_code == 409
    assert active_tasks(fleet_client, chosen["selected_agent_id"]) == 1


def test_outcome_without_task_id_closes_oldest_in_flight_task(fleet_client: TestClient) -> None:
    first = select(fleet_client, strategy="round_robin", required_capabilities=["text_analysis"])
    second = select(fleet_client, strategy="round_robin", required_capabilities=["text_analysis"])
    assert first["selected_agent_id"] == second["selected_agent_id"] == "text-1"
    response = fleet_client.post(UPDATE, json={"agent_id": "text-1", "task_duration": 1.5})
    assert response.status_code == 200
    assert response.json()["task_id"] == first["task_id"]
    assert response.json()["closed_dispatch"] is True
    assert active_tasks(fleet_client, "text-1") == 1
    # the stored outcome is idempotent under the returned id
    again = fleet_client.post(
        UPDATE, json={"agent_id": "text-1", "task_id": first["task_id"], "task_duration": 1.5}
    )
    assert again.json()["duplicate"] is True


def test_outcome_without_anything_in_flight_updates_statistics(fleet_client: TestClient) -> None:
    response = fleet_client.post(UPDATE, json={"agent_id": "video-2", "task_duration": 4.0, "success": False})
    assert response.status_code == 200
    assert response.json()["closed_dispatch"] is False
    metrics = fleet_client.get("/load-balancing/agent/video-2/metrics").json()["metrics"]
    assert metrics["failed_tasks"] == 1


def test_statistics_report_distribution_and_accuracy(fleet_client: TestClient) -> None:
    for i in range(6):
        chosen = select(fleet_client, strategy="hybrid" if i % 2 else "least_connection", task_id=f"s-{i}")
        fleet_client.post(
            UPDATE,
            json={
                "agent_id": chosen["selected_agent_id"],
                "task_id": f"s-{i}",
                "task_duration": 1.0 + i,
                "success": True,
            },
        )
    select(fleet_client, strategy="least_connection")
    stats = fleet_client.get("/load-balancing/statistics")
    assert stats.status_code == 200
    body = stats.json()
    assert body["strategy_distribution"] == {"hybrid": 3, "least_connection": 4}
    assert body["total_selections"] == 7
    assert body["fallback_activation_rate"] == pytest.approx(3 / 7)
    assert 0.0 < body["agent_utilisation_rate"] <= 1.0
    assert body["load_distribution_variance"] >= 0.0
    assert {a["agent_id"] for a in body["agents"]} == {"video-1", "video-2", "text-1"}
    accuracy = {row["model_version"]: row for row in body["prediction_accuracy"]}
    assert accuracy["heuristic"]["n"] >= 3
    assert accuracy["heuristic"]["mae_s"] >= 0


def test_agent_metrics_404_for_unknown_agent(fleet_client: TestClient) -> None:
    response = fleet_client.get("/load-balancing/agent/ghost/metrics")
    assert response.status_code == 404
    assert response.json()["agent_id"] == "ghost"


def test_weights_are_validated_applied_and_persisted(client_factory: ClientFactory) -> None:
    client = client_factory.start()
    weights = {"weighted_round_robin": 1, "least_connection": 1, "predictive": 2, "resource_aware": 0}
    response = client.post("/load-balancing/configure-weights", json={"weights": weights})
    assert response.status_code == 200, response.text
    applied = response.json()["weights"]
    assert applied == pytest.approx(
        {"weighted_round_robin": 0.25, "least_connection": 0.25, "predictive": 0.5, "resource_aware": 0.0}
    )
    assert client.get("/load-balancing/statistics").json()["hybrid_weights"] == pytest.approx(applied)
    client_factory.stop(client)
    restarted = client_factory.start()
    assert restarted.get("/load-balancing/statistics").json()["hybrid_weights"] == pytest.approx(applied)


@pytest.mark.parametrize(
    "weights",
    [{"fastest": 1.0}, {"predictive": -1.0}, {"predictive": 0.0, "least_connection": 0.0}, {}],
)
def test_invalid_weights_are_422(sqlite_fleet_client: TestClient, weights: dict[str, float]) -> None:
    response = sqlite_fleet_client.post("/load-balancing/configure-weights", json={"weights": weights})
    assert response.status_code == 422, response.text


def test_restart_keeps_in_flight_tasks_and_outcomes(client_factory: ClientFactory) -> None:
    client = client_factory.start()
    register_fleet(client)
    open_task = select(client, task_id="open-1")
    done = select(client, task_id="done-1")
    client.post(UPDATE, json={"agent_id": done["selected_agent_id"], "task_id": "done-1", "task_duration": 3})
    client_factory.stop(client)
    restarted = client_factory.start()
    assert active_tasks(restarted, open_task["selected_agent_id"]) >= 1
    closed = restarted.post(
        UPDATE, json={"agent_id": open_task["selected_agent_id"], "task_id": "open-1", "task_duration": 2}
    )
    assert closed.status_code == 200 and closed.json()["closed_dispatch"] is True
    duplicate = restarted.post(
        UPDATE, json={"agent_id": done["selected_agent_id"], "task_id": "done-1", "task_duration": 3}
    )
    assert duplicate.json()["duplicate"] is True


def test_all_agents_ejected_without_panic_mode_is_503(client_factory: ClientFactory) -> None:
    client = client_factory.start(
        panic_mode_enabled=False, ejection_consecutive_failures=1, max_ejection_percent=100.0
    )
    client.post("/load-balancing/agents", json={"id": "solo", "name": "Solo", "capabilities": ["x"]})
    chosen = select(client, required_capabilities=["x"], task_id="fail-1")
    report = client.post(
        UPDATE,
        json={
            "agent_id": chosen["selected_agent_id"],
            "task_id": "fail-1",
            "task_duration": 1,
            "success": False,
            "error": "boom",
        },
    )
    assert report.json()["ejected"] is True
    response = client.post(SELECT, json={"task_type": "t", "required_capabilities": ["x"]})
    assert response.status_code == 503
    assert response.json()["error"] == "all_agents_ejected"
    health = client.get("/load-balancing/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"


@pytest.mark.parametrize("strategy", ["hybrid", "predictive", "round_robin", "least_connection"])
def test_select_response_is_serialised_as_the_documented_model(
    sqlite_fleet_client: TestClient, strategy: str
) -> None:
    """The hot path writes the response straight from the result (SelectAgentResponse.json_of):
    byte for byte what the documented model would write, whatever the result holds."""
    import dataclasses
    import math

    import numpy as np

    from agentlb.api.schemas import SelectAgentResponse
    from agentlb.domain import TaskRequest

    service = sqlite_fleet_client.app.state.service  # type: ignore[attr-defined]
    task = TaskRequest(task_type="video_task", required_capabilities=frozenset({"video_analysis"}))
    result = service.balancer.select(task, strategy, top_k=2, record=False)
    metrics = dataclasses.replace(
        result.load_metrics,
        active_tasks=np.int64(3),
        avg_task_duration=np.float64(1.25),
        cpu_usage=math.nan,
        specialization_score={"video_task": np.float64(1.5)},
    )
    variants = [
        result,
        dataclasses.replace(result, predicted_completion=None, alternative_agents=(), model_version="7"),
        dataclasses.replace(
            result, load_metrics=metrics, confidence_score=np.float64(0.5), fallback_used=True
        ),
    ]
    for variant in variants:
        assert (
            SelectAgentResponse.json_of(variant) == SelectAgentResponse.of(variant).model_dump_json().encode()
        )
