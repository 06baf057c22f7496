"""Fixtures for the reliability tests (helpers live in reliability_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import AppClients, Server

from postgres_support import OwnDatabase, postgres_skip_reason


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[AppClients]:
    factory = AppClients(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def postgres_database() -> Iterator[OwnDatabase]:
    reason = postgres_skip_reason("PostgreSQL outage test needs a server it may administer")
    if reason is not None:
        pytest.skip(reason)
    database = OwnDatabase("agentlb_rel")
    try:
        yield database
    finally:
        database.drop()
