"""`agentlb train --tune N`: an Optuna search of the LightGBM pair's hyper-parameters.

Scored by time-ordered cross-validation inside the training part only (expanding window:
each fold trains on the past and validates on the block that follows), so the holdout that
the gate and the summary report stays untouched by the search. The config's own parameters
are the first trial, so the best trial is never worse than the defaults on the inner folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agentlb.features import FeatureSpec
from agentlb.training.candidates import train_p50
from agentlb.training.config import LightGBMConfig

MIN_FOLD_ROWS = 20
TUNED_PARAMS = (
    "learning_rate",
    "num_leaves",
    "min_data_in_leaf",
    "feature_fraction",
    "lambda_l2",
    "num_boost_round",
)

TrialCallback = Callable[[int, dict[str, Any], float, float], None]  # number, params, cv MAE (s), seconds


@dataclass
class TuningResult:
    config: LightGBMConfig
    best_cv_mae: float
    default_cv_mae: float
    trials: int
    tune_s: float
    best_params: dict[str, Any] = field(default_factory=dict)


def time_folds(n_rows: int, n_folds: int = 3, first_train_frac: float = 0.5) -> list[tuple[int, int]]:
    """(train_end, valid_end) row indices of expanding-window folds over time-ordered rows:
    fold k trains on rows [0, train_end) and validates on [train_end, valid_end)."""
    start = int(n_rows * first_train_frac)
    block = (n_rows - start) // n_folds
    if start < MIN_FOLD_ROWS or block < MIN_FOLD_ROWS:
        raise ValueError(
            f"too few training rows ({n_rows}) for {n_folds} time-ordered folds of {MIN_FOLD_ROWS}+ rows"
        )
    return [(start + k * block, start + (k + 1) * block) for k in range(n_folds)]


def cv_mae(
    spec: FeatureSpec,
    x_train: np.ndarray,
    log_y: np.ndarray,
    config: LightGBMConfig,
    seed: int,
    folds: list[tuple[int, int]],
) -> float:
    """Mean over the folds of the p50's MAE in seconds on the validation block."""
    errors = []
    for train_end, valid_end in folds:
        booster = train_p50(spec, x_train[:train_end], log_y[:train_end], config, seed)
        predicted = np.exp(np.asarray(booster.predict(x_train[train_end:valid_end])))
        errors.append(float(np.mean(np.abs(predicted - np.exp(log_y[train_end:valid_end])))))
    return float(np.mean(errors))


def _suggest(trial: Any, base: LightGBMConfig) -> LightGBMConfig:
    return replace(
        base,
        learning_rate=trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        num_leaves=trial.suggest_int("num_leaves", 7, 127, log=True),
        min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
        feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
        lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        num_boost_round=trial.suggest_int("num_boost_round", 50, 400),
    )


def tune_lightgbm(
    spec: FeatureSpec,
    x_train: np.ndarray,
    log_y: np.ndarray,
    base: LightGBMConfig,
    n_trials: int,
    seed: int,
    on_trial: TrialCallback | None = None,
    n_folds: int = 3,
) -> TuningResult:
    """Search `n_trials` configurations (the first is `base`) with Optuna's seeded TPE sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = time_folds(len(log_y), n_folds)
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({name: getattr(base, name) for name in TUNED_PARAMS})

    def objective(trial: Any) -> float:
        trial_started = time.perf_counter()
        config = _suggest(trial, base)
        score = cv_mae(spec, x_train, log_y, config, seed, folds)
        if on_trial is not None:
            on_trial(trial.number, dict(trial.params), score, time.perf_counter() - trial_started)
        return score

    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    best_value, default_value = best.value, study.trials[0].value
    if best_value is None or default_value is None:
        raise RuntimeError("the Optuna study finished without a scored trial")
    return TuningResult(
        config=replace(base, **best.params),
        best_cv_mae=float(best_value),
        default_cv_mae=float(default_value),
        trials=len(study.trials),
        tune_s=time.perf_counter() - started,
        best_params=dict(best.params),
    )
