"""Helpers for the reliability tests: the real app in-process (TestClient) on a real SQLite
file, a real uvicorn subprocess on a free loopback port, and a PostgreSQL database that can be
taken offline (ALTER DATABASE ... ALLOW_CONNECTIONS false)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from agentlb.api import create_app
from agentlb.settings import load_settings

BIN = Path(sys.executable).parent
POSTGRES_ENV = "AGENTLB_TEST_POSTGRES_URL"
CLIENT_KEY = "client-secret-key-7f3a9b"
ADMIN_KEY = "admin-secret-key-c41d2e"
SELECT = "/load-balancing/select-agent"
OUTCOME = "/load-balancing/update-performance"
STATS = "/load-balancing/statistics"
HEALTH = "/load-balancing/health"
AGENTS = "/load-balancing/agents"

FLEET: list[dict[str, Any]] = [
    {"id": "video-1", "name": "Video One", "capabilities": ["video_analysis"], "max_concurrency": 4},
    {"id": "video-2", "name": "Video Two", "capabilities": ["video_analysis"], "max_concurrency": 4},
    {"id": "text-1", "name": "Text One", "capabilities": ["text_analysis"], "max_concurrency": 8},
]
TABLES = ("agents", "task_dispatches", "task_outcomes", "hybrid_weight_changes", "model_deployments")


def make_settings(home: Path, db_url: str | None = None, **overrides: Any) -> Any:
    (home / "var").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "home": home,
        "database_url": db_url or f"sqlite:///{home / 'var' / 'agentlb.db'}",
        "model_uri": str(home / "models" / "champion"),
        "api_key": None,
        "admin_key": None,
        "seed": 11,
        "model_poll_interval_s": 0,
    }
    values.update(overrides)
    return load_settings(**values)


class AppClients:
    """Starts the real app with its lifespan; every started client is closed at teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.running: list[TestClient] = []

    def start(self, db_url: str | None = None, **overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(self.home, db_url, **overrides)))
        client.__enter__()
        self.running.append(client)
        return client

    def stop(self, client: TestClient) -> None:
        self.running.remove(client)
        client.__exit__(None, None, None)

    def stop_all(self) -> None:
        for client in reversed(list(self.running)):
            self.stop(client)


def register_fleet(
    client: TestClient | httpx.Client, fleet: list[dict[str, Any]] | None = None, **kw: Any
) -> None:
    for agent in fleet or FLEET:
        response = client.post(AGENTS, json=agent, **kw)
        assert response.status_code == 201, response.text


def row_counts(db_url: str) -> dict[str, int]:
    """Rows per table, read with a separate engine (what is really on disk)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}
    finally:
        engine.dispose()


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'var' / 'agentlb.db'}"


# --- a real server process -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`agentlb serve` (uvicorn) as a subprocess on a free loopback port; output to a file."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        extra_args: list[str] | None = None,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"server-{self.port}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLB_")}
        clean.update(
            {
                "AGENTLB_HOME": str(home),
                "AGENTLB_MODEL_POLL_INTERVAL_S": "0",
                "AGENTLB_SEED": "5",
                "AGENTLB_LOG_LEVEL": log_level,
            }
        )
        clean.update(env or {})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "agentlb"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *(extra_args or []),
            ],
            env=clean,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}: {self.output()}")
            try:
                httpx.get(f"{self.base}{HEALTH}", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not answer within 60 s: {self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


# --- PostgreSQL that can be taken offline ----------------------------------------------------
def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_skip_reason() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return f"{POSTGRES_ENV} is not set: PostgreSQL outage test needs a server it may administer"
    import psycopg

    try:
        with psycopg.connect(_dsn(url), connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {POSTGRES_ENV} does not answer: {exc}"


class PostgresDatabase:
    """A dedicated database on the CI server; `offline()` makes it refuse every connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"agentlb_rel_{uuid.uuid4().hex[:12]}"
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(_dsn(self.admin_url), autocommit=True, connect_timeout=5)

    def set_online(self, online: bool) -> None:
        with self._admin() as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {"true" if online else "false"}')
            if not online:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,)
                )

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
