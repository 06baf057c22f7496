"""Health, Prometheus metrics, JSON selection logs, OpenAPI docs, and no 500 on bad input."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from api_support import ClientFactory, register_fleet
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agentlb.observability import JsonFormatter


def scrape(client: TestClient) -> dict[str, list[Any]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def sample(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    total = 0.0
    for family_samples in families.values():
        for s in family_samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_counters_match_requests(fleet_client: TestClient) -> None:
    chosen: dict[str, int] = {}
    for i in range(5):
        strategy = "least_connection" if i < 3 else "hybrid"
        body = fleet_client.post(
            "/load-balancing/select-agent",
            json={
                "task_type": "video_task",
                "required_capabilities": ["video_analysis"],
                "strategy": strategy,
                "task_id": f"m-{i}",
            },
        ).json()
        chosen[f"{strategy}/{body['selected_agent_id']}"] = (
            chosen.get(f"{strategy}/{body['selected_agent_id']}", 0) + 1
        )
        if i < 4:
            fleet_client.post(
                "/load-balancing/update-performance",
                json={
                    "agent_id": body["selected_agent_id"],
                    "task_id": f"m-{i}",
                    "task_duration": 0.3 * (i + 1),
                },
            )
    families = scrape(fleet_client)
    for key, count in chosen.items():
        strategy, agent = key.split("/")
        assert (
            sample(families, "load_balancer_agent_selections_total", strategy=strategy, agent=agent) == count
        )
    assert sample(families, "load_balancer_agent_selections_total") == 5
    assert sample(families, "load_balancer_response_time_seconds_count") == 4
    assert sample(families, "load_balancer_response_time_seconds_sum") == pytest.approx(0.3 * (1 + 2 + 3 + 4))
    assert sample(families, "load_balancer_selection_duration_seconds_count") == 5
    assert sample(families, "load_balancer_fallbacks_total", strategy="hybrid") == 2
    assert 0 < sample(families, "load_balancer_strategy_confidence", strategy="hybrid") <= 1
    in_flight_agent = next(k.split("/")[1] for k in chosen if k.startswith("hybrid"))
    assert sample(families, "load_balancer_load_score", agent=in_flight_agent) > 0
    assert sample(families, "load_balancer_load_score", agent="text-1") == 0
    assert "load_balancer_prediction_error_seconds" in families
    assert "load_balancer_ejections" in families


def test_metrics_show_live_state_health_and_refused_selects(fleet_client: TestClient) -> None:
    """The scrape-time gauges the dashboards and alerts read (deploy/prometheus)."""
    for i in range(4):  # video-1 is the only object_detection agent: its 4 slots fill
        chosen = fleet_client.post(
            "/load-balancing/select-agent",
            json={"task_type": "detect", "required_capabilities": ["object_detection"], "task_id": f"d-{i}"},
        )
        assert chosen.json()["selected_agent_id"] == "video-1"
    refused = fleet_client.post(
        "/load-balancing/select-agent", json={"task_type": "x", "required_capabilities": ["nobody"]}
    )
    assert refused.status_code == 409
    families = scrape(fleet_client)
    assert sample(families, "load_balancer_agent_in_flight_tasks", agent="video-1") == 4
    assert sample(families, "load_balancer_agent_capacity_slots", agent="text-1") == 8
    assert sample(families, "load_balancer_agent_ejected", agent="video-2") == 0
    # loads (1, 0, 0): variance 2/9, its bound at mean 1/3 is 2/9, so the ratio is 1
    assert sample(families, "load_balancer_load_distribution_variance") == pytest.approx(2 / 9)
    assert sample(families, "load_balancer_load_distribution_variance_ratio") == pytest.approx(1.0)
    health = fleet_client.get("/load-balancing/health").json()["status"]
    assert sample(families, "load_balancer_health_status", status=health) == 1
    assert (
        sum(
            sample(families, "load_balancer_health_status", status=s)
            for s in ("healthy", "degraded", "unhealthy")
        )
        == 1
    )
    assert sample(families, "load_balancer_select_requests_total") == 5
    errors = [s for s in families["load_balancer_select_errors"] if s.name.endswith("_total")]
    assert [(s.labels["error"], s.value) for s in errors] == [(errors[0].labels["error"], 1.0)]
    assert sample(families, "load_balancer_selection_confidence_count") == 4
    assert sample(families, "load_balancer_store_write_failures_total", operation="record_dispatch") == 0
    model = fleet_client.get("/load-balancing/model").json()["predictor"]
    assert sample(families, "load_balancer_model_info", model_version=model["version"]) == 1
    assert sample(families, "load_balancer_model_fallback") == (1 if model["fallback_reason"] else 0)


def test_metrics_route_is_not_a_redirect_and_needs_no_key(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(api_key="k")
    response = client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200


def test_health_reports_database_predictor_and_agents(client: TestClient) -> None:
    empty = client.get("/load-balancing/health")
    assert empty.status_code == 503
    assert empty.json()["status"] == "unhealthy"
    assert "no enabled agents registered" in empty.json()["reasons"]
    register_fleet(client)
    body = client.get("/load-balancing/health").json()
    assert body["database"] == "ok"
    assert body["agents_enabled"] == 3 and body["agents_ejected"] == 0
    # no model was trained in this home: degraded, with the reason
    assert body["status"] == "degraded"
    assert body["predictor"]["source"] == "heuristic"
    assert any("model unavailable" in r for r in body["reasons"])


def test_one_json_log_line_per_selection(fleet_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentlb.selection")
    for i in range(3):
        fleet_client.post("/load-balancing/select-agent", json={"task_type": "t", "task_id": f"log-{i}"})
    records = [r for r in caplog.records if r.name == "agentlb.selection"]
    assert len(records) == 3
    line = json.loads(JsonFormatter().format(records[0]))
    for key in (
        "timestamp",
        "level",
        "service",
        "component",
        "event",
        "agent_id",
        "strategy",
        "confidence",
        "duration_ms",
        "task_id",
        "model_version",
    ):
        assert key in line, key
    assert line["event"] == "agent_selected" and line["component"] == "load_balancer"
    assert line["task_id"] == "log-0" and line["level"] == "INFO"
    assert "\n" not in JsonFormatter().format(records[0])


def test_openapi_has_examples_for_each_body(sqlite_fleet_client: TestClient) -> None:
    client = sqlite_fleet_client
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in (
        "SelectAgentRequest",
        "PerformanceUpdate",
        "WeightsUpdate",
        "AgentCreate",
        "AgentUpdate",
        "HeartbeatCreate",
    ):
        assert schemas[name].get("examples"), name
    described = spec["paths"]["/load-balancing/update-performance"]["post"]["description"]
    assert "Without `task_id`" in described
    assert client.get("/docs").status_code == 200


GARBAGE: list[Any] = [None, 0, -1, 1e308, "x" * 300, [], {}, [1, 2], {"a": {"b": []}}, True, "NaN"]


def test_no_500_for_garbage_bodies(sqlite_fleet_client: TestClient) -> None:
    fleet_client = sqlite_fleet_client
    spec = fleet_client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        concrete = path.replace("{agent_id}", "video-1")
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            fields = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
            for field in fields:
                for value in GARBAGE:
                    response = fleet_client.request(method.upper(), concrete, json={field: value})
                    assert response.status_code < 500, (method, path, field, value, response.text)
            for raw in (b"", b"{", b"[]", b'"text"', b"\xff\xfe"):
                response = fleet_client.request(
                    method.upper(), concrete, content=raw, headers={"content-type": "application/json"}
                )
                assert response.status_code < 500, (method, path, raw, response.text)
