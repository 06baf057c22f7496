"""The training pipeline: history -> validated, time-split frame -> candidates as MLflow runs ->
registered challenger -> promotion gate -> champion bundle in `models/`.

MLflow is imported here, never on the request path. The tracking URI and the artifact root
come from settings (NOTES-ML: a sqlite tracking URI otherwise drops artifacts into ./mlruns).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import TrainingFailedError, TrainingInProgressError
from agentlb.features import FEATURE_VERSION, FeatureSpec, frame_hash
from agentlb.predictor.model import BUNDLE_ARTIFACT_PATH
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.training import tracking
from agentlb.training.bundle import export_bundle, write_bundle_files
from agentlb.training.candidates import SERVABLE, CandidateResult
from agentlb.training.config import TrainingConfig
from agentlb.training.data import PreparedHistory, describe_rejections, encode, prepare_history
from agentlb.training.feature_select import select_features
from agentlb.training.fitting import Tuning, fit_candidates, tune_if_asked
from agentlb.training.gate import CHALLENGER_ALIAS, CHAMPION_ALIAS, check_champion, gate_decision
from agentlb.training.live_gate import defer_for_live_evidence

__all__ = ["gate_decision", "run_training", "training_lock"]

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger("agentlb.training")

ProgressCallback = Callable[[str, float], None]
LOCK_FILE = "training.lock"
LOCAL_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def _noop(message: str, fraction: float) -> None:
    log.info("[%3.0f%%] %s", 100 * fraction, message)


@contextmanager
def training_lock(var_dir: Path) -> Iterator[None]:
    """One training at a time per home: a second concurrent run is refused, not interleaved."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TrainingInProgressError(
                f"a training run is already in progress ({holder}); refusing to start"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def code_version() -> str:
    """The git commit of the code that trained (data lineage); `unknown` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_training(
    history: pd.DataFrame | str | Path | None = None,
    *,
    settings: Settings | None = None,
    config: TrainingConfig | None = None,
    from_db: bool = False,
    since: float | None = None,
    holdout_frac: float | None = None,
    seed: int | None = None,
    skip_bad_rows: bool = False,
    export: bool = True,
    tune_trials: int = 0,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Train every candidate, register the best servable pair as challenger, gate it to
    champion and export the champion bundle. Returns the `agentlb train --json` summary.

    `history` is a frame or a CSV/Parquet path; `from_db` reads the store's history instead.
    `tune_trials` > 0 first searches the LightGBM parameters (`agentlb.training.tune`).
    `progress(message, fraction_done)` is called at each stage (the bootstrap's progress bar).
    Raises HistoryValidationError for a bad or too short history, TrainingInProgressError when
    another training holds the lock, TrainingFailedError when no servable candidate fits.
    """
    settings = settings or load_settings()
    config = (config or TrainingConfig()).replace(holdout_frac=holdout_frac, seed=seed)
    report = progress or _noop
    with training_lock(settings.var_dir):
        return _run(history, settings, config, from_db, since, skip_bad_rows, export, tune_trials, report)


def _load_source(
    history: pd.DataFrame | str | Path | None, settings: Settings, from_db: bool, since: float | None
) -> pd.DataFrame | str | Path:
    if from_db:
        from agentlb.training.store_history import load_store_history

        return load_store_history(settings, since)
    if history is None:
        raise ValueError("run_training needs a history frame or file, or from_db=True")
    return history


