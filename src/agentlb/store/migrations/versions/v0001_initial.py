"""Initial schema: agents, task dispatches, task outcomes, hybrid weight changes, model deployments.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("history_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "task_dispatches",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("task_type", sa.String(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("predicted_p50_s", sa.Float(), nullable=True),
        sa.Column("predicted_p90_s", sa.Float(), nullable=True),
        sa.Column("service_p50_s", sa.Float(), nullable=True),
        sa.Column("service_p90_s", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("fallback_used", sa.Boolean(), nullable=True),
        sa.Column("dispatched_at", sa.Float(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_index("ix_task_dispatches_dispatched_at", "task_dispatches", ["dispatched_at"])
    op.create_index("ix_task_dispatches_agent_id", "task_dispatches", ["agent_id"])
    op.create_table(
        "task_outcomes",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(), nullable=False),
        sa.Column("task_type", sa.String(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cpu_usage", sa.Float(), nullable=True),
        sa.Column("memory_usage", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    )
    op.create_index("ix_task_outcomes_finished_at", "task_outcomes", ["finished_at"])
    op.create_index("ix_task_outcomes_agent_finished", "task_outcomes", ["agent_id", "finished_at"])
    op.create_table(
        "hybrid_weight_changes",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "model_deployments",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("alias", sa.String(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("loaded_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_deployments")
    op.drop_table("hybrid_weight_changes")
    op.drop_index("ix_task_outcomes_agent_finished", "task_outcomes")
    op.drop_index("ix_task_outcomes_finished_at", "task_outcomes")
    op.drop_table("task_outcomes")
    op.drop_index("ix_task_dispatches_agent_id", "task_dispatches")
    op.drop_index("ix_task_dispatches_dispatched_at", "task_dispatches")
    op.drop_table("task_dispatches")
    op.drop_table("agents")
