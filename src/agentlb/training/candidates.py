"""The candidate models and their holdout metrics.

Every candidate is scored on the same time-ordered holdout in seconds of service time:
the product spec's heuristic (no fit), the per-(agent, task type) mean, a scikit-learn
HistGradientBoostingRegressor and the LightGBM p50/p90 pair (the one that is served).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from agentlb.features import FeatureSpec
from agentlb.predictor.base import DEFAULT_SERVICE_S
from agentlb.predictor.heuristic import LOAD_SENSITIVITY, UNKNOWN_SPREAD, Z90
from agentlb.tracker import TrackerConfig
from agentlb.training.config import GroupMeanConfig, HGBConfig, LightGBMConfig

if TYPE_CHECKING:
    import pandas as pd

EWMA_ALPHA = TrackerConfig().ewma_alpha  # the live tracker's smoothing
SERVABLE = ("lightgbm",)  # candidates that export a bundle ModelPredictor can serve


@dataclass
class CandidateResult:
    """One candidate's holdout predictions (seconds) and what it cost."""

    name: str
    p50_s: np.ndarray
    p90_s: np.ndarray
    train_s: float
    predict_us_per_row: float
    params: dict[str, Any] = field(default_factory=dict)
    p50_booster: lgb.Booster | None = None
    p90_booster: lgb.Booster | None = None
    sklearn_model: Any = None
    p90_log_offset: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def holdout_metrics(
    actual_s: np.ndarray, p50_s: np.ndarray, p90_s: np.ndarray, alpha: float = 0.9
) -> dict[str, float]:
    """MAE, RMSE, MAPE, median APE of p50; pinball loss and coverage of p90 (seconds)."""
    from sklearn.metrics import mean_pinball_loss

    error = p50_s - actual_s
    ape = np.abs(error) / actual_s
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(math.sqrt(np.mean(error**2))),
        "mape": float(np.mean(ape)),
        "median_ape": float(np.median(ape)),
        "p90_pinball": float(mean_pinball_loss(actual_s, p90_s, alpha=alpha)),
        "p90_coverage": float(np.mean(actual_s <= p90_s)),
    }


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    import pandas as pd

    return np.asarray(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64)