def _run(
    history: pd.DataFrame | str | Path | None,
    settings: Settings,
    config: TrainingConfig,
    from_db: bool,
    since: float | None,
    skip_bad_rows: bool,
    export: bool,
    tune_trials: int,
    report: ProgressCallback,
) -> dict[str, Any]:
    started = time.perf_counter()
    report("loading and validating history", 0.0)
    prepared = prepare_history(
        _load_source(history, settings, from_db, since),
        config.holdout_frac,
        skip_bad_rows=skip_bad_rows,
        min_train_rows=config.min_train_rows,
        min_holdout_rows=config.min_holdout_rows,
    )
    load_validate_s = time.perf_counter() - started
    report(
        f"{len(prepared.train)} training rows, {len(prepared.holdout)} holdout rows; building features", 0.1
    )
    encode_started = time.perf_counter()
    selection, x_train = select_features(prepared.train)
    spec = selection.spec
    log_y = np.log(prepared.train["duration_s"].to_numpy(dtype=np.float64))
    x_holdout, _ = encode(spec, prepared.holdout)
    encode_s = time.perf_counter() - encode_started
    for name, why in selection.dropped.items():
        log.info("feature %s left out: %s", name, why)
    actual = prepared.holdout["duration_s"].to_numpy(dtype=np.float64)

    config, tuning = tune_if_asked(config, selection, x_train, log_y, tune_trials, report)
    results, failures = fit_candidates(prepared, selection, x_train, log_y, x_holdout, config, report)
    fit_s = time.perf_counter() - started

    report("logging runs to MLflow", 0.6)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a training job
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, config.experiment, settings.mlflow_artifacts_dir)
    lineage = _lineage(prepared, spec)
    datasets = tracking.dataset_inputs(prepared.train, prepared.holdout)
    tuning_summary = _log_tuning(client, experiment_id, lineage, config, datasets, tuning)
    run_ids: dict[str, str] = {}
    for result in results:
        run_ids[result.name] = tracking.start_run(
            client, experiment_id, result.name, lineage, config, datasets
        )
        tracking.log_result(client, run_ids[result.name], result, config, spec, actual, selection.dropped)
    failed = []
    for failure in failures:
        run_id = tracking.start_run(client, experiment_id, failure.name, lineage, config, datasets)
        tracking.log_failure(client, run_id, failure.error)
        failed.append({"name": failure.name, "run_id": run_id, "error": failure.message})

    servable = [r for r in results if r.name in SERVABLE]
    if not servable:
        errors = "; ".join(f"{f['name']}: {f['error']}" for f in failed if f["name"] in SERVABLE)
        raise TrainingFailedError(f"no servable candidate was fitted ({errors or 'none enabled'})")
    winner = min(servable, key=lambda r: r.metrics["mae"])
    best_overall = min(results, key=lambda r: r.metrics["mae"])
    assert winner.p50_booster is not None and winner.p90_booster is not None
    report("registering the challenger", 0.75)
    model_version = tracking.register(client, run_ids[winner.name], winner, spec, lineage, x_holdout)
    version_label = f"v{model_version}"
    metadata = {
        **lineage,
        "holdout_metrics": winner.metrics,
        "mlflow_run_id": run_ids[winner.name],
        "registered_model": MODEL_NAME,
        "registered_version": model_version,
        "config": config.to_dict(),
        "dropped_features": selection.dropped,
    }
    with tempfile.TemporaryDirectory(prefix="agentlb-bundle-") as tmp:
        write_bundle_files(
            Path(tmp),
            winner.p50_booster,
            winner.p90_booster,
            spec,
            version_label,
            metadata,
            winner.p90_log_offset,
        )
        client.log_artifacts(run_ids[winner.name], tmp, BUNDLE_ARTIFACT_PATH)

    report("champion gate", 0.85)
    champion = check_champion(settings.tracking_uri, prepared.holdout, config.p90_alpha)
    decision = gate_decision(winner.metrics, champion, config.gate)
    decision = defer_for_live_evidence(decision, settings, has_champion=champion.state == "loaded")
    decision["champion_version"] = champion.version
    decision["challenger_version"] = version_label
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS, model_version)
    decision_tag = json.dumps(decision, sort_keys=True, default=str)
    client.set_tag(run_ids[winner.name], "gate_decision", decision_tag)
    client.set_model_version_tag(MODEL_NAME, model_version, "gate_decision", decision_tag)
    bundle_path: str | None = None
    if decision["promoted"]:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, model_version)
        if export:
            report("exporting the champion bundle", 0.95)
            link = export_bundle(
                settings.models_dir,
                winner.p50_booster,
                winner.p90_booster,
                spec,
                version_label,
                metadata,
                winner.p90_log_offset,
            )
            bundle_path = str(link)
    elif (settings.models_dir / CHAMPION_ALIAS).exists():
        bundle_path = str(settings.models_dir / CHAMPION_ALIAS)
    log.info("gate: %s", decision["reason"])
    report("done", 1.0)
    return {
        "candidates": [
            {
                "name": r.name,
                "run_id": run_ids[r.name],
                "mae": r.metrics["mae"],
                "rmse": r.metrics["rmse"],
                "mape": r.metrics["mape"],
                "median_ape": r.metrics["median_ape"],
                "p90_pinball": r.metrics["p90_pinball"],
                "p90_coverage": r.metrics["p90_coverage"],
                "train_s": r.train_s,
                "predict_us_per_row": r.predict_us_per_row,
            }
            for r in results
        ],
        "failed_candidates": failed,
        "winner": winner.name,
        "best_overall": best_overall.name,
        "notice": _better_than_served(winner, best_overall),
        "promoted": bool(decision["promoted"]),
        "decision": decision,
        "model_version": version_label,
        "registered_version": model_version,
        "bundle_path": bundle_path,
        "experiment_id": experiment_id,
        "runs_view": tracking.runs_view_url(_ui_address(settings.tracking_uri), experiment_id),
        "dropped_features": selection.dropped,
        "tuning": tuning_summary,
        "rows": {
            "train": len(prepared.train),
            "holdout": len(prepared.holdout),
            "rejected": len(prepared.rejected),
            "dropped": prepared.dropped,
        },
        "rejected_rows": describe_rejections(prepared.rejected),
        "data_hash": lineage["data_hash"],
        "fit_s": fit_s,
        "load_validate_s": load_validate_s,
        "encode_s": encode_s,
        "total_s": time.perf_counter() - started,
    }


