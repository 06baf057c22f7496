"""Store fixtures: every repository test runs on SQLite and, when AGENTLB_TEST_POSTGRES_URL
points at a server that answers, on PostgreSQL in a schema of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_helpers import StoreClock

from agentlb.errors import StoreUnavailableError
from agentlb.store import Store, scratch_database
from postgres_support import POSTGRES_ENV


def postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against")
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, dropped afterwards."""
    base = postgres_base_url()
    try:
        scratch = scratch_database(base, prefix="agentlb_test")
        url = scratch.__enter__()
    except StoreUnavailableError as exc:
        pytest.skip(f"PostgreSQL in {POSTGRES_ENV} does not answer: {exc}")
    try:
        yield url
    finally:
        scratch.__exit__(None, None, None)


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
