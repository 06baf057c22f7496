"""Fixtures of the replica tests: a PostgreSQL database and a Redis key prefix of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from replica_support import Database

from postgres_support import postgres_skip_reason
from redis_support import delete_prefix, redis_skip_reason, redis_url, unique_prefix


@pytest.fixture
def database() -> Iterator[Database]:
    reason = postgres_skip_reason("replicas share one PostgreSQL database")
    if reason is not None:
        pytest.skip(reason)
    db = Database()
    yield db
    db.drop()


@pytest.fixture
def shared_redis() -> Iterator[tuple[str, str]]:
    reason = redis_skip_reason("replicas share their live state through Redis")
    if reason is not None:
        pytest.skip(reason)
    prefix = unique_prefix("replicas")
    yield redis_url(), prefix
    delete_prefix(redis_url(), prefix)
