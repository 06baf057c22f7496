"""`agentlb cluster` for real: two replicas on PostgreSQL + Redis behind HAProxy, requests
through the one front URL, and a clean stop that leaves no process behind."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
from cluster_support import ClusterResources, RunningCluster, children_of

from live_server import BIN

FLEET = [
    {"id": f"agent-{i}", "name": f"Agent {i}", "capabilities": ["text"], "max_concurrency": 3}
    for i in range(4)
]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cluster_serves_through_one_front_and_stops_cleanly(
    tmp_path: Path, resources: ClusterResources, stop_signal: signal.Signals
) -> None:
    cluster = RunningCluster(tmp_path, resources.database.url, resources.prefix, replicas=2)
    try:
        processes = children_of(cluster.process.pid)
        assert len(processes) == 3, cluster.output()  # two replicas and HAProxy
        served_by: Counter[str] = Counter()
        with httpx.Client(base_url=cluster.url, timeout=10) as http:
            for agent in FLEET:  # the registry, through the front: every replica sees it
                response = http.post("/load-balancing/agents", json=agent)
                assert response.status_code == 201, response.text
            for i in range(60):
                chosen = http.post(
                    "/load-balancing/select-agent",
                    json={"task_type": "summarise", "required_capabilities": ["text"]},
                )
                assert chosen.status_code == 200, chosen.text
                served_by[chosen.headers["X-Agentlb-Replica"]] += 1
                body = chosen.json()
                outcome = http.post(
                    "/load-balancing/update-performance",
                    json={
                        "agent_id": body["selected_agent_id"],
                        "task_id": body["task_id"],
                        "task_duration": 0.5 + i % 5,
                        "success": True,
                    },
                )
                assert outcome.status_code == 200, outcome.text
                served_by[outcome.headers["X-Agentlb-Replica"]] += 1
            health = http.get("/load-balancing/health")
            assert health.status_code == 200 and health.json()["status"] in ("healthy", "degraded")
            stats = http.get("/load-balancing/statistics").json()
        # both replicas answered, each selection was counted once, and nothing is left in flight
        assert set(served_by) == {"replica-0", "replica-1"}, served_by
        assert stats["total_selections"] == 60
        assert sum(agent["active_tasks"] for agent in stats["agents"]) == 0

        cluster.signal(stop_signal)  # what Ctrl-C (SIGINT) or a service manager (SIGTERM) sends
        assert cluster.wait(timeout_s=60) == 0, cluster.output()
        output = cluster.output()
        assert f"stopping ({stop_signal.name})" in output and "stopped" in output, output
        left = [pid for pid in processes if Path(f"/proc/{pid}").exists()]
        assert not left, f"processes outlived the cluster: {left}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{cluster.url}/load-balancing/health", timeout=2)
    finally:
        if cluster.process.poll() is None:
            cluster.kill_all()


def test_haproxy_configuration_comes_from_the_template_and_is_valid(tmp_path: Path) -> None:
    printed = subprocess.run(
        [
            str(BIN / "agentlb"),
            "cluster",
            "--print-haproxy-config",
            "--replicas",
            "3",
            "--port",
            "9000",
            "--replica-port",
            "9101",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    config = printed.stdout
    assert "bind 127.0.0.1:9000" in config
    for i in range(3):
        assert f"server replica-{i} 127.0.0.1:{9101 + i}" in config
    assert "http-check send meth GET uri /load-balancing/health" in config
    assert "${" not in config
    haproxy = subprocess.run(["which", "haproxy"], capture_output=True, text=True, check=False).stdout.strip()
    if not haproxy:
        pytest.skip("haproxy is not installed: the rendered file cannot be checked by HAProxy itself")
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_cluster_refuses_a_sqlite_database(tmp_path: Path) -> None:
    refused = subprocess.run(
        [str(BIN / "agentlb"), "cluster", "--database-url", f"sqlite:///{tmp_path / 'x.db'}", "--no-model"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert refused.returncode == 1
    assert "share one PostgreSQL database" in refused.stderr, refused.stderr
