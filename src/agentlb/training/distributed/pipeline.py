"""The training run on a Dask cluster: the in-process pipeline's steps on partitions.

The same time split, feature spec and candidates that make sense at scale (the heuristic, the
group mean as Dask aggregations, LightGBM p50/p90 through `lightgbm.dask`), then the same
`publish` as in process: MLflow runs, registry, gate and bundle, so the bundle serves exactly
like one trained in process. scikit-learn's HistGradientBoosting and the `--tune` search run in
one process only and are skipped here, with the reason logged.

A worker that leaves the cluster during the run stops it: LightGBM's data-parallel training
is one network over the workers holding the data, so a lost worker aborts or stalls it, and
Dask would otherwise recompute the lost partitions and go on training on fewer machines than
were planned. The run fails with the worker named, its MLflow run FAILED, the champion kept.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from agentlb.errors import DaskClusterError
from agentlb.settings import Settings, load_settings
from agentlb.training import tracking
from agentlb.training.candidates import (
    BoosterPair,
    CandidateResult,
    apply_group_mean,
    calibration_rows,
    fit_heuristic,
    lightgbm_result,
)
from agentlb.training.config import TrainingConfig
from agentlb.training.distributed.aggregates import group_mean_tables_on, quantile_from_top, top_count
from agentlb.training.distributed.cluster import DaskTarget, dashboard_address, scheduler_address
from agentlb.training.distributed.partitions import (
    ClusterFeatures,
    SplitHistory,
    cluster_features,
    split_history,
)
from agentlb.training.fitting import Plan, fit_each
from agentlb.training.pipeline import ProgressCallback, training_lock
from agentlb.training.publish import Fitted, lineage_tags, publish

if TYPE_CHECKING:
    import dask.array as da
    import lightgbm as lgb

    from agentlb.features import FeatureSpec
    from distributed import Client

log = logging.getLogger("agentlb.training")

HEURISTIC_WARMUP_ROWS = 20_000  # EWMA (alpha 0.2) weight of older rows: 0.8^5000 per type, below 1e-300
SKIPPED_AT_SCALE = {
    "sklearn_hgb": "scikit-learn's HistGradientBoosting fits in one process only, not on a Dask cluster",
}
T = TypeVar("T")


class WorkerWatch:
    """The workers present when the run started; `check` raises once any of them has left."""

    def __init__(self, client: Client, target: DaskTarget) -> None:
        self.client = client
        self.target = target
        self.workers = set(client.nthreads())

    def lost(self) -> set[str]:
        try:
            present = set(self.client.nthreads())
        except (OSError, TimeoutError):  # the scheduler itself is gone
            return set(self.workers)
        return self.workers - present

    def check(self, during: str) -> None:
        lost = self.lost()
        if lost:
            raise self.target.error(
                f"worker {', '.join(sorted(lost))} left the cluster during {during}; the run is stopped "
                "rather than trained again on fewer workers"
            )

    def guard(self, during: str, step: Callable[[], T]) -> T:
        """Run `step`; a failure after a worker left is reported as the lost worker, any other
        failure (a bad history row, a LightGBM error) as itself."""
        try:
            result = step()
        except Exception:
            self.check(during)  # a worker gone: that is the cause to report
            raise
        self.check(during)
        return result


def run_dask_training(
    history: Any,
    client: Client,
    target: DaskTarget,
    *,
    settings: Settings | None = None,
    config: TrainingConfig | None = None,
    holdout_frac: float | None = None,
    seed: int | None = None,
    export: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """`run_training` on a Dask cluster. `history` is a Dask DataFrame in the history-file
    contract, validated per partition, partitions in arrival-time order
    (`agentlb.training.distributed.source.read_partitioned_history`). Returns the same summary
    as in process, plus `dask` (scheduler, workers, dashboard) and `skipped_candidates`."""
    from agentlb.training.pipeline import _noop

    settings = settings or load_settings()
    config = (config or TrainingConfig()).replace(holdout_frac=holdout_frac, seed=seed)
    report = progress or _noop
    with training_lock(settings.var_dir):
        watch = WorkerWatch(client, target)
        try:
            fitted, split, timings = _fit(history, client, watch, config, report)
        except DaskClusterError as exc:
            _record_failure(settings, config, exc)
            raise
        summary = publish(fitted, settings, config, export, report)
    report("done", 1.0)
    started = timings.pop("_started")
    return {
        **summary,
        "skipped_candidates": {k: v for k, v in SKIPPED_AT_SCALE.items() if _enabled(config, k)},
        "dask": {
            "scheduler": scheduler_address(client),
            "workers": len(watch.workers),
            "dashboard": dashboard_address(client),
        },
        "rows": {
            "train": split.train_rows,
            "holdout": len(split.holdout),
            "rejected": None,  # validation is per partition, in the reader (skip_bad_rows there)
            "dropped": split.dropped,
        },
        "rejected_rows": [],
        **timings,
        "total_s": time.perf_counter() - started,
    }


def _enabled(config: TrainingConfig, name: str) -> bool:
    return name != "sklearn_hgb" or config.sklearn_hgb.enabled


def _fit(
    history: Any, client: Client, watch: WorkerWatch, config: TrainingConfig, report: ProgressCallback
) -> tuple[Fitted, SplitHistory, dict[str, float]]:
    started = time.perf_counter()
    report("reading and splitting the history on the cluster", 0.0)
    split = watch.guard(
        "reading the history",
        lambda: split_history(
            client, history, config.holdout_frac, config.min_train_rows, config.min_holdout_rows
        ),
    )
    load_validate_s = time.perf_counter() - started
    report(f"{split.train_rows} training rows, {len(split.holdout)} holdout rows; building features", 0.1)
    encode_started = time.perf_counter()
    features = watch.guard("building features", lambda: cluster_features(client, split))
    spec = features.selection.spec
    x_holdout = watch.guard("encoding the holdout", lambda: _encode_holdout(client, split, spec))
    encode_s = time.perf_counter() - encode_started
    for name, why in features.selection.dropped.items():
        log.info("feature %s left out: %s", name, why)
    for name, why in SKIPPED_AT_SCALE.items():
        if _enabled(config, name):
            log.info("candidate %s skipped: %s", name, why)

    alpha, holdout = config.p90_alpha, split.holdout
    plan: Plan = [
        (
            "heuristic",
            0.2,
            lambda: watch.guard(
                "the heuristic",
                lambda: fit_heuristic(holdout, split.train_tail(client, HEURISTIC_WARMUP_ROWS)),
            ),
        ),
        (
            "group_mean",
            0.25,
            lambda: watch.guard("the group mean", lambda: _group_mean(client, split, config)),
        ),
        (
            "lightgbm",
            0.45,
            lambda: watch.guard(
                "LightGBM training",
                lambda: _lightgbm(client, features, x_holdout, config, len(watch.workers)),
            ),
        ),
    ]
    actual = holdout["duration_s"].to_numpy(dtype=np.float64)
    results, failures = fit_each(plan, actual, alpha, report)
    fit_s = time.perf_counter() - started
    datasets = tracking.summarised_inputs(split.datasets(client))
    lineage = lineage_tags(
        spec,
        data_hash=split.data_hash(),
        rows=split.rows,
        train_rows=split.train_rows,
        holdout_rows=len(holdout),
        time_range=split.time_range,
        holdout_start=float(holdout["arrival_time"].min()) if "arrival_time" in holdout.columns else None,
    )
    tags = {"trained_on": "dask", "dask_workers": str(len(watch.workers))}
    fitted = Fitted(
        results, failures, features.selection, holdout, x_holdout[:5], lineage, datasets, None, tags
    )
    timings = {"fit_s": fit_s, "load_validate_s": load_validate_s, "encode_s": encode_s, "_started": started}
    return fitted, split, timings


def _encode_holdout(client: Client, split: SplitHistory, spec: FeatureSpec) -> np.ndarray:
    from dask.delayed import delayed

    matrices = client.compute([delayed(spec.encode_frame)(part) for part in split.holdout_parts], sync=True)
    return np.vstack(matrices)


def _record_failure(settings: Settings, config: TrainingConfig, error: BaseException) -> None:
    """The served candidate's MLflow run, FAILED with the error, for a run stopped before its
    candidates were logged."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, config.experiment, settings.mlflow_artifacts_dir)
    run_id = tracking.start_run(client, experiment_id, "lightgbm", {}, config, [], {"trained_on": "dask"})
    tracking.log_failure(client, run_id, error)


