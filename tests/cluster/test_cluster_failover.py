"""A replica of `agentlb cluster` SIGKILLed while clients go through the front: the front takes
it out of rotation, the others keep serving, the cluster starts it again, HAProxy puts it back,
and it converges to the others' state."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from cluster_support import ClusterResources, RunningCluster, Traffic, children_of

CLIENTS = 4
REPLICA_LINE = re.compile(r"(replica-\d+): (http://\S+) ")
FLEET = [
    {"id": f"agent-{i}", "name": f"Agent {i}", "capabilities": ["text"], "max_concurrency": 3}
    for i in range(4)
]


def pid_listening_on(parent: int, port: int) -> int:
    for pid in children_of(parent):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in arguments and str(port).encode() in arguments:
            return pid
    raise AssertionError(f"no replica process serves port {port}")


def replication(url: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{url}/load-balancing/replication", timeout=10).json()
    return answer


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_replica_is_routed_around_restarted_and_converges(
    tmp_path: Path, resources: ClusterResources
) -> None:
    cluster = RunningCluster(tmp_path, resources.database.url, resources.prefix, replicas=2)
    traffic: Traffic | None = None
    try:
        replicas = dict(REPLICA_LINE.findall(cluster.output()))
        with httpx.Client(base_url=cluster.url, timeout=10) as http:
            for agent in FLEET:
                assert http.post("/load-balancing/agents", json=agent).status_code == 201
        traffic = Traffic(cluster.url, {"task_type": "t", "required_capabilities": ["text"]}, clients=CLIENTS)
        time.sleep(2.0)
        victim_port = int(replicas["replica-1"].rsplit(":", 1)[1])
        victim = pid_listening_on(cluster.process.pid, victim_port)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(4.0)  # HAProxy has taken it out (its first refused connection)
        served_while_down = sum(traffic.served_by.values())
        # started again on its port, back in rotation after one good check
        deadline = time.monotonic() + 90
        while "replica-1 exited with -9; starting it again" not in cluster.output():
            assert time.monotonic() < deadline, cluster.output()
            time.sleep(0.2)
        answered_before = traffic.served_by["replica-1"]
        while traffic.served_by["replica-1"] == answered_before:
            assert time.monotonic() < deadline, f"replica-1 never served again: {traffic.served_by}"
            time.sleep(0.2)
        time.sleep(1.0)
        traffic.finish()

        late = [(at - killed_at, what) for at, what in traffic.failures if at - killed_at > 3.0]
        print(f"failures {traffic.failures}, served {dict(traffic.served_by)}")
        # what may fail: requests the killed replica was answering at that instant (a client
        # retries them); none after HAProxy took it out, and none before the kill
        assert len(traffic.failures) <= CLIENTS, traffic.failures
        assert not late, late
        assert all(at >= killed_at for at, _ in traffic.failures), traffic.failures
        assert sum(traffic.served_by.values()) > served_while_down

        deadline = time.monotonic() + 30
        while True:
            states = [replication(url) for url in replicas.values()]
            keys = {(s["epoch"], s["seq"], s["state_digest"]) for s in states}
            if len(keys) == 1 and all(s["live"] for s in states):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
    finally:
        if traffic is not None:
            traffic.finish()
        cluster.signal(signal.SIGTERM)
        try:
            assert cluster.wait(timeout_s=60) == 0, cluster.output()
        finally:
            if cluster.process.poll() is None:
                cluster.kill_all()
