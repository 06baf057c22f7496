"""Helpers for the reliability tests: the real app in-process (TestClient) on a real SQLite
file, a real uvicorn subprocess on a free loopback port, and a PostgreSQL database that can be
taken offline (ALTER DATABASE ... ALLOW_CONNECTIONS false)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from agentlb.api import create_app
from agentlb.settings import load_settings
from live_server import BIN, ServerProcess, server_env

CLIENT_KEY = "client-secret-key-7f3a9b"
ADMIN_KEY = "admin-secret-key-c41d2e"
SELECT = "/load-balancing/select-agent"
OUTCOME = "/load-balancing/update-performance"
STATS = "/load-balancing/statistics"
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
class Server(ServerProcess):
    """`agentlb serve` as a subprocess on a free loopback port; output to a file."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        extra_args: list[str] | None = None,
    ) -> None:
        environment = server_env(home, AGENTLB_SEED="5", AGENTLB_LOG_LEVEL=log_level, **(env or {}))
        super().__init__([str(BIN / "agentlb"), "serve", *(extra_args or [])], home, environment)
