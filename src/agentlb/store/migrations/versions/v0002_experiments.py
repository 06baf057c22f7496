"""Online experiments: the experiments table, each dispatch's experiment and arm, and the
shadow predictions of a challenger model next to the champion's.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("design", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("stopped_at", sa.Float(), nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
    )
    op.add_column("task_dispatches", sa.Column("experiment_id", sa.String(32), nullable=True))
    op.add_column("task_dispatches", sa.Column("experiment_arm", sa.String(32), nullable=True))
    op.create_index("ix_task_dispatches_experiment", "task_dispatches", ["experiment_id", "experiment_arm"])
    op.create_table(
        "shadow_predictions",
        sa.Column("task_id", sa.String(), primary_key=True),
        sa.Column("model_version", sa.String(), primary_key=True),
        sa.Column("predicted_p50_s", sa.Float(), nullable=False),
        sa.Column("predicted_p90_s", sa.Float(), nullable=False),
        sa.Column("champion_version", sa.String(), nullable=True),
        sa.Column("champion_p50_s", sa.Float(), nullable=True),
        sa.Column("champion_p90_s", sa.Float(), nullable=True),
        sa.Column("predicted_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_shadow_predictions_version", "shadow_predictions", ["model_version", "predicted_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_predictions_version", table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
    op.drop_index("ix_task_dispatches_experiment", table_name="task_dispatches")
    with op.batch_alter_table("task_dispatches") as batch:
        batch.drop_column("experiment_arm")
        batch.drop_column("experiment_id")
    op.drop_table("experiments")
