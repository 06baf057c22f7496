"""SQLAlchemy 2.0 table definitions: the only schema in the project (migrations mirror it).

Times are float epoch seconds (the tracker's clock), so SQLite and PostgreSQL store the same
values and restart recovery replays them without time-zone conversions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Sequential = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class AgentModel(Base):
    """Registered agents, and history-only agents known from imported history."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(), primary_key=True)
    name: Mapped[str] = mapped_column(String())
    capabilities: Mapped[list[str]] = mapped_column(JSON)
    max_concurrency: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    history_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class DispatchModel(Base):
    """One selection: what the predictor saw for the chosen agent and what it predicted."""

    __tablename__ = "task_dispatches"
    __table_args__ = (
        Index("ix_task_dispatches_dispatched_at", "dispatched_at"),
        Index("ix_task_dispatches_agent_id", "agent_id"),
        Index("ix_task_dispatches_experiment", "experiment_id", "experiment_arm"),
    )

    seq: Mapped[int] = mapped_column(Sequential, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(), unique=True)
    agent_id: Mapped[str] = mapped_column(String())
    strategy: Mapped[str | None] = mapped_column(String(64))
    task_type: Mapped[str] = mapped_column(String())
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    predicted_p50_s: Mapped[float | None] = mapped_column(Float)
    predicted_p90_s: Mapped[float | None] = mapped_column(Float)
    service_p50_s: Mapped[float | None] = mapped_column(Float)
    service_p90_s: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String())
    confidence: Mapped[float | None] = mapped_column(Float)
    fallback_used: Mapped[bool | None] = mapped_column(Boolean)
    dispatched_at: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="live")
    experiment_id: Mapped[str | None] = mapped_column(String(32))
    experiment_arm: Mapped[str | None] = mapped_column(String(32))


class OutcomeModel(Base):
    """One finished task; `task_id` is unique, which is what makes outcomes idempotent."""

    __tablename__ = "task_outcomes"
    __table_args__ = (
        Index("ix_task_outcomes_finished_at", "finished_at"),
        Index("ix_task_outcomes_agent_finished", "agent_id", "finished_at"),
        # The arrival time of an outcome reported without a dispatch (history_reader.py).
        Index("ix_task_outcomes_estimated_arrival", text("(finished_at - duration_s)")),
    )

    seq: Mapped[int] = mapped_column(Sequential, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(), unique=True)
    agent_id: Mapped[str] = mapped_column(String())
    task_type: Mapped[str | None] = mapped_column(String())
    duration_s: Mapped[float] = mapped_column(Float)
    success: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    cpu_usage: Mapped[float | None] = mapped_column(Float)
    memory_usage: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="live")


class WeightChangeModel(Base):
    """Audit trail of hybrid weight changes; the latest row is restored at start."""

    __tablename__ = "hybrid_weight_changes"

    id: Mapped[int] = mapped_column(Sequential, primary_key=True, autoincrement=True)
    weights: Mapped[dict[str, float]] = mapped_column(JSON)
    changed_by: Mapped[str] = mapped_column(String())
    changed_at: Mapped[float] = mapped_column(Float)


class DeploymentModel(Base):
    """Which model version the service loaded, from where, and when."""

    __tablename__ = "model_deployments"

    id: Mapped[int] = mapped_column(Sequential, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String())
    alias: Mapped[str | None] = mapped_column(String())
    source: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[float] = mapped_column(Float)


class ExperimentModel(Base):
    """Online experiments (experiments/): the design as JSON and the lifecycle."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    design: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String())
    stopped_at: Mapped[float | None] = mapped_column(Float)
    stop_reason: Mapped[str | None] = mapped_column(Text)


class ShadowPredictionModel(Base):
    """A challenger model's prediction for a live dispatch it did not decide (shadow scoring),
    next to what the serving model predicted for the same task."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (Index("ix_shadow_predictions_version", "model_version", "predicted_at"),)

    task_id: Mapped[str] = mapped_column(String(), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(), primary_key=True)
    predicted_p50_s: Mapped[float] = mapped_column(Float)
    predicted_p90_s: Mapped[float] = mapped_column(Float)
    champion_version: Mapped[str | None] = mapped_column(String())
    champion_p50_s: Mapped[float | None] = mapped_column(Float)
    champion_p90_s: Mapped[float | None] = mapped_column(Float)
    predicted_at: Mapped[float] = mapped_column(Float)
