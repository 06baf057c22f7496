"""Throw-away databases for tests and benchmarks: a temp SQLite file or a PostgreSQL schema.

A PostgreSQL scratch database is a fresh schema on the given server (every connection's
search_path points at it), so concurrent runs on one database never see each other's rows.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from agentlb.errors import StoreUnavailableError
from agentlb.store.repository import POSTGRES_CONNECT_TIMEOUT_S, normalise_url, with_search_path


def _schema_ddl(url: str, statement: str) -> None:
    engine = create_engine(normalise_url(url), connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    except DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        where = normalise_url(url).render_as_string()
        raise StoreUnavailableError(f"PostgreSQL at {where}: {reason}") from exc
    finally:
        engine.dispose()


@contextmanager
def scratch_database(url: str | None = None, prefix: str = "agentlb_scratch") -> Iterator[str]:
    """Yield the URL of an empty database, removed afterwards.

    `None` or any SQLite URL gives a new SQLite file in a temp directory; a PostgreSQL URL
    gives a new schema on that server.
    """
    if url is None or normalise_url(url).get_backend_name() == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix=prefix + "_"))
        try:
            yield f"sqlite:///{directory / 'agentlb.db'}"
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    if normalise_url(url).get_backend_name() != "postgresql":
        raise StoreUnavailableError(f"scratch databases are SQLite or PostgreSQL, not {url!r}")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _schema_ddl(url, f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        _schema_ddl(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
