"""A real `agentlb cluster` for the tests: replicas on a PostgreSQL database and a Redis key
prefix of the test's own, HAProxy in front on free ports; the process tree it started, read
from /proc, so a test can check that stopping it leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import BIN, server_env
from postgres_support import OwnDatabase, postgres_skip_reason
from redis_support import delete_prefix, redis_skip_reason, redis_url, unique_prefix

READY_TIMEOUT_S = 120.0
URL_LINE = re.compile(r"replicas behind (http://\S+)")


def skip_reason() -> str | None:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        return "haproxy is not installed (make haproxy, or apt-get install haproxy)"
    return redis_skip_reason("a cluster shares its live state through Redis") or postgres_skip_reason(
        "a cluster's replicas share one PostgreSQL"
    )


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


class RunningCluster:
    """`agentlb cluster` as a subprocess; the constructor returns once it printed its URL."""

    def __init__(self, home: Path, database_url: str, prefix: str, replicas: int = 2, **env: str) -> None:
        self.home = home
        self.log_path = home / "cluster.log"
        self._log = self.log_path.open("wb")
        environment = server_env(home, **env)
        self.process = subprocess.Popen(
            [
                str(BIN / "agentlb"),
                "cluster",
                "--replicas",
                str(replicas),
                "--port",
                "0",
                "--database-url",
                database_url,
                "--redis-url",
                redis_url(),
                "--redis-prefix",
                prefix,
                "--no-model",
            ],
            env=environment,
            cwd=home,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            match = URL_LINE.search(self.output())
            if match:
                self.url = match.group(1)
                return
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"agentlb cluster exited with {code}:\n{self.output()}")
            time.sleep(0.2)
        self.signal(signal.SIGKILL)
        raise AssertionError(f"agentlb cluster printed no URL in {READY_TIMEOUT_S:.0f} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._log.close()
        return code

    def kill_all(self) -> None:
        """After a failed test: no process of this cluster may outlive it."""
        for pid in [*children_of(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


class ClusterResources:
    """The database and Redis prefix of one test's cluster (dropped and deleted afterwards)."""

    def __init__(self) -> None:
        self.database = OwnDatabase("agentlb_cluster")
        self.prefix = unique_prefix("cluster")

    def release(self) -> None:
        self.database.drop()
        delete_prefix(redis_url(), self.prefix)


def cluster_resources() -> Iterator[ClusterResources]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    resources = ClusterResources()
    try:
        yield resources
    finally:
        resources.release()


class Traffic:
    """Client threads selecting (and reporting each outcome) through the front without pause;
    they count every failed request (with when it failed), which replica answered, and the
    model version each selection was made with."""

    def __init__(self, url: str, body: dict[str, Any], clients: int = 4) -> None:
        self.url = url
        self.body = body
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[tuple[float, str]] = []  # (time.monotonic(), what)
        self.versions: Counter[str] = Counter()
        self.served_by: Counter[str] = Counter()
        self.last_version: dict[str, str] = {}  # per replica
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as http:
            while not self.stop.is_set():
                try:
                    chosen = http.post("/load-balancing/select-agent", json=self.body)
                    if chosen.status_code != 200:
                        raise AssertionError(f"select {chosen.status_code}: {chosen.text[:200]}")
                    answer = chosen.json()
                    done = http.post(
                        "/load-balancing/update-performance",
                        json={
                            "agent_id": answer["selected_agent_id"],
                            "task_id": answer["task_id"],
                            "task_duration": 1.5,
                            "success": True,
                        },
                    )
                    if done.status_code != 200:
                        raise AssertionError(f"outcome {done.status_code}: {done.text[:200]}")
                except (httpx.HTTPError, AssertionError) as exc:
                    with self.lock:
                        self.failures.append((time.monotonic(), repr(exc)))
                    continue
                replica = chosen.headers.get("X-Agentlb-Replica", "?")
                with self.lock:
                    self.versions[str(answer["model_version"])] += 1
                    self.last_version[replica] = str(answer["model_version"])
                    self.served_by[replica] += 1

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
