"""Access control matrix, body-size limit and CORS."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import FLEET, ClientFactory
from fastapi.testclient import TestClient

API_KEY = "client-key-123"
ADMIN_KEY = "admin-key-456"

# (method, path, body, admin action?)
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    ("POST", "/load-balancing/select-agent", {"task_type": "t"}, False),
    ("POST", "/load-balancing/update-performance", {"agent_id": "video-1", "task_duration": 1}, False),
    ("GET", "/load-balancing/statistics", None, False),
    ("GET", "/load-balancing/agent/video-1/metrics", None, False),
    ("GET", "/load-balancing/agents", None, False),
    ("GET", "/load-balancing/agents/video-1", None, False),
    ("POST", "/load-balancing/agents/video-1/heartbeat", {"cpu_usage": 10}, False),
    ("POST", "/load-balancing/agents", FLEET[1], True),
    ("PATCH", "/load-balancing/agents/video-1", {"weight": 2.0}, True),
    ("POST", "/load-balancing/configure-weights", {"weights": {"predictive": 1.0}}, True),
    ("POST", "/load-balancing/model/reload", None, True),
    ("DELETE", "/load-balancing/agents/text-1", None, True),
]
OPEN = [("GET", "/load-balancing/health"), ("GET", "/metrics")]


def _call(client: TestClient, method: str, path: str, body: dict[str, Any] | None, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.request(method, path, json=body, headers=headers).status_code


def _expected(api: bool, admin: bool, is_admin_action: bool, presented: str | None) -> int | None:
    """401/403 when refused, None when the request must get past access control."""
    valid_client = presented == API_KEY and api
    valid_admin = presented == ADMIN_KEY and admin
    if is_admin_action and admin:
        if valid_admin:
            return None
        return 403 if valid_client else 401
    if api and not (valid_client or valid_admin):
        return 401
    return None


@pytest.mark.parametrize(("api", "admin"), [(False, False), (True, False), (False, True), (True, True)])
def test_access_matrix(sqlite_factory: ClientFactory, api: bool, admin: bool) -> None:
    client = sqlite_factory.start(api_key=API_KEY if api else None, admin_key=ADMIN_KEY if admin else None)
    setup_key = ADMIN_KEY if admin else (API_KEY if api else None)
    for agent in FLEET:
        assert _call(client, "POST", "/load-balancing/agents", agent, setup_key) in (200, 201)
    for method, path, body, is_admin in ENDPOINTS:
        for presented in (None, "wrong", API_KEY, ADMIN_KEY):
            expected = _expected(api, admin, is_admin, presented)
            status = _call(client, method, path, body, presented)
            if expected is None:
                assert status not in (401, 403), (method, path, presented, status)
                assert status < 500 or path.endswith("reload"), (method, path, presented, status)
            else:
                assert status == expected, (method, path, presented, status)
    for method, path in OPEN:
        assert _call(client, method, path, None, None) in (200, 503)


def test_refusal_says_how_to_authenticate_without_echoing_keys(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(api_key=API_KEY)
    response = client.get("/load-balancing/statistics", headers={"Authorization": "Bearer guess-this"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "guess-this" not in response.text and API_KEY not in response.text


def test_keys_never_appear_in_logs(sqlite_factory: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = sqlite_factory.start(api_key=API_KEY, admin_key=ADMIN_KEY)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client.post("/load-balancing/agents", json=FLEET[0], headers=headers)
    client.post("/load-balancing/configure-weights", json={"weights": {"predictive": 1}}, headers=headers)
    client.post(
        "/load-balancing/select-agent", json={"task_type": "t"}, headers={"Authorization": "Bearer x"}
    )
    assert caplog.records
    assert API_KEY not in caplog.text and ADMIN_KEY not in caplog.text


def test_oversized_body_is_413(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(max_body_bytes=2048)
    big = {"task_type": "t", "task_requirements": {f"k{i}": "x" * 60 for i in range(40)}}
    response = client.post("/load-balancing/select-agent", json=big)
    assert response.status_code == 413

    def chunks() -> Any:
        yield b'{"task_type": "t", "task_requirements": {"a": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}}'

    streamed = client.post(
        "/load-balancing/select-agent", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_cors_is_off_unless_configured(sqlite_factory: ClientFactory) -> None:
    preflight = {"Origin": "https://ops.example", "Access-Control-Request-Method": "POST"}
    closed = sqlite_factory.start()
    response = closed.options("/load-balancing/select-agent", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    sqlite_factory.stop(closed)
    opened = sqlite_factory.start(cors_origins=["https://ops.example"])
    response = opened.options("/load-balancing/select-agent", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://ops.example"


SELECT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("no key", {"json": {"task_type": "video_task"}}),
    ("wrong key", {"json": {"task_type": "video_task"}, "headers": {"Authorization": "Bearer nope"}}),
    (
        "bad field",
        {"json": {"task_type": "", "top_k": -1}, "headers": {"Authorization": f"Bearer {API_KEY}"}},
    ),
    (
        "not json",
        {
            "content": b"task_type=t",
            "headers": {"Authorization": f"Bearer {API_KEY}", "content-type": "text/plain"},
        },
    ),
    (
        "missing capability",
        {
            "json": {"task_type": "t", "required_capabilities": ["telepathy"]},
            "headers": {"Authorization": f"Bearer {API_KEY}"},
        },
    ),
    (
        "unknown strategy",
        {"json": {"task_type": "t", "strategy": "coin"}, "headers": {"Authorization": f"Bearer {API_KEY}"}},
    ),
    (
        "too large",
        {
            "json": {"task_type": "t", "task_requirements": {f"k{i}": "x" * 60 for i in range(40)}},
            "headers": {"Authorization": f"Bearer {API_KEY}"},
        },
    ),
    (
        "selected",
        {"json": {"task_type": "video_task", "top_k": 2}, "headers": {"Authorization": f"Bearer {API_KEY}"}},
    ),
]


def test_select_fast_path_answers_as_the_route_does(sqlite_factory: ClientFactory) -> None:
    """AgentLBApp serves select-agent ahead of the middleware stack; with it off, the
    documented route serves it. Both must answer every request alike."""
    client = sqlite_factory.start(api_key=API_KEY, max_body_bytes=2048)
    for agent in FLEET:
        client.post("/load-balancing/agents", json=agent, headers={"Authorization": f"Bearer {API_KEY}"})
    answers: dict[bool, list[tuple[int, str, Any]]] = {}
    for fast in (True, False):
        client.app.fast_select = fast  # type: ignore[attr-defined]
        answers[fast] = []
        for _name, request in SELECT_CASES:
            response = client.post("/load-balancing/select-agent", **request)
            body = response.json()
            if response.status_code == 200:  # ids and timings differ between two selections
                body = sorted(body)
            answers[fast].append((response.status_code, response.headers["content-type"], body))
    assert [status for status, _, _ in answers[True]] == [401, 401, 422, 422, 409, 422, 413, 200]
    for (name, _), fast, routed in zip(SELECT_CASES, answers[True], answers[False], strict=True):
        assert fast == routed, name


def test_select_with_cors_configured_carries_cors_headers(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(cors_origins=["https://ops.example"])
    for agent in FLEET:
        client.post("/load-balancing/agents", json=agent)
    response = client.post(
        "/load-balancing/select-agent", json={"task_type": "t"}, headers={"Origin": "https://ops.example"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "https://ops.example"


def test_select_fast_path_sends_nothing_to_a_client_that_left_mid_body(sqlite_factory: ClientFactory) -> None:
    """A client that disconnects before its body is complete gets no answer and selects
    nothing (the fast path reads the body itself)."""
    import asyncio

    client = sqlite_factory.start()
    for agent in FLEET:
        client.post("/load-balancing/agents", json=agent)
    app = client.app
    incoming = [
        {"type": "http.request", "body": b'{"task_type": "vid', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/load-balancing/select-agent",
        "raw_path": b"/load-balancing/select-agent",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent == [] and not incoming
    statistics = client.get("/load-balancing/statistics").json()
    assert sum(statistics["strategy_distribution"].values()) == 0, statistics
