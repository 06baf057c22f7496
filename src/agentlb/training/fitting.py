"""Fitting the candidates, each on its own: one that fails is recorded with its error (and
becomes a FAILED MLflow run) while the others go on. And the optional hyper-parameter search."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.training.candidates import (
    CandidateResult,
    fit_group_mean,
    fit_heuristic,
    fit_lightgbm,
    fit_sklearn_hgb,
    holdout_metrics,
)
from agentlb.training.config import TrainingConfig
from agentlb.training.tune import TuningResult, tune_lightgbm

if TYPE_CHECKING:
    from agentlb.training.data import PreparedHistory
    from agentlb.training.feature_select import FeatureSelection

log = logging.getLogger("agentlb.training")

Report = Callable[[str, float], None]


@dataclass(frozen=True)
class CandidateFailure:
    """A candidate that raised: its name and the exception."""

    name: str
    error: BaseException

    @property
    def message(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    cv_mae: float
    seconds: float


@dataclass
class Tuning:
    """The search's outcome and every trial, for the nested MLflow runs."""

    result: TuningResult
    trials: list[TrialRecord] = field(default_factory=list)


def fit_candidates(
    prepared: PreparedHistory,
    selection: FeatureSelection,
    x_train: np.ndarray,
    log_y: np.ndarray,
    x_holdout: np.ndarray,
    config: TrainingConfig,
    report: Report,
) -> tuple[list[CandidateResult], list[CandidateFailure]]:
    """Every enabled candidate fitted and scored on the holdout, or recorded as failed."""
    alpha, seed, spec = config.p90_alpha, config.seed, selection.spec
    plan: Plan = [
        ("heuristic", 0.2, lambda: fit_heuristic(prepared.holdout, prepared.train)),
        (
            "group_mean",
            0.25,
            lambda: fit_group_mean(prepared.train, prepared.holdout, config.group_mean, alpha),
        ),
    ]
    if config.sklearn_hgb.enabled:
        plan.append(
            (
                "sklearn_hgb",
                0.3,
                lambda: fit_sklearn_hgb(
                    spec, x_train, log_y, x_holdout, config.sklearn_hgb, alpha, seed, selection.usable
                ),
            )
        )
    plan.append(
        (
            "lightgbm",
            0.45,
            lambda: fit_lightgbm(spec, x_train, log_y, x_holdout, config.lightgbm, alpha, seed),
        )
    )
    actual = prepared.holdout["duration_s"].to_numpy(dtype=np.float64)
    return fit_each(plan, actual, alpha, report)


Plan = list[tuple[str, float, Callable[[], CandidateResult]]]


def fit_each(
    plan: Plan, actual: np.ndarray, alpha: float, report: Report
) -> tuple[list[CandidateResult], list[CandidateFailure]]:
    """Run each (name, progress fraction, fit) of the plan and score it on the holdout's
    `actual` seconds; a fit that raises is recorded as a failure and the others go on."""
    results: list[CandidateResult] = []
    failures: list[CandidateFailure] = []
    for name, fraction, fit in plan:
        report(f"candidate {name}", fraction)
        try:
            result = fit()
            result.metrics = holdout_metrics(actual, result.p50_s, result.p90_s, alpha)
        except Exception as exc:  # recorded as the candidate's FAILED run and in the summary
            log.warning("candidate %s failed: %s: %s", name, type(exc).__name__, exc)
            failures.append(CandidateFailure(name, exc))
            continue
        results.append(result)
    return results, failures


def tune_if_asked(
    config: TrainingConfig,
    selection: FeatureSelection,
    x_train: np.ndarray,
    log_y: np.ndarray,
    n_trials: int,
    report: Report,
) -> tuple[TrainingConfig, Tuning | None]:
    """With `n_trials` > 0, the config with the LightGBM parameters of the best trial."""
    if n_trials <= 0:
        return config, None
    trials: list[TrialRecord] = []

    def on_trial(number: int, params: dict[str, Any], score: float, seconds: float) -> None:
        trials.append(TrialRecord(number, params, score, seconds))
        report(f"tuning: trial {number + 1}/{n_trials}, inner-CV MAE {score:.4f} s", 0.15)

    result = tune_lightgbm(selection.spec, x_train, log_y, config.lightgbm, n_trials, config.seed, on_trial)
    log.info(
        "tuning: best inner-CV MAE %.4f s (defaults %.4f s) after %d trials",
        result.best_cv_mae,
        result.default_cv_mae,
        result.trials,
    )
    return replace(config, lightgbm=result.config), Tuning(result, trials)
