"""Fixtures for the API tests: the real app on a real SQLite file (and PostgreSQL when
AGENTLB_TEST_POSTGRES_URL answers), through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentlb.api import create_app
from agentlb.settings import load_settings
from postgres_support import OwnDatabase, postgres_skip_reason

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


@pytest.fixture
def postgres_database() -> Iterator[OwnDatabase]:
    """A PostgreSQL database of this test's own, dropped afterwards; skips when the server
    does not answer."""
    reason = postgres_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    database = OwnDatabase("agentlb_api")
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}"
    database: OwnDatabase = request.getfixturevalue("postgres_database")
    return database.url


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
