"""The CI PostgreSQL server of the tests: its URL, a psycopg DSN for it, and why a test skips."""

from __future__ import annotations

import os

POSTGRES_ENV = "AGENTLB_TEST_POSTGRES_URL"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def psycopg_dsn(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_skip_reason(needed_for: str = "") -> str | None:
    """None when the server answers, else why a test that needs it must skip."""
    url = postgres_url()
    if url is None:
        return f"{POSTGRES_ENV} is not set" + (f": {needed_for}" if needed_for else "")
    import psycopg

    try:
        with psycopg.connect(psycopg_dsn(url), connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {POSTGRES_ENV} does not answer: {exc}"