def _ui_address(tracking_uri: str) -> str:
    """Where the MLflow UI answers: the tracking server itself, else `make mlflow-ui`'s address."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI


def _better_than_served(winner: CandidateResult, best: CandidateResult) -> str | None:
    """Plain words when a candidate that cannot be served beat the served one on the holdout."""
    if best is winner or best.metrics["mae"] >= winner.metrics["mae"]:
        return None
    gap = 1.0 - best.metrics["mae"] / winner.metrics["mae"]
    return (
        f"{best.name} beats the served {winner.name} on the holdout: MAE {best.metrics['mae']:.4f} s vs "
        f"{winner.metrics['mae']:.4f} s ({100 * gap:.1f}% lower); only {winner.name} can be served"
    )


def _log_tuning(
    client: MlflowClient,
    experiment_id: str,
    lineage: dict[str, Any],
    config: TrainingConfig,
    datasets: list[Any],
    tuning: Tuning | None,
) -> dict[str, Any] | None:
    """The search as a parent run with one nested run per trial; its summary."""
    if tuning is None:
        return None
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    result = tuning.result
    parent = tracking.start_run(client, experiment_id, "lightgbm_tuning", lineage, config, datasets)
    now_ms = int(time.time() * 1000)
    for trial in tuning.trials:
        child = client.create_run(
            experiment_id,
            tags={MLFLOW_PARENT_RUN_ID: parent, "candidate": "lightgbm_tuning_trial"},
            run_name=f"trial-{trial.number}",
        )
        client.log_batch(
            child.info.run_id,
            metrics=[Metric("cv_mae", trial.cv_mae, now_ms, 0), Metric("train_s", trial.seconds, now_ms, 0)],
            params=[Param(k, str(v)) for k, v in sorted(trial.params.items())],
        )
        client.set_terminated(child.info.run_id)
    client.log_batch(
        parent,
        metrics=[
            Metric("best_cv_mae", result.best_cv_mae, now_ms, 0),
            Metric("default_cv_mae", result.default_cv_mae, now_ms, 0),
            Metric("train_s", result.tune_s, now_ms, 0),
        ],
        params=[Param(f"best_{k}", str(v)) for k, v in sorted(result.best_params.items())]
        + [Param("trials", str(result.trials))],
    )
    client.set_terminated(parent)
    return {
        "run_id": parent,
        "trials": result.trials,
        "best_params": result.best_params,
        "best_cv_mae": result.best_cv_mae,
        "default_cv_mae": result.default_cv_mae,
        "tune_s": result.tune_s,
    }


def _lineage(prepared: PreparedHistory, spec: FeatureSpec) -> dict[str, Any]:
    start, end = prepared.time_range
    return {
        "data_hash": frame_hash(prepared.frame),
        "rows": len(prepared.frame),
        "train_rows": len(prepared.train),
        "holdout_rows": len(prepared.holdout),
        "time_start": start,
        "time_end": end,
        "holdout_start": float(prepared.holdout["arrival_time"].min())
        if "arrival_time" in prepared.holdout.columns
        else None,
        "feature_version": FEATURE_VERSION,
        "feature_names": ",".join(spec.feature_names),
        "code_version": code_version(),
        "target_transform": "log",
    }
