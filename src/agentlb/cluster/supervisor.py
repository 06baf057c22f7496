"""Start, watch and stop a local cluster's processes: N replicas, then HAProxy in front.

Every child runs in a session of its own, so a Ctrl-C in the terminal reaches only the
supervisor, which stops the front first (a soft stop: requests in progress finish) and then
the replicas (uvicorn's graceful shutdown), and kills what has not exited in time. Each child
also gets SIGTERM from the kernel if the supervisor itself dies (PR_SET_PDEATHSIG), so no
replica outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agentlb.cluster.haproxy import render_haproxy_config
from agentlb.errors import ClusterError

HEALTH_PATH = "/load-balancing/health"
READY_TIMEOUT_S = 90.0
FRONT_STOP_TIMEOUT_S = 12.0  # the template's hard-stop-after is 10 s
REPLICA_STOP_TIMEOUT_S = 20.0  # uvicorn's graceful shutdown is 10 s
REPLICA_HOST = "127.0.0.1"
MAX_RESTARTS = 3  # a replica exiting more often than this within the window stops the cluster
RESTART_WINDOW_S = 60.0
_PR_SET_PDEATHSIG = 1

Say = Callable[[str], None]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _prepare_child() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Every connection is a file descriptor: lift the soft limit to the hard one (HAProxy sizes
    its connection limit from it). And die with the supervisor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # not Linux: no prctl, and the supervisor's own shutdown still stops every child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_postgres_database(url: str, say: Say | None = None) -> None:
    """Connect to the cluster's PostgreSQL database, creating it when the server answers but
    the database does not exist yet; ClusterError when the server does not answer."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ClusterError(
            f"replicas share one PostgreSQL database; {parsed.render_as_string()} is "
            f"{parsed.get_backend_name()} (pass --database-url postgresql+psycopg://...)"
        )
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            return
    except psycopg.OperationalError as exc:
        refused = exc  # the server is down, or the database does not exist yet: ask the server
    name = parsed.database or ""
    maintenance = parsed.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(
            maintenance.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                raise ClusterError(f"PostgreSQL refuses {parsed.render_as_string()}: {refused}")
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise ClusterError(f"PostgreSQL at {parsed.render_as_string()} does not answer: {refused}") from exc
    if say is not None:
        say(f"database: created {name} on {maintenance.render_as_string()}")


def ping_redis(url: str) -> None:
    """ClusterError unless the Redis at `url` answers."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as exc:
        raise ClusterError(f"Redis at {url} does not answer: {exc}") from exc


@dataclass(frozen=True)
class ClusterSpec:
    """What to start: `replicas` replicas of `workers` worker processes each, on one database
    and one Redis prefix, behind a front on `host:port` (0: a free port)."""

    replicas: int
    database_url: str
    redis_url: str
    redis_prefix: str
    home: Path
    haproxy: str
    template: Path
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    replica_ports: tuple[int, ...] = ()  # empty: free ports
    env: Mapping[str, str] = field(default_factory=dict)  # more environment for the replicas

    @property
    def run_dir(self) -> Path:
        return self.home / "var" / "cluster"


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    command: list[str]
    env: Mapping[str, str]
    restarts: list[float] = field(default_factory=list)  # monotonic times of its restarts

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


class Cluster:
    """The running processes of one `ClusterSpec`: `start()`, then `watch()` (which starts a
    replica that exits again) until a signal or HAProxy's exit, then `stop()` (also safe after
    a failed start)."""

    def __init__(self, spec: ClusterSpec, say: Say | None = None) -> None:
        if spec.replicas < 1:
            raise ClusterError("a cluster needs at least one replica (--replicas)")
        if spec.replica_ports and len(spec.replica_ports) != spec.replicas:
            raise ClusterError(f"{len(spec.replica_ports)} replica ports for {spec.replicas} replicas")
        self.spec = spec
        self.say = say or (lambda _message: None)
        self.replicas: list[_Child] = []
        self.front: _Child | None = None
        self.front_port = spec.port
        self.replica_ports = list(spec.replica_ports)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.spec.host in ("0.0.0.0", "") else self.spec.host
        return f"http://{host}:{self.front_port}"

    # --- start ------------------------------------------------------------------------
    def replica_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AGENTLB_HOME": str(self.spec.home),
                "AGENTLB_DATABASE_URL": self.spec.database_url,
                "AGENTLB_REDIS_URL": self.spec.redis_url,
                "AGENTLB_REDIS_PREFIX": self.spec.redis_prefix,
            }
        )
        env.update(self.spec.env)
        return env

    def haproxy_config(self) -> str:
        return render_haproxy_config(
            self.spec.template,
            self.spec.host,
            self.front_port,
            [(REPLICA_HOST, port) for port in self.replica_ports],
            self.spec.run_dir / "haproxy.sock",
        )

    def start(self) -> str:
        """Start the replicas, wait until each answers its health endpoint, then the front;
        the front's URL once it forwards to them. ClusterError (with the failing process's last
        output) if any part does not come up; what was started keeps running until `stop()`."""
        run_dir = self.spec.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if not self.replica_ports:
            self.replica_ports = [free_port() for _ in range(self.spec.replicas)]
        if self.front_port == 0:
            self.front_port = free_port()
        env = self.replica_env()
        for index, port in enumerate(self.replica_ports):
            command = [sys.executable, "-m", "agentlb", "serve", "--host", REPLICA_HOST, "--port", str(port)]
            if self.spec.workers > 1:
                command += ["--workers", str(self.spec.workers)]
            self.replicas.append(self._spawn(f"replica-{index}", command, env))
        for child, port in zip(self.replicas, self.replica_ports, strict=True):
            self._wait_answering(child, f"http://{REPLICA_HOST}:{port}{HEALTH_PATH}")
            self.say(f"{child.name}: http://{REPLICA_HOST}:{port} (log {child.log_path})")
        config = run_dir / "haproxy.cfg"
        config.write_text(self.haproxy_config())
        checked = subprocess.run(
            [self.spec.haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise ClusterError(f"HAProxy refuses {config}: {(checked.stderr or checked.stdout).strip()}")
        self.front = self._spawn("haproxy", [self.spec.haproxy, "-db", "-f", str(config)], dict(os.environ))
        self._wait_answering(self.front, f"{self.url}{HEALTH_PATH}", through_front=True)
        self.say(f"haproxy: {self.url} (config {config}, log {self.front.log_path})")
        return self.url

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> _Child:
        log_path = self.spec.run_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            command,
            env=dict(env),
            cwd=self.spec.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            preexec_fn=_prepare_child,
        )
        return _Child(name, process, log_path, log, command, env)

    def _wait_answering(self, child: _Child, url: str, through_front: bool = False) -> None:
        """Until `url` answers (200 or 503: the process is up; 503 is a verdict on the fleet)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise ClusterError(
                    f"{child.name} exited with {child.process.returncode} while starting:\n{child.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if not through_front or answer.headers.get("X-Agentlb-Replica"):
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 503 and (not through_front or exc.headers.get("X-Agentlb-Replica")):
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ClusterError(
            f"{child.name} did not answer {url} within {READY_TIMEOUT_S:.0f} s:\n{child.tail()}"
        )

    # --- run and stop -------------------------------------------------------------------
    def children(self) -> list[_Child]:
        return [*self.replicas, *([self.front] if self.front else [])]

    def watch(self, stop: threading.Event, interval_s: float = 0.5) -> _Child | None:
        """Block until `stop` is set (None) or a process the cluster cannot do without exits:
        HAProxy, or a replica that exited more than MAX_RESTARTS times in RESTART_WINDOW_S
        (that process). A replica that exits is started again on its port (as systemd's
        Restart=on-failure would): it rebuilds the shared state and HAProxy puts it back in
        rotation after one good health check."""
        while not stop.wait(interval_s):
            if self.front is not None and self.front.process.poll() is not None:
                return self.front
            for index, child in enumerate(self.replicas):
                code = child.process.poll()
                if code is None:
                    continue
                now = time.monotonic()
                recent = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    return child
                self.say(f"{child.name} exited with {code}; starting it again (log {child.log_path})")
                child.log.close()
                again = self._spawn(child.name, child.command, child.env)
                again.restarts = [*recent, now]
                self.replicas[index] = again
        return None

    def stop(self) -> None:
        """Front first (soft stop, SIGUSR1: in-progress requests finish), then every replica
        (SIGTERM: graceful shutdown); SIGKILL whatever is still running after its timeout."""
        if self.front is not None:
            self._stop([self.front], signal.SIGUSR1, FRONT_STOP_TIMEOUT_S)
        self._stop(self.replicas, signal.SIGTERM, REPLICA_STOP_TIMEOUT_S)

    def _stop(self, children: list[_Child], sig: signal.Signals, timeout_s: float) -> None:
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name}: still running after {timeout_s:.0f} s, killed")
                child.process.kill()
                child.process.wait(timeout=10)
            child.log.close()
