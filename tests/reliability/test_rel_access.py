"""Access: the key matrix (none / wrong / client / admin) on every endpoint in the OpenAPI
document, constant-time key comparison, no secret in the server's log output, CORS off."""

from __future__ import annotations

import hmac
import inspect
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from reliability_helpers import (
    ADMIN_KEY,
    AGENTS,
    CLIENT_KEY,
    OUTCOME,
    SELECT,
    AppClients,
    Server,
    register_fleet,
)

from agentlb.api import deps

OPEN = {("GET", "/load-balancing/health"), ("GET", "/metrics")}
ADMIN_ONLY = {
    ("POST", "/load-balancing/agents"),
    ("PATCH", "/load-balancing/agents/{agent_id}"),
    ("DELETE", "/load-balancing/agents/{agent_id}"),
    ("POST", "/load-balancing/configure-weights"),
    ("POST", "/load-balancing/model/reload"),
}
CLIENT = {
    ("POST", "/load-balancing/select-agent"),
    ("POST", "/load-balancing/update-performance"),
    ("GET", "/load-balancing/statistics"),
    ("GET", "/load-balancing/agent/{agent_id}/metrics"),
    ("GET", "/load-balancing/agents"),
    ("GET", "/load-balancing/agents/{agent_id}"),
    ("POST", "/load-balancing/agents/{agent_id}/heartbeat"),
    ("POST", "/load-balancing/benchmark"),
    ("GET", "/load-balancing/model"),
    ("GET", "/load-balancing/replication"),
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/load-balancing/agents"): {"id": "new-1", "name": "New", "capabilities": ["video_analysis"]},
    ("PATCH", "/load-balancing/agents/{agent_id}"): {"weight": 2.0},
    ("POST", "/load-balancing/configure-weights"): {"weights": {"predictive": 1.0}},
    ("POST", "/load-balancing/select-agent"): {"task_type": "t"},
    ("POST", "/load-balancing/update-performance"): {"agent_id": "video-1", "task_duration": 1.0},
    ("POST", "/load-balancing/agents/{agent_id}/heartbeat"): {"cpu_usage": 10.0},
    ("POST", "/load-balancing/benchmark"): {"strategies": ["round_robin"], "tasks": 10},
}
KEYS = {"none": None, "wrong": "not-the-key-0000", "client": CLIENT_KEY, "admin": ADMIN_KEY}


def _operations(client: TestClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def _call(client: TestClient, operation: tuple[str, str], key: str | None) -> int:
    method, path = operation
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    concrete = path.replace("{agent_id}", "video-1")
    return client.request(method, concrete, json=BODIES.get(operation), headers=headers).status_code


def _expected_refusal(operation: tuple[str, str], key_name: str) -> int | None:
    if operation in OPEN:
        return None
    if key_name in ("none", "wrong"):
        return 401
    if operation in ADMIN_ONLY and key_name == "client":
        return 403
    return None


def test_key_matrix_on_every_endpoint(apps: AppClients) -> None:
    client = apps.start(api_key=CLIENT_KEY, admin_key=ADMIN_KEY)
    register_fleet(client, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    operations = _operations(client)
    assert operations == OPEN | ADMIN_ONLY | CLIENT, "a new endpoint: put it in the access matrix"
    # Refusals first (they change nothing), then the accepted calls with DELETE last.
    ordered = sorted(operations, key=lambda op: (op[0] == "DELETE", op))
    checked = 0
    for key_name in ("none", "wrong", "client", "admin"):
        for operation in ordered:
            expected = _expected_refusal(operation, key_name)
            if expected is None and operation[0] == "DELETE" and key_name != "admin":
                continue  # delete once, with the admin key, at the very end
            status = _call(client, operation, KEYS[key_name])
            if expected is None:
                # Past access control; a reload without a model is the documented 503.
                no_model = operation[1].endswith("/reload") and status == 503
                assert status not in (401, 403) and (status < 500 or no_model), (operation, key_name, status)
            else:
                assert status == expected, (operation, key_name, status)
            checked += 1
    print(f"\naccess matrix: {len(operations)} endpoints x {len(KEYS)} keys = {checked} requests checked")


def test_keys_are_compared_in_constant_time(apps: AppClients, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key check goes through hmac.compare_digest (a spy that records and delegates)."""
    assert "hmac.compare_digest" in inspect.getsource(deps._matches)
    for function in (deps.require_client, deps.require_admin, deps._presented):
        source = inspect.getsource(function)
        assert "==" not in source.replace("scheme.lower() != ", ""), function.__name__
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    client = apps.start(api_key=CLIENT_KEY, admin_key=ADMIN_KEY)
    for key in ("x", "not-the-key-of-another-length-entirely", CLIENT_KEY, ADMIN_KEY):
        client.get("/load-balancing/statistics", headers={"Authorization": f"Bearer {key}"})
        assert any(a == key.encode() for a, _ in compared), key
    client.post("/load-balancing/configure-weights", json={"weights": {"predictive": 1}})
    presented = {a for a, _ in compared}
    assert {b"x", CLIENT_KEY.encode(), ADMIN_KEY.encode()} <= presented


SECRET_BODY = "password=hunter2-body-secret"


@pytest.mark.slow
def test_no_secret_in_server_logs_and_cors_off(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(
        tmp_path,
        env={"AGENTLB_API_KEY": CLIENT_KEY, "AGENTLB_ADMIN_KEY": ADMIN_KEY},
        log_level="DEBUG",
        extra_args=["--access-log"],
    )
    servers.append(server)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client = {"Authorization": f"Bearer {CLIENT_KEY}"}
    wrong = {"Authorization": "Bearer wrong-key-shhh-123"}
    origin = {"Origin": "https://evil.example"}
    with httpx.Client(base_url=server.base, timeout=30) as http:
        register_fleet(http, headers=admin)
        http.post(AGENTS, json={"id": "x-1", "name": "X"}, headers=client)  # 403
        http.get("/load-balancing/statistics", headers=wrong)  # 401
        http.get("/load-balancing/statistics", headers={"Authorization": f"Basic {CLIENT_KEY}"})  # 401
        chosen = http.post(SELECT, json={"task_type": "t"}, headers={**client, **origin})
        assert chosen.status_code == 200
        assert "access-control-allow-origin" not in chosen.headers
        preflight = http.options(
            SELECT,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers
        assert "access-control-allow-credentials" not in preflight.headers
        body = chosen.json()
        failed = http.post(
            OUTCOME,
            json={
                "agent_id": body["selected_agent_id"],
                "task_id": body["task_id"],
                "task_duration": 1.0,
                "success": False,
                "error": SECRET_BODY,
            },
            headers=client,
        )
        assert failed.status_code == 200
        http.post(SELECT, json={"task_type": SECRET_BODY, "strategy": SECRET_BODY}, headers=client)  # 422
        http.post("/load-balancing/configure-weights", json={"weights": {"predictive": 1}}, headers=admin)
        health = http.get("/load-balancing/health", headers=origin)
        assert "access-control-allow-origin" not in health.headers
    server.stop()
    output = server.output()
    assert '"event"' in output and "GET /load-balancing/statistics" in output, output[-2000:]
    for secret in (CLIENT_KEY, ADMIN_KEY, "wrong-key-shhh-123", "hunter2", "authorization", "bearer"):
        assert secret.lower() not in output.lower(), f"{secret!r} appears in the server log"
    print(
        f"\nserver log: {len(output.splitlines())} lines at DEBUG with the access log, no key/header/secret"
    )
