"""The real server as a process: uvicorn end to end, crash durability (kill -9), the CLI."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agentlb.cli import app as cli_app
from agentlb.store import Store
from live_server import BIN, ServerProcess, server_env

REPO = Path(__file__).resolve().parents[2]
FLEET = [
    {"id": "video-1", "name": "Video One", "capabilities": ["video_analysis"], "max_concurrency": 64},
    {"id": "video-2", "name": "Video Two", "capabilities": ["video_analysis"], "max_concurrency": 64},
]


class Server(ServerProcess):
    def __init__(self, command: list[str], home: Path) -> None:
        super().__init__(command, home, server_env(home, AGENTLB_SEED="3"))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def serve_cmd() -> list[str]:
    return [str(BIN / "agentlb"), "serve"]


@pytest.mark.slow
def test_uvicorn_end_to_end_select_then_update(tmp_path: Path, servers: list[Server]) -> None:
    server = Server([str(BIN / "uvicorn"), "agentlb.api:create_app", "--factory"], tmp_path)
    servers.append(server)
    with httpx.Client(base_url=server.base, timeout=10) as http:
        for agent in FLEET:
            assert http.post("/load-balancing/agents", json=agent).status_code == 201
        for i in range(20):
            chosen = http.post(
                "/load-balancing/select-agent",
                json={
                    "task_type": "video_task",
                    "required_capabilities": ["video_analysis"],
                    "task_requirements": {"frames": 100 * (i + 1)},
                },
            )
            assert chosen.status_code == 200, chosen.text
            body = chosen.json()
            done = http.post(
                "/load-balancing/update-performance",
                json={
                    "agent_id": body["selected_agent_id"],
                    "task_id": body["task_id"],
                    "task_duration": 0.5 + i / 10,
                    "success": True,
                },
            )
            assert done.status_code == 200 and done.json()["closed_dispatch"] is True
        stats = http.get("/load-balancing/statistics").json()
        assert stats["total_selections"] == 20
        assert all(a["active_tasks"] == 0 for a in stats["agents"])
        assert sum(a["completed_tasks"] for a in stats["agents"]) == 20
        assert "load_balancer_agent_selections_total" in http.get("/metrics").text


@pytest.mark.slow
def test_acknowledged_outcomes_survive_kill_9(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(serve_cmd(), tmp_path)
    servers.append(server)
    acknowledged: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()
    with httpx.Client(base_url=server.base, timeout=10) as http:
        for agent in FLEET:
            assert http.post("/load-balancing/agents", json=agent).status_code == 201
        left_open = http.post(
            "/load-balancing/select-agent", json={"task_type": "video_task", "task_id": "still-running"}
        ).json()

    def writer(worker: int) -> None:
        with httpx.Client(base_url=server.base, timeout=10) as http:
            i = 0
            while not stop.is_set():
                task_id = f"w{worker}-{i}"
                i += 1
                try:
                    chosen = http.post(
                        "/load-balancing/select-agent", json={"task_type": "video_task", "task_id": task_id}
                    )
                    if chosen.status_code != 200:
                        continue
                    outcome = {
                        "agent_id": chosen.json()["selected_agent_id"],
                        "task_id": task_id,
                        "task_duration": 1.0 + (i % 7),
                        "success": i % 5 != 0,
                    }
                    response = http.post("/load-balancing/update-performance", json=outcome)
                except httpx.TransportError:
                    return  # the server died under us: nothing acknowledged for this one
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(outcome)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(acknowledged) >= 150:
                break
        time.sleep(0.02)
    server.kill()  # SIGKILL while the writers are mid-request
    stop.set()
    for t in threads:
        t.join(timeout=15)
    assert len(acknowledged) >= 150, server.output()[-4000:]

    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}")
    try:
        for outcome in acknowledged:
            stored = store.get_outcome(outcome["task_id"])
            assert stored is not None, outcome
            assert stored.agent_id == outcome["agent_id"]
            assert stored.duration_s == outcome["task_duration"]
            assert stored.success == outcome["success"]
    finally:
        store.close()

    restarted = Server(serve_cmd(), tmp_path)
    servers.append(restarted)
    with httpx.Client(base_url=restarted.base, timeout=10) as http:
        replay = http.post("/load-balancing/update-performance", json=acknowledged[0])
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        # the task dispatched before the crash and never reported still counts, and can finish
        agent = left_open["selected_agent_id"]
        assert http.get(f"/load-balancing/agent/{agent}/metrics").json()["metrics"]["active_tasks"] >= 1
        finish = http.post(
            "/load-balancing/update-performance",
            json={"agent_id": agent, "task_id": "still-running", "task_duration": 5.0},
        )
        assert finish.status_code == 200 and finish.json()["closed_dispatch"] is True


def test_serve_refuses_more_than_one_worker() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "one worker per process" in result.output


def test_bootstrap_registers_the_demo_fleet_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "fleet.yaml", tmp_path / "examples" / "fleet.yaml")
    for key in [k for k in os.environ if k.startswith("AGENTLB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AGENTLB_HOME", str(tmp_path))
    first = CliRunner().invoke(cli_app, ["bootstrap"])
    assert first.exit_code == 0, first.output
    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}")
    try:
        registered = len(store.list_agents())
    finally:
        store.close()
    assert registered >= 5
    assert f"{registered} agents registered" in first.output
    second = CliRunner().invoke(cli_app, ["bootstrap"])
    assert second.exit_code == 0
    assert "registry not empty" in second.output


def test_serving_process_freezes_its_start_up_heap_and_collects_less_often() -> None:
    """`agentlb serve` and the load test call tune_gc once the app is built (in a child
    process here: freezing the test process's heap would keep every later test's garbage)."""
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from agentlb.api import create_app, tune_gc\n"
        "from agentlb.api.app import GC_THRESHOLDS\n"
        "create_app()\n"
        "assert gc.get_freeze_count() == 0\n"
        "tune_gc()\n"
        "assert gc.get_threshold() == GC_THRESHOLDS, gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
