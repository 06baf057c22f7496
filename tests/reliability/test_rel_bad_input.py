"""Bad-input catalogue: every malformed or wrong request gets a specific 4xx, and neither the
database (row counts per table, read with a separate connection) nor the live in-flight state
changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reliability_helpers import AGENTS, OUTCOME, SELECT, AppClients, register_fleet, row_counts, sqlite_url

from agentlb.strategies import STRATEGY_NAMES

JSON = {"content-type": "application/json"}
LONG_ID = "a" * 129  # ids are at most 128 characters
TEN_MB = b'{"task_type": "' + b"x" * (10 * 1024 * 1024) + b'"}'

# (name, method, path, json body or raw bytes, expected status, text the body must contain)
CATALOGUE: list[tuple[str, str, str, Any, int, str]] = [
    ("malformed json", "POST", SELECT, b'{"task_type": "video_task",', 422, "json"),
    ("not an object", "POST", SELECT, b"[1, 2]", 422, "validation_error"),
    ("empty body", "POST", OUTCOME, b"", 422, "validation_error"),
    ("invalid utf-8", "POST", SELECT, b'{"task_type": "\xff\xfe"}', 400, "pars"),
    ("task_type wrong type", "POST", SELECT, {"task_type": 5}, 422, "task_type"),
    ("top_k wrong type", "POST", SELECT, {"task_type": "t", "top_k": "many"}, 422, "top_k"),
    ("extra field", "POST", SELECT, {"task_type": "t", "priority": "high"}, 422, "priority"),
    (
        "duration as text",
        "POST",
        OUTCOME,
        {"agent_id": "video-1", "task_duration": "fast"},
        422,
        "task_duration",
    ),
    ("NaN duration", "POST", OUTCOME, b'{"agent_id": "video-1", "task_duration": NaN}', 422, "task_duration"),
    (
        "Infinity duration",
        "POST",
        OUTCOME,
        b'{"agent_id": "video-1", "task_duration": Infinity}',
        422,
        "task_duration",
    ),
    (
        "negative duration",
        "POST",
        OUTCOME,
        {"agent_id": "video-1", "task_duration": -1.0},
        422,
        "task_duration",
    ),
    ("NaN deadline", "POST", SELECT, b'{"task_type": "t", "deadline_s": NaN}', 422, "deadline_s"),
    (
        "cpu above 100 on outcome",
        "POST",
        OUTCOME,
        {"agent_id": "video-1", "task_duration": 1, "cpu_usage": 100.5},
        422,
        "cpu_usage",
    ),
    (
        "memory below 0 on outcome",
        "POST",
        OUTCOME,
        {"agent_id": "video-1", "task_duration": 1, "memory_usage": -0.1},
        422,
        "memory_usage",
    ),
    (
        "cpu above 100 on heartbeat",
        "POST",
        f"{AGENTS}/video-1/heartbeat",
        {"cpu_usage": 250},
        422,
        "cpu_usage",
    ),
    ("cpu below 0 on heartbeat", "POST", f"{AGENTS}/video-1/heartbeat", {"cpu_usage": -5}, 422, "cpu_usage"),
    ("10 MB body", "POST", SELECT, TEN_MB, 413, "larger than"),
    ("10 MB agent", "POST", AGENTS, TEN_MB, 413, "larger than"),
    ("unknown strategy", "POST", SELECT, {"task_type": "t", "strategy": "fastest"}, 422, "least_connection"),
    (
        "unknown agent outcome",
        "POST",
        OUTCOME,
        {"agent_id": "ghost", "task_duration": 1},
        404,
        "unknown_agent",
    ),
    (
        "unknown task outcome",
        "POST",
        OUTCOME,
        {"agent_id": "video-1", "task_id": "never-dispatched", "task_duration": 1},
        404,
        "unknown_task",
    ),
    ("unknown agent heartbeat", "POST", f"{AGENTS}/ghost/heartbeat", {"cpu_usage": 5}, 404, "unknown_agent"),
    ("unknown agent metrics", "GET", "/load-balancing/agent/ghost/metrics", None, 404, "unknown_agent"),
    ("unknown agent patch", "PATCH", f"{AGENTS}/ghost", {"weight": 2.0}, 404, "unknown_agent"),
    ("unknown agent delete", "DELETE", f"{AGENTS}/ghost", None, 404, "unknown_agent"),
    (
        "capability nobody has",
        "POST",
        SELECT,
        {"task_type": "t", "required_capabilities": ["time_travel"]},
        409,
        "time_travel",
    ),
    (
        "blank required capability",
        "POST",
        SELECT,
        {"task_type": "t", "required_capabilities": [""]},
        422,
        "0",
    ),
    (
        "blank agent capability",
        "POST",
        AGENTS,
        {"id": "blank-cap", "name": "Blank", "capabilities": [""]},
        422,
        "capabilities",
    ),
    ("empty task_type", "POST", SELECT, {"task_type": ""}, 422, "task_type"),
    ("unicode task id", "POST", SELECT, {"task_type": "t", "task_id": "tâche-✓"}, 422, "task_id"),
    ("very long task id", "POST", SELECT, {"task_type": "t", "task_id": LONG_ID}, 422, "task_id"),
    ("very long agent id", "POST", AGENTS, {"id": LONG_ID, "name": "Long"}, 422, "id"),
    ("unicode agent id", "POST", AGENTS, {"id": "агент-1", "name": "Unicode"}, 422, "id"),
    (
        "very long agent id outcome",
        "POST",
        OUTCOME,
        {"agent_id": LONG_ID, "task_duration": 1},
        422,
        "agent_id",
    ),
    (
        "unicode agent id outcome",
        "POST",
        OUTCOME,
        {"agent_id": "агент-1", "task_duration": 1},
        404,
        "агент-1",
    ),
    (
        "reserved attribute",
        "POST",
        SELECT,
        {"task_type": "t", "task_requirements": {"agent_x": 1}},
        422,
        "reserved",
    ),
    (
        "weights unknown name",
        "POST",
        "/load-balancing/configure-weights",
        {"weights": {"x": 1}},
        422,
        "unknown",
    ),
    (
        "weights all zero",
        "POST",
        "/load-balancing/configure-weights",
        {"weights": {"predictive": 0.0}},
        422,
        "zero",
    ),
]


def _send(client: TestClient, method: str, path: str, body: Any) -> Any:
    if isinstance(body, bytes):
        return client.request(method, path, content=body, headers=JSON)
    return client.request(method, path, json=body)


def _live_state(client: TestClient) -> dict[str, tuple[int, int, int]]:
    stats = client.get("/load-balancing/statistics").json()
    return {
        a["agent_id"]: (a["active_tasks"], a["completed_tasks"], a["failed_tasks"]) for a in stats["agents"]
    }


@pytest.fixture
def seeded(apps: AppClients, tmp_path: Path) -> TestClient:
    """A fleet, one task still in flight ("open-1") and one completed ("done-1")."""
    client = apps.start()
    register_fleet(client)
    assert client.post(SELECT, json={"task_type": "video_task", "task_id": "open-1"}).status_code == 200
    done = client.post(
        SELECT,
        json={"task_type": "video_task", "task_id": "done-1", "required_capabilities": ["video_analysis"]},
    ).json()
    outcome = {"agent_id": done["selected_agent_id"], "task_id": "done-1", "task_duration": 2.0}
    assert client.post(OUTCOME, json=outcome).status_code == 200
    client.app.state.done_agent = done["selected_agent_id"]  # type: ignore[attr-defined]
    return client


def test_every_bad_request_is_a_specific_4xx_and_changes_nothing(seeded: TestClient, tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    before_rows = row_counts(db)
    before_live = _live_state(seeded)
    results: list[str] = []
    for name, method, path, body, expected, needle in CATALOGUE:
        response = _send(seeded, method, path, body)
        assert response.status_code == expected, (name, response.status_code, response.text[:500])
        assert needle.lower() in response.text.lower(), (name, response.text[:500])
        assert response.headers["content-type"].startswith("application/json"), name
        results.append(f"{expected} {name}")
    assert row_counts(db) == before_rows
    assert _live_state(seeded) == before_live
    print(f"\n{len(CATALOGUE)} bad requests, each a specific 4xx, store unchanged: {before_rows}")


def test_unknown_strategy_lists_every_valid_one(seeded: TestClient) -> None:
    response = seeded.post(SELECT, json={"task_type": "t", "strategy": "fastest"})
    assert response.status_code == 422
    reason = response.json()["detail"][0]["reason"]
    assert all(name in reason for name in STRATEGY_NAMES), reason


def test_duplicate_and_conflicting_outcomes(seeded: TestClient, tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    agent = seeded.app.state.done_agent  # type: ignore[attr-defined]
    other = "video-2" if agent == "video-1" else "video-1"
    before_rows = row_counts(db)
    before_live = _live_state(seeded)

    same = seeded.post(OUTCOME, json={"agent_id": agent, "task_id": "done-1", "task_duration": 2.0})
    assert same.status_code == 200 and same.json()["duplicate"] is True
    different = seeded.post(OUTCOME, json={"agent_id": agent, "task_id": "done-1", "task_duration": 9.0})
    assert different.status_code == 409 and different.json()["error"] == "conflicting_outcome"
    assert different.json()["fields"], different.text
    failed = seeded.post(
        OUTCOME, json={"agent_id": agent, "task_id": "done-1", "task_duration": 2.0, "success": False}
    )
    assert failed.status_code == 409
    wrong_agent = seeded.post(OUTCOME, json={"agent_id": other, "task_id": "done-1", "task_duration": 2.0})
    assert wrong_agent.status_code == 409

    open_owner = seeded.get("/load-balancing/statistics").json()
    owner = next(a["agent_id"] for a in open_owner["agents"] if a["active_tasks"] == 1)
    not_owner = next(a for a in ("video-1", "video-2", "text-1") if a != owner)
    stolen = seeded.post(OUTCOME, json={"agent_id": not_owner, "task_id": "open-1", "task_duration": 1.0})
    assert stolen.status_code == 409 and stolen.json()["error"] == "conflicting_outcome"
    again = seeded.post(SELECT, json={"task_type": "video_task", "task_id": "open-1"})
    assert again.status_code == 409 and again.json()["error"] == "duplicate_task"
    reused = seeded.post(SELECT, json={"task_type": "video_task", "task_id": "done-1"})
    assert reused.status_code == 409 and reused.json()["error"] == "duplicate_task"

    assert row_counts(db) == before_rows
    assert _live_state(seeded) == before_live


def test_empty_capability_list_means_no_requirement(seeded: TestClient) -> None:
    """Documented behaviour, not an error: [] asks for no capability, so any agent may take it."""
    response = seeded.post(SELECT, json={"task_type": "t", "required_capabilities": []})
    assert response.status_code == 200
    assert response.json()["selected_agent_id"] in {"video-1", "video-2", "text-1"}


def test_max_length_ids_and_unicode_attributes_are_accepted_and_round_trip(seeded: TestClient) -> None:
    """The limits are limits, not a reason to refuse what is within them."""
    longest = "t" * 128
    chosen = seeded.post(
        SELECT,
        json={
            "task_type": "αβγ-задача-✓",
            "task_id": longest,
            "task_requirements": {"язык": "日本語", "n": 3},
        },
    )
    assert chosen.status_code == 200, chosen.text
    body = chosen.json()
    assert body["task_id"] == longest
    done = seeded.post(
        OUTCOME, json={"agent_id": body["selected_agent_id"], "task_id": longest, "task_duration": 1.5}
    )
    assert done.status_code == 200 and done.json()["closed_dispatch"] is True


def test_streamed_ten_megabytes_without_content_length_is_413(seeded: TestClient, tmp_path: Path) -> None:
    """A chunked body declares no size: the limit is enforced while it streams in."""
    db = sqlite_url(tmp_path)
    before = row_counts(db)

    def chunks() -> Any:
        yield b'{"task_type": "'
        for _ in range(160):
            yield b"z" * 65536
        yield b'"}'

    response = seeded.post(SELECT, content=chunks(), headers=JSON)
    assert response.status_code == 413, response.text[:300]
    assert row_counts(db) == before
