"""The experiments aggregate of the store: experiments, their lifecycle, and the dispatches and
outcomes of their arms (dispatches carry `experiment_id`/`experiment_arm`; outcomes join them
by task id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update

from agentlb.experiments.design import RUNNING, Experiment, ExperimentDesign
from agentlb.store.models import DispatchModel, ExperimentModel, OutcomeModel
from agentlb.store.repository import Store

ArmRow = tuple[str, float | None, float | None, bool | None, float | None]


class ExperimentRecords:
    """Reads and writes of experiments through a `Store` (its connections and error mapping)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, experiment: Experiment) -> None:
        with self.store._guard("create_experiment"), self.store._write() as conn:
            conn.execute(
                insert(ExperimentModel),
                {
                    "id": experiment.id,
                    "name": experiment.design.name,
                    "design": experiment.design.as_dict(),
                    "status": experiment.status,
                    "created_at": experiment.created_at,
                    "created_by": experiment.created_by,
                    "stopped_at": None,
                    "stop_reason": None,
                },
            )

    def get(self, experiment_id: str) -> Experiment | None:
        with self.store._guard("get_experiment"), self.store._read() as conn:
            row = conn.execute(select(ExperimentModel).where(ExperimentModel.id == experiment_id)).first()
        return None if row is None else _experiment_of(row)

    def find(self, status: str | None = None) -> list[Experiment]:
        query = select(ExperimentModel).order_by(ExperimentModel.created_at, ExperimentModel.id)
        if status is not None:
            query = query.where(ExperimentModel.status == status)
        with self.store._guard("list_experiments"), self.store._read() as conn:
            return [_experiment_of(row) for row in conn.execute(query)]

    def finish(self, experiment_id: str, status: str, reason: str, now: float) -> bool:
        """Move a running experiment to `status`; False when it was no longer running (another
        replica or request finished it first: the first reason stands)."""
        with self.store._guard("finish_experiment"), self.store._write() as conn:
            changed = conn.execute(
                update(ExperimentModel)
                .where(ExperimentModel.id == experiment_id, ExperimentModel.status == RUNNING)
                .values(status=status, stopped_at=now, stop_reason=reason)
            ).rowcount
        return bool(changed)

    def routed_counts(self) -> dict[str, int]:
        """Dispatches logged per running experiment."""
        query = (
            select(DispatchModel.experiment_id, func.count())
            .join(ExperimentModel, ExperimentModel.id == DispatchModel.experiment_id)
            .where(ExperimentModel.status == RUNNING)
            .group_by(DispatchModel.experiment_id)
        )
        with self.store._guard("experiment_counts"), self.store._read() as conn:
            return {str(eid): int(n) for eid, n in conn.execute(query)}

    def arm_rows(self, experiment_id: str) -> list[ArmRow]:
        """(arm, dispatched_at, finished_at, success, duration_s) of every dispatch of the
        experiment; the outcome columns are None while the task is in flight."""
        query = (
            select(
                DispatchModel.experiment_arm,
                DispatchModel.dispatched_at,
                OutcomeModel.finished_at,
                OutcomeModel.success,
                OutcomeModel.duration_s,
            )
            .outerjoin(OutcomeModel, OutcomeModel.task_id == DispatchModel.task_id)
            .where(DispatchModel.experiment_id == experiment_id)
            .order_by(DispatchModel.seq)
        )
        with self.store._guard("experiment_rows"), self.store._read() as conn:
            return [(str(r[0]), r[1], r[2], r[3], r[4]) for r in conn.execute(query)]


def _experiment_of(row: Any) -> Experiment:
    return Experiment(
        id=row.id,
        design=ExperimentDesign.from_dict(row.design),
        status=row.status,
        created_at=row.created_at,
        created_by=row.created_by,
        stopped_at=row.stopped_at,
        stop_reason=row.stop_reason,
    )