def heuristic_from_columns(
    frame: pd.DataFrame, fleet_ewma_s: np.ndarray | None = None, fleet_var_s2: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The product spec's formula applied to the logged `agent_*` columns of a history.

    predicted_time = base_time x load_factor x trend_factor / specialization_factor, where
    base_time / specialization_factor is the agent's own EWMA for the type (agent_ewma_type_s)
    when it has one, else the fleet's EWMA for the type, else the agent's overall EWMA, else
    the fleet EWMA for the type that the tracker would have learnt from the history's earlier
    rows (`fleet_ewma_s`: a history without agent state), else DEFAULT_SERVICE_S;
    load_factor = 1 + 0.5 x agent_load_score. The trend class is not logged (only its slope,
    without the window it was measured over), so trend_factor = 1. The logged columns carry
    no EWMA variance, so their p90 = p50 x UNKNOWN_SPREAD; from the history's own EWMA the
    p90 is p50 + z90 x its EWMA standard deviation, as the heuristic predictor does.
    """
    base = _column(frame, "agent_ewma_type_s")
    for fallback in ("agent_fleet_ewma_type_s", "agent_ewma_s"):
        values = _column(frame, fallback)
        base = np.where(np.isfinite(base) & (base > 0), base, values)
    logged = np.isfinite(base) & (base > 0)
    spread = np.full(len(frame), np.nan)
    if fleet_ewma_s is not None:
        base = np.where(logged, base, fleet_ewma_s)
        if fleet_var_s2 is not None:
            spread = np.where(logged, np.nan, Z90 * np.sqrt(np.maximum(fleet_var_s2, 0.0)))
    base = np.where(np.isfinite(base) & (base > 0), base, DEFAULT_SERVICE_S)
    load = np.nan_to_num(_column(frame, "agent_load_score"), nan=0.0)
    p50 = base * (1.0 + LOAD_SENSITIVITY * load)
    p90 = np.where(np.isfinite(spread) & (spread > 0), p50 + spread, p50 * UNKNOWN_SPREAD)
    return p50, p90


def history_type_ewma(
    train: pd.DataFrame, holdout: pd.DataFrame, alpha: float = EWMA_ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """For each holdout row, the EWMA (and EWMA variance) of its task type's durations over
    every earlier row of train + holdout: what the live tracker's fleet EWMA for the type would
    hold when the task arrived (rows in time order; NaN before the type's first task)."""
    import pandas as pd

    both = pd.concat(
        [train[["task_type", "duration_s"]], holdout[["task_type", "duration_s"]]], ignore_index=True
    )
    durations = both["duration_s"].astype(float)
    groups = durations.groupby(both["task_type"].astype(str), sort=False)
    mean = groups.transform(lambda s: s.ewm(alpha=alpha, adjust=False).mean().shift())
    var = groups.transform(lambda s: s.ewm(alpha=alpha, adjust=False).var(bias=True).shift())
    n_train = len(train)
    return mean.to_numpy(dtype=np.float64)[n_train:], var.to_numpy(dtype=np.float64)[n_train:]


def fit_heuristic(holdout: pd.DataFrame, train: pd.DataFrame | None = None) -> CandidateResult:
    """The heuristic on the holdout; with `train`, rows without logged agent state fall back to
    the history's own EWMA per task type (see `heuristic_from_columns`)."""
    start = time.perf_counter()
    if train is not None:
        ewma, var = history_type_ewma(train, holdout)
        p50, p90 = heuristic_from_columns(holdout, ewma, var)
    else:
        p50, p90 = heuristic_from_columns(holdout)
    elapsed = time.perf_counter() - start
    return CandidateResult(
        "heuristic",
        p50,
        p90,
        0.0,
        1e6 * elapsed / max(len(holdout), 1),
        {"formula": "product spec: base x load x trend / specialization"},
    )


@dataclass
class GroupMeanTables:
    """What the group-mean candidate learns: mean and `alpha` quantile per (agent, task type)
    with at least `min_samples` rows (`pair`, columns mean/q), per task type (`by_type`) and
    overall."""

    keys: list[str]
    pair: pd.DataFrame
    by_type: pd.DataFrame
    overall_mean: float
    overall_q: float


def group_mean_keys(columns: Any) -> list[str]:
    return ["agent_id", "task_type"] if "agent_id" in columns else ["task_type"]


def group_mean_tables(train: pd.DataFrame, config: GroupMeanConfig, alpha: float) -> GroupMeanTables:
    import pandas as pd

    y = train["duration_s"].astype(float)
    keys = group_mean_keys(train.columns)
    grouped = y.groupby([train[k].astype(str) for k in keys])
    pair = pd.DataFrame({"mean": grouped.mean(), "q": grouped.quantile(alpha), "n": grouped.size()})
    by_type = y.groupby(train["task_type"].astype(str))
    type_table = pd.DataFrame({"mean": by_type.mean(), "q": by_type.quantile(alpha)})
    return GroupMeanTables(
        keys, pair[pair["n"] >= config.min_samples], type_table, float(y.mean()), float(y.quantile(alpha))
    )


def apply_group_mean(
    tables: GroupMeanTables, holdout: pd.DataFrame, train_s: float, config: GroupMeanConfig
) -> CandidateResult:
    """The group-mean candidate's holdout predictions from its tables: the pair's, else the task
    type's, else the overall mean and quantile."""
    import pandas as pd

    start = time.perf_counter()
    keys, pair, type_table = tables.keys, tables.pair, tables.by_type
    index = (
        pd.MultiIndex.from_arrays([holdout[k].astype(str) for k in keys])
        if len(keys) > 1
        else pd.Index(holdout["task_type"].astype(str))
    )
    types = pd.Index(holdout["task_type"].astype(str))
    p50 = pair["mean"].reindex(index).to_numpy(dtype=np.float64)
    p90 = pair["q"].reindex(index).to_numpy(dtype=np.float64)
    type_mean = type_table["mean"].reindex(types).to_numpy(dtype=np.float64)
    type_q = type_table["q"].reindex(types).to_numpy(dtype=np.float64)
    p50 = np.where(np.isnan(p50), type_mean, p50)
    p90 = np.where(np.isnan(p90), type_q, p90)
    p50 = np.where(np.isnan(p50), tables.overall_mean, p50)
    p90 = np.where(np.isnan(p90), tables.overall_q, p90)
    elapsed = time.perf_counter() - start
    return CandidateResult(
        "group_mean",
        p50,
        p90,
        train_s,
        1e6 * elapsed / max(len(holdout), 1),
        {"keys": ",".join(keys), "min_samples": config.min_samples},
    )


def fit_group_mean(
    train: pd.DataFrame, holdout: pd.DataFrame, config: GroupMeanConfig, alpha: float
) -> CandidateResult:
    """Mean (p50) and `alpha` quantile (p90) per (agent, task type) with at least `min_samples`
    rows, else per task type, else overall."""
    start = time.perf_counter()
    tables = group_mean_tables(train, config, alpha)
    return apply_group_mean(tables, holdout, time.perf_counter() - start, config)


def fit_sklearn_hgb(
    spec: FeatureSpec,
    x_train: np.ndarray,
    log_y: np.ndarray,
    x_holdout: np.ndarray,
    config: HGBConfig,
    alpha: float,
    seed: int,
    usable: np.ndarray | None = None,
) -> CandidateResult:
    """HistGradientBoostingRegressor on log duration (p50) and with the quantile loss (p90),
    on the `usable` feature columns only (it cannot bin a column without values)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    keep = np.ones(len(spec.feature_names), dtype=bool) if usable is None else usable
    categorical = np.zeros(len(spec.feature_names), dtype=bool)
    categorical[spec.categorical_indices] = True
    if keep.any():
        x_train, x_holdout = x_train[:, keep], x_holdout[:, keep]
        mask = categorical[keep]
    else:  # nothing informative: one constant column, so the model predicts the training distribution
        x_train, x_holdout = np.zeros((len(x_train), 1)), np.zeros((len(x_holdout), 1))
        mask = np.zeros(1, dtype=bool)
    common: dict[str, Any] = {
        "max_iter": config.max_iter,
        "learning_rate": config.learning_rate,
        "max_leaf_nodes": config.max_leaf_nodes,
        "min_samples_leaf": config.min_samples_leaf,
        "categorical_features": mask,
        "early_stopping": False,
        "random_state": seed,
    }
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=config.num_threads, user_api="openmp"):
        start = time.perf_counter()
        median_model = HistGradientBoostingRegressor(loss="squared_error", **common).fit(x_train, log_y)
        upper_model = HistGradientBoostingRegressor(loss="quantile", quantile=alpha, **common).fit(
            x_train, log_y
        )
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        p50 = np.exp(median_model.predict(x_holdout))
        p90 = np.maximum(np.exp(upper_model.predict(x_holdout)), p50)
        elapsed = time.perf_counter() - start
    params = {k: v for k, v in common.items() if k != "categorical_features"}
    return CandidateResult(
        "sklearn_hgb",
        p50,
        p90,
        train_s,
        1e6 * elapsed / max(len(x_holdout), 1),
        params,
        sklearn_model=median_model,
    )


@dataclass
class BoosterPair:
    """The served models: p50 and p90 boosters on log duration, and the p90's conformal shift."""

    p50: lgb.Booster
    p90: lgb.Booster
    p90_log_offset: float


def _fit_booster(
    spec: FeatureSpec, params: dict[str, Any], x: np.ndarray, y: np.ndarray, config: LightGBMConfig
) -> lgb.Booster:
    dataset = lgb.Dataset(
        x,
        label=y,
        feature_name=spec.feature_names,
        categorical_feature=spec.categorical_indices,
        free_raw_data=False,
        params={"verbosity": -1, "max_cat_to_onehot": 4, "max_bin": config.max_bin},
    )
    return lgb.train(params, dataset, num_boost_round=config.num_boost_round)


def train_p50(
    spec: FeatureSpec, x_train: np.ndarray, log_y: np.ndarray, config: LightGBMConfig, seed: int
) -> lgb.Booster:
    """The p50 booster: `config.objective` on log duration."""
    return _fit_booster(spec, config.params(seed), x_train, log_y, config)


MIN_CALIBRATION_ROWS = 20  # fewer: the p90 is fitted on every training row, without a shift


def calibration_rows(rows: int, config: LightGBMConfig) -> int:
    """How many of the most recent training rows calibrate the p90 (0: none)."""
    n_calibration = int(rows * config.p90_calibration_frac)
    return n_calibration if n_calibration >= MIN_CALIBRATION_ROWS else 0


def train_boosters(
    spec: FeatureSpec, x_train: np.ndarray, log_y: np.ndarray, config: LightGBMConfig, alpha: float, seed: int
) -> BoosterPair:
    """p50: `config.objective` on log duration, on every training row. p90: the quantile
    objective on log duration (a quantile of log(duration) is the log of the quantile), fitted
    on the older rows and shifted by split-conformal calibration on the most recent
    `p90_calibration_frac` of them (rows must be in time order), because a quantile model
    alone under-covers on later data (0.85-0.88 instead of 0.90 on the simulated histories)."""
    p50 = train_p50(spec, x_train, log_y, config, seed)
    quantile = config.params(seed, objective="quantile", alpha=alpha)
    n_calibration = calibration_rows(len(log_y), config)
    if not n_calibration:
        return BoosterPair(p50, _fit_booster(spec, quantile, x_train, log_y, config), 0.0)
    cut = len(log_y) - n_calibration
    p90 = _fit_booster(spec, quantile, x_train[:cut], log_y[:cut], config)
    residuals = log_y[cut:] - p90.predict(x_train[cut:])
    offset = float(np.quantile(residuals, alpha, method="higher"))
    return BoosterPair(p50, p90, offset)


def lightgbm_result(
    pair: BoosterPair,
    x_holdout: np.ndarray,
    train_s: float,
    config: LightGBMConfig,
    alpha: float,
    seed: int,
    **extra_params: Any,
) -> CandidateResult:
    """The served candidate's holdout predictions (seconds) from its boosters."""
    start = time.perf_counter()
    p50 = np.exp(pair.p50.predict(x_holdout))
    p90 = np.maximum(np.exp(np.asarray(pair.p90.predict(x_holdout)) + pair.p90_log_offset), p50)
    elapsed = time.perf_counter() - start
    params = config.params(
        seed,
        num_boost_round=config.num_boost_round,
        p90_alpha=alpha,
        p90_calibration_frac=config.p90_calibration_frac,
        p90_log_offset=pair.p90_log_offset,
        **extra_params,
    )
    return CandidateResult(
        "lightgbm",
        np.asarray(p50),
        np.asarray(p90),
        train_s,
        1e6 * elapsed / max(len(x_holdout), 1),
        params,
        p50_booster=pair.p50,
        p90_booster=pair.p90,
        p90_log_offset=pair.p90_log_offset,
    )


def fit_lightgbm(
    spec: FeatureSpec,
    x_train: np.ndarray,
    log_y: np.ndarray,
    x_holdout: np.ndarray,
    config: LightGBMConfig,
    alpha: float,
    seed: int,
) -> CandidateResult:
    start = time.perf_counter()
    pair = train_boosters(spec, x_train, log_y, config, alpha, seed)
    return lightgbm_result(pair, x_holdout, time.perf_counter() - start, config, alpha, seed)