# --- candidates on the cluster ---------------------------------------------------------------


def _group_mean(client: Client, split: SplitHistory, config: TrainingConfig) -> CandidateResult:
    """`fit_group_mean` with its tables aggregated on the cluster."""
    started = time.perf_counter()
    tables = group_mean_tables_on(client, split, config.group_mean, config.p90_alpha)
    return apply_group_mean(tables, split.holdout, time.perf_counter() - started, config.group_mean)


def _dask_booster(
    client: Client, spec: FeatureSpec, params: dict[str, Any], rounds: int, x: da.Array, y: da.Array
) -> lgb.Booster:
    from lightgbm.dask import DaskLGBMRegressor

    wanted = {k: v for k, v in params.items() if k != "num_threads"}  # set by lightgbm.dask
    model = DaskLGBMRegressor(client=client, n_estimators=rounds, **wanted)
    with warnings.catch_warnings():  # it says so of the threads it sets from each worker's own
        warnings.filterwarnings("ignore", "Parameter (n_jobs|num_threads) will be ignored", UserWarning)
        model.fit(x, y, feature_name=spec.feature_names, categorical_feature=spec.categorical_indices)
    booster: lgb.Booster = model.booster_
    return booster


def _lightgbm(
    client: Client, features: ClusterFeatures, x_holdout: np.ndarray, config: TrainingConfig, workers: int
) -> CandidateResult:
    """`fit_lightgbm` through `lightgbm.dask`: the p50 on every training row; the p90 on the
    older rows, shifted by the split-conformal offset of the most recent ones, computed from
    residuals predicted on the cluster."""

    import dask.array as da

    started = time.perf_counter()
    cfg, alpha, seed = config.lightgbm, config.p90_alpha, config.seed
    spec, x, y = features.selection.spec, features.x_train, features.log_y
    threads = min(client.nthreads().values())  # lightgbm.dask runs each worker's threads
    extra = {"max_cat_to_onehot": 4}
    rounds = cfg.num_boost_round
    p50 = _dask_booster(client, spec, cfg.params(seed, **extra), rounds, x, y)
    quantile = cfg.params(seed, objective="quantile", alpha=alpha, **extra)
    rows = int(y.shape[0])
    n_calibration = calibration_rows(rows, cfg)
    if not n_calibration:
        pair = BoosterPair(p50, _dask_booster(client, spec, quantile, rounds, x, y), 0.0)
    else:
        cut = rows - n_calibration
        p90 = _dask_booster(client, spec, quantile, rounds, x[:cut], y[:cut])
        predicted = x[cut:].map_blocks(
            lambda block: p90.predict(block), drop_axis=1, dtype=np.float64, meta=np.empty(0, np.float64)
        )
        residuals: da.Array = y[cut:] - predicted
        top = np.asarray(da.topk(residuals, top_count(n_calibration, alpha)).compute())
        pair = BoosterPair(p50, p90, quantile_from_top(top, n_calibration, alpha, "higher"))
    train_s = time.perf_counter() - started
    return lightgbm_result(
        pair,
        x_holdout,
        train_s,
        cfg,
        alpha,
        seed,
        dask_workers=workers,
        tree_learner="data",
        num_threads=threads,
    )
