"""The PostgreSQL server of the tests: its URL (the standard local address unless
AGENTLB_TEST_POSTGRES_URL says otherwise), why a test skips when it does not answer, and a
database of each test's own on it.

The server is shared with other test runs at the same time, so a test never works in a
database it did not create: `OwnDatabase` creates a uniquely named one and drops only that.
"""

from __future__ import annotations

import functools
import os
import uuid
from typing import Any

POSTGRES_ENV = "AGENTLB_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 3


def postgres_url() -> str:
    """The admin URL: a database on the server the tests may connect to and create others from."""
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL


def psycopg_dsn(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@functools.cache
def _probe(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(psycopg_dsn(url), connect_timeout=CONNECT_TIMEOUT_S):
            return None
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {url} ({POSTGRES_ENV} overrides it) does not answer: {first_line}"


def postgres_skip_reason(needed_for: str = "") -> str | None:
    """None when the server answers, else why a test that needs it must skip (asked once per
    URL and session: a server that is absent is not probed again by every test)."""
    reason = _probe(postgres_url())
    if reason is None:
        return None
    return reason + (f" ({needed_for})" if needed_for else "")


def _admin(admin_url: str) -> Any:
    import psycopg

    return psycopg.connect(psycopg_dsn(admin_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


class OwnDatabase:
    """A database of this test's own on the test server, created empty (from template0, which
    nobody connects to, so concurrent creations never wait on each other); `offline()` makes
    it refuse every connection (a real outage), `drop()` removes it and nothing else."""

    def __init__(self, prefix: str = "agentlb_t", admin_url: str | None = None) -> None:
        self.admin_url = admin_url or postgres_url()
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.url = f"{self.admin_url.rsplit('/', 1)[0]}/{self.name}"
        with _admin(self.admin_url) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}" TEMPLATE template0')

    def set_online(self, online: bool) -> None:
        with _admin(self.admin_url) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {"true" if online else "false"}')
            if not online:
                self._terminate(conn)

    def _terminate(self, conn: Any) -> None:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,)
        )

    def drop(self) -> None:
        with _admin(self.admin_url) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
            self._terminate(conn)
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
