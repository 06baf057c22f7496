"""Drift of the serving model: its online accuracy against what it scored on its holdout.

Every completed dispatch stores the model's predicted service time next to the reported
duration (store.prediction_accuracy), so the error the champion makes in production can be
compared with the error it made on held-out history when it was trained. `assess_drift` turns
that into a decision a retraining job can act on (`agentlb drift`, `agentlb retrain
--if-drifted`, `GET /load-balancing/model`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from agentlb.settings import Settings
from agentlb.store import AccuracyRow, Store

# The p90 should cover about 90% of durations; the training gate accepts 0.85-0.95 on the
# holdout, production gets a little more room before it counts as drift.
COVERAGE_LOW = 0.80
COVERAGE_HIGH = 0.97


@dataclass(frozen=True)
class DriftPolicy:
    window_s: float = 86_400.0
    min_samples: int = 200
    mae_tolerance: float = 0.25  # online MAE above holdout MAE x (1 + tolerance) is drift

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftPolicy:
        return cls(settings.drift_window_s, settings.drift_min_samples, settings.drift_mae_tolerance)


@dataclass(frozen=True)
class DriftReport:
    model_version: str
    window_s: float
    samples: int
    online_mae_s: float | None
    holdout_mae_s: float | None
    mae_ratio: float | None
    p90_coverage: float | None
    correlation: float | None
    drifted: bool | None  # None: too few completed tasks in the window to tell
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_drift(
    store: Store,
    model_version: str,
    holdout_metrics: dict[str, float],
    policy: DriftPolicy | None = None,
    now: float | None = None,
) -> DriftReport:
    """Compare `model_version`'s accuracy over the last `policy.window_s` with its holdout."""
    policy = policy or DriftPolicy()
    since = (time.time() if now is None else now) - policy.window_s
    rows = store.prediction_accuracy(since=since, model_version=model_version)
    row = rows[0] if rows else AccuracyRow(model_version, 0, math.nan, None, None)
    holdout_mae = holdout_metrics.get("mae")
    ratio = row.mae_s / holdout_mae if holdout_mae and row.n else None
    drift: list[str] = []  # why the model counts as drifted
    notes: list[str] = []
    if row.n < policy.min_samples:
        notes.append(f"{row.n} completed tasks with a prediction in the window; {policy.min_samples} needed")
    else:
        if ratio is not None and ratio > 1.0 + policy.mae_tolerance:
            drift.append(
                f"online MAE {row.mae_s:.3f} s is {ratio:.2f}x the holdout's {holdout_mae:.3f} s "
                f"(limit {1.0 + policy.mae_tolerance:.2f}x)"
            )
        if row.p90_coverage is not None and not COVERAGE_LOW <= row.p90_coverage <= COVERAGE_HIGH:
            drift.append(
                f"p90 covers {row.p90_coverage:.1%} of durations "
                f"(expected {COVERAGE_LOW:.0%}-{COVERAGE_HIGH:.0%})"
            )
        if holdout_mae is None:
            notes.append("the model carries no holdout MAE; only the p90 coverage was checked")
    return DriftReport(
        model_version,
        policy.window_s,
        row.n,
        row.mae_s if row.n else None,
        holdout_mae,
        ratio if row.n >= policy.min_samples else None,
        row.p90_coverage,
        row.correlation,
        None if row.n < policy.min_samples else bool(drift),
        drift + notes,
    )


def assess_serving_model(
    store: Store, description: dict[str, Any], policy: DriftPolicy, now: float | None = None
) -> DriftReport | None:
    """`assess_drift` for a predictor's `describe()`; None for the heuristic (nothing to retrain)."""
    if description.get("source") == "heuristic":
        return None
    metrics = dict(description.get("metrics") or {})
    return assess_drift(store, str(description["version"]), metrics, policy, now)
