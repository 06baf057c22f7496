"""The agent registry and heartbeats: store and live state change together."""

from __future__ import annotations

import pytest
from api_support import FLEET
from fastapi.testclient import TestClient

AGENTS = "/load-balancing/agents"


def test_register_list_get_update_delete(client: TestClient) -> None:
    created = client.post(AGENTS, json=FLEET[0])
    assert created.status_code == 201, created.text
    assert created.json()["capabilities"] == ["object_detection", "video_analysis"]
    identical = client.post(AGENTS, json=FLEET[0])
    assert identical.status_code == 200
    conflicting = client.post(AGENTS, json={**FLEET[0], "max_concurrency": 99})
    assert conflicting.status_code == 409
    assert conflicting.json()["error"] == "conflicting_agent"

    listed = client.get(AGENTS)
    assert [a["id"] for a in listed.json()] == ["video-1"]
    one = client.get(f"{AGENTS}/video-1")
    assert one.status_code == 200 and one.json()["name"] == "Video One"

    patched = client.patch(f"{AGENTS}/video-1", json={"max_concurrency": 16, "enabled": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_concurrency"] == 16 and patched.json()["enabled"] is False
    assert client.get(f"{AGENTS}/video-1").json()["max_concurrency"] == 16
    # a disabled agent is not selected
    refused = client.post(
        "/load-balancing/select-agent", json={"task_type": "t", "required_capabilities": ["video_analysis"]}
    )
    assert refused.status_code == 409

    deleted = client.delete(f"{AGENTS}/video-1")
    assert deleted.status_code == 204
    assert client.get(f"{AGENTS}/video-1").status_code == 404
    assert client.delete(f"{AGENTS}/video-1").status_code == 404
    assert client.get("/load-balancing/agent/video-1/metrics").status_code == 404


def test_patch_unknown_agent_is_404_and_null_fields_are_422(client: TestClient) -> None:
    assert client.patch(f"{AGENTS}/ghost", json={"weight": 2.0}).status_code == 404
    client.post(AGENTS, json=FLEET[0])
    response = client.patch(f"{AGENTS}/video-1", json={"name": None})
    assert response.status_code == 422
    assert "name" in response.json()["detail"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "id"),
        ({"id": "a b", "name": "x"}, "id"),
        ({"id": "a", "name": "x", "max_concurrency": 0}, "max_concurrency"),
        ({"id": "a", "name": "x", "weight": 0}, "weight"),
        ({"id": "a", "name": "x", "capabilities": "video"}, "capabilities"),
    ],
)
def test_bad_agent_is_422(client: TestClient, body: dict[str, object], field: str) -> None:
    response = client.post(AGENTS, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"].startswith(field)


def test_heartbeat_feeds_resource_aware_selection(client: TestClient) -> None:
    for agent in FLEET[:2]:
        client.post(AGENTS, json=agent)
    busy = client.post(
        f"{AGENTS}/video-1/heartbeat", json={"cpu_usage": 99.0, "memory_usage": 97.0, "queue_length": 50}
    )
    assert busy.status_code == 200, busy.text
    assert busy.json()["cpu_usage"] == 99.0
    client.post(
        f"{AGENTS}/video-2/heartbeat", json={"cpu_usage": 5.0, "memory_usage": 10.0, "queue_length": 0}
    )
    chosen = client.post(
        "/load-balancing/select-agent",
        json={"task_type": "t", "required_capabilities": ["video_analysis"], "strategy": "resource_aware"},
    )
    assert chosen.json()["selected_agent_id"] == "video-2"


def test_heartbeat_errors(client: TestClient) -> None:
    assert client.post(f"{AGENTS}/ghost/heartbeat", json={"cpu_usage": 1}).status_code == 404
    client.post(AGENTS, json=FLEET[0])
    response = client.post(f"{AGENTS}/video-1/heartbeat", json={"cpu_usage": 150})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "cpu_usage"
