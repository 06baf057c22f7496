"""Fixtures for the API tests: the real app on a real SQLite file (and PostgreSQL when
AGENTLB_TEST_POSTGRES_URL answers), through Starlette's TestClient."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentlb.api import create_app
from agentlb.settings import load_settings
from postgres_support import postgres_skip_reason, postgres_url, psycopg_dsn

FLEET = [
    {
        "id": "video-1",
        "name": "Video One",
        "capabilities": ["video_analysis", "object_detection"],
        "max_concurrency": 4,
    },
    {"id": "video-2", "name": "Video Two", "capabilities": ["video_analysis"], "max_concurrency": 2},
    {
        "id": "text-1",
        "name": "Text One",
        "capabilities": ["text_analysis", "prompt_generation"],
        "max_concurrency": 8,
    },
]


class PostgresDatabases:
    """A fresh schema per test in the CI database (cheap), or a whole database where a test
    needs to take it offline; everything is dropped at the end of the session."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.schemas: list[str] = []
        self.databases: list[str] = []

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(psycopg_dsn(self.admin_url), autocommit=True, connect_timeout=5)

    def create(self) -> str:
        from agentlb.store import with_search_path

        name = f"agentlb_api_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        return with_search_path(self.admin_url, name)

    def create_database(self) -> str:
        name = f"agentlb_api_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def set_allow_connections(self, url: str, allowed: bool) -> None:
        """Make a database refuse (or accept again) every connection: a real outage."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
            if not allowed:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )

    def drop_all(self) -> None:
        with self._admin() as conn:
            for name in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            for name in self.databases:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.schemas.clear()
        self.databases.clear()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    if postgres_skip_reason() is not None:
        yield None
        return
    url = postgres_url()
    assert url is not None
    databases = PostgresDatabases(url)
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}"
    if postgres_databases is None:
        pytest.skip(postgres_skip_reason() or "PostgreSQL unavailable")
    return postgres_databases.create()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}"


def make_settings(home: Path, db_url: str, **overrides: Any) -> Any:
    (home / "var").mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "home": home,
        "database_url": db_url,
        "model_uri": str(home / "models" / "champion"),
        "api_key": None,
        "admin_key": None,
        "seed": 7,
        "model_poll_interval_s": 0,
    }
    values.update(overrides)
    return load_settings(**values)


class ClientFactory:
    """Starts the real app (lifespan included) on the test database; `stop` then `start`
    again is a restart on the same database."""

    def __init__(self, home: Path, db_url: str) -> None:
        self.home = home
        self.db_url = db_url
        self.running: list[TestClient] = []

    def start(self, **overrides: Any) -> TestClient:
        settings = make_settings(self.home, self.db_url, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        self.running.append(client)
        return client

    def stop(self, client: TestClient) -> None:
        self.running.remove(client)
        client.__exit__(None, None, None)

    def stop_all(self) -> None:
        for client in reversed(list(self.running)):
            self.stop(client)


@pytest.fixture
def client_factory(tmp_path: Path, db_url: str) -> Iterator[ClientFactory]:
    factory = ClientFactory(tmp_path, db_url)
    yield factory
    factory.stop_all()


@pytest.fixture
def client(client_factory: ClientFactory) -> TestClient:
    return client_factory.start()


def register_fleet(client: TestClient, headers: dict[str, str] | None = None) -> None:
    for agent in FLEET:
        response = client.post("/load-balancing/agents", json=agent, headers=headers or {})
        assert response.status_code == 201, response.text


@pytest.fixture
def fleet_client(client: TestClient) -> TestClient:
    register_fleet(client)
    return client


@pytest.fixture
def sqlite_factory(tmp_path: Path, sqlite_url: str) -> Iterator[ClientFactory]:
    """For behaviour that does not depend on the database (access control, validation)."""
    factory = ClientFactory(tmp_path, sqlite_url)
    yield factory
    factory.stop_all()


@pytest.fixture
def sqlite_fleet_client(sqlite_factory: ClientFactory) -> TestClient:
    client = sqlite_factory.start()
    register_fleet(client)
    return client
