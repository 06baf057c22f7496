"""The shadow-scoring aggregate of the store: a challenger's predictions for live dispatches,
and its live evidence against the serving model on the same finished tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.exc import IntegrityError

from agentlb.store.models import OutcomeModel, ShadowPredictionModel
from agentlb.store.repository import Store


@dataclass(frozen=True)
class ShadowEvidence:
    """A challenger and the serving model on the same successful live tasks: p50 MAE and p90
    coverage of each."""

    model_version: str
    tasks: int
    challenger_mae_s: float | None
    champion_mae_s: float | None
    challenger_p90_coverage: float | None
    champion_p90_coverage: float | None
    champion_versions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "tasks": self.tasks,
            "challenger_mae_s": self.challenger_mae_s,
            "champion_mae_s": self.champion_mae_s,
            "challenger_p90_coverage": self.challenger_p90_coverage,
            "champion_p90_coverage": self.champion_p90_coverage,
            "champion_versions": list(self.champion_versions),
        }


class ShadowRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store shadow predictions (one per task and version; a repeat is ignored)."""
        if not rows:
            return 0
        try:
            with self.store._guard("record_shadow"), self.store._write() as conn:
                conn.execute(insert(ShadowPredictionModel), list(rows))
            return len(rows)
        except IntegrityError:
            written = 0
            for row in rows:  # a batch with a repeat: keep the others
                try:
                    with self.store._guard("record_shadow"), self.store._write() as conn:
                        conn.execute(insert(ShadowPredictionModel), row)
                    written += 1
                except IntegrityError:
                    continue
            return written

    def evidence(self, model_version: str, since: float | None = None) -> ShadowEvidence:
        """The challenger `model_version` against the serving model, over successful tasks that
        both predicted (the serving model's prediction was logged beside the shadow one)."""
        y = OutcomeModel.duration_s
        s = ShadowPredictionModel
        query = (
            select(
                func.count().label("n"),
                func.avg(func.abs(y - s.predicted_p50_s)).label("mae"),
                func.avg(func.abs(y - s.champion_p50_s)).label("champion_mae"),
                func.avg(case((y <= s.predicted_p90_s, 1.0), else_=0.0)).label("coverage"),
                func.avg(case((y <= s.champion_p90_s, 1.0), else_=0.0)).label("champion_coverage"),
            )
            .select_from(s)
            .join(OutcomeModel, OutcomeModel.task_id == s.task_id)
            .where(
                s.model_version == model_version,
                s.champion_p50_s.is_not(None),
                s.champion_p90_s.is_not(None),
                OutcomeModel.success.is_(True),
            )
        )
        versions = (
            select(s.champion_version)
            .where(s.model_version == model_version, s.champion_version.is_not(None))
            .distinct()
        )
        if since is not None:
            query = query.where(s.predicted_at >= since)
            versions = versions.where(s.predicted_at >= since)
        with self.store._guard("shadow_evidence"), self.store._read() as conn:
            row = conn.execute(query).one()
            champions = tuple(sorted(str(v) for (v,) in conn.execute(versions)))
        n = int(row.n or 0)
        return ShadowEvidence(
            model_version,
            n,
            None if not n else float(row.mae),
            None if not n else float(row.champion_mae),
            None if not n else float(row.coverage),
            None if not n else float(row.champion_coverage),
            champions,
        )
