"""Arrival-time index for outcomes reported without a dispatch time, so that the partitioned
history reader (`agentlb.store.history_reader`) reads an arrival-time range by index.

Tasks with a dispatch time already range over `ix_task_dispatches_dispatched_at`; the others'
arrival is estimated as finished_at - duration_s, indexed here as that expression (SQLite 3.9+
and PostgreSQL both index expressions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_task_outcomes_estimated_arrival", "task_outcomes", [sa.text("(finished_at - duration_s)")]
    )


def downgrade() -> None:
    op.drop_index("ix_task_outcomes_estimated_arrival", table_name="task_outcomes")
