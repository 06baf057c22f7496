"""Alembic environment: runs on the connection `Store.upgrade` hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from agentlb.errors import StoreUnavailableError
from agentlb.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise StoreUnavailableError("migrations run through agentlb.store.Store.upgrade (agentlb db upgrade)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
