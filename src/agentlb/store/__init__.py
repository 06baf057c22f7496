"""Task history store and agent registry (SQLAlchemy 2.0; SQLite by default, PostgreSQL shared).

The only package with SQL. Callers use `Store` and the plain records below.
"""

from __future__ import annotations

from agentlb.history import RejectedRow
from agentlb.store.records import (
    AccuracyRow,
    AgentRow,
    ImportReport,
    OutcomeWrite,
    RestoreReport,
    StoredDispatch,
    StoredOutcome,
)
from agentlb.store.repository import Store, normalise_url, with_search_path
from agentlb.store.scratch import scratch_database

__all__ = [
    "AccuracyRow",
    "AgentRow",
    "ImportReport",
    "OutcomeWrite",
    "RejectedRow",
    "RestoreReport",
    "Store",
    "StoredDispatch",
    "StoredOutcome",
    "normalise_url",
    "scratch_database",
    "with_search_path",
]
