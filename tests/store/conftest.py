"""Store fixtures: every repository test runs on SQLite and, when AGENTLB_TEST_POSTGRES_URL
(default: the local server) answers, on PostgreSQL in a database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import StoreClock

from agentlb.store import Store
from postgres_support import OwnDatabase, postgres_skip_reason


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own on the test PostgreSQL, dropped afterwards."""
    reason = postgres_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    database = OwnDatabase("agentlb_store")
    try:
        yield database.url
    finally:
        database.drop()


def _sqlite_url(tmp_path: Path, name: str = "store.db") -> str:
    return f"sqlite:///{tmp_path / name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return _sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> StoreClock:
    return StoreClock()


@pytest.fixture
def store(db_url: str, clock: StoreClock) -> Iterator[Store]:
    opened = Store.open(db_url, clock=clock)
    try:
        yield opened
    finally:
        opened.close()
