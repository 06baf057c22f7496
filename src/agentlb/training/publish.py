"""What every training run does once its candidates are fitted, in process or on a Dask cluster:
one MLflow run per candidate (FAILED for a candidate that raised), the servable winner
registered as challenger with its bundle, the promotion gate, and the champion bundle exported.

Both paths hand their fitted candidates here as a `Fitted`, so a model trained on a cluster is
logged, gated and exported exactly as one trained in process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import TrainingFailedError
from agentlb.features import FEATURE_VERSION, FeatureSpec
from agentlb.predictor.model import BUNDLE_ARTIFACT_PATH
from agentlb.settings import MODEL_NAME, Settings
from agentlb.training import tracking
from agentlb.training.bundle import export_bundle, write_bundle_files
from agentlb.training.candidates import SERVABLE, CandidateResult
from agentlb.training.config import TrainingConfig
from agentlb.training.feature_select import FeatureSelection
from agentlb.training.fitting import CandidateFailure, Tuning
from agentlb.training.gate import CHALLENGER_ALIAS, CHAMPION_ALIAS, check_champion, gate_decision
from agentlb.training.live_gate import defer_for_live_evidence

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger("agentlb.training")

LOCAL_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


@dataclass
class Fitted:
    """A training run's fitted candidates and what logging and gating them needs: the holdout
    frame (the gate scores the champion on it), a few encoded holdout rows (the registered
    model's input example), the lineage tags and the MLflow dataset inputs."""

    results: list[CandidateResult]
    failures: list[CandidateFailure]
    selection: FeatureSelection
    holdout: pd.DataFrame
    holdout_example: np.ndarray
    lineage: dict[str, Any]
    datasets: list[Any]
    tuning: Tuning | None = None
    extra_tags: dict[str, str] | None = None


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


def lineage_tags(
    spec: FeatureSpec,
    *,
    data_hash: str,
    rows: int,
    train_rows: int,
    holdout_rows: int,
    time_range: tuple[float | None, float | None],
    holdout_start: float | None,
) -> dict[str, Any]:
    """The data lineage a run, its model version and its bundle carry."""
    return {
        "data_hash": data_hash,
        "rows": rows,
        "train_rows": train_rows,
        "holdout_rows": holdout_rows,
        "time_start": time_range[0],
        "time_end": time_range[1],
        "holdout_start": holdout_start,
        "feature_version": FEATURE_VERSION,
        "feature_names": ",".join(spec.feature_names),
        "code_version": code_version(),
        "target_transform": "log",
    }


def publish(
    fitted: Fitted,
    settings: Settings,
    config: TrainingConfig,
    export: bool,
    report: Callable[[str, float], None],
) -> dict[str, Any]:
    """Log, register, gate and export; the part of the `agentlb train --json` summary about
    candidates, the decision and the bundle. Raises TrainingFailedError (after logging every
    candidate's run, failed ones as FAILED) when no servable candidate was fitted."""
    report("logging runs to MLflow", 0.6)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a training job
    import mlflow
    from mlflow.tracking import MlflowClient

    spec, lineage, results = fitted.selection.spec, fitted.lineage, fitted.results
    actual = fitted.holdout["duration_s"].to_numpy(dtype=np.float64)
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment_id = tracking.ensure_experiment(client, config.experiment, settings.mlflow_artifacts_dir)
    datasets, tags = fitted.datasets, fitted.extra_tags
    tuning_summary = _log_tuning(client, experiment_id, lineage, config, datasets, fitted.tuning)
    run_ids: dict[str, str] = {}
    for result in results:
        run_ids[result.name] = tracking.start_run(
            client, experiment_id, result.name, lineage, config, datasets, tags
        )
        tracking.log_result(
            client, run_ids[result.name], result, config, spec, actual, fitted.selection.dropped
        )
    failed = []
    for failure in fitted.failures:
        run_id = tracking.start_run(client, experiment_id, failure.name, lineage, config, datasets, tags)
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
    model_version = tracking.register(
        client, run_ids[winner.name], winner, spec, lineage, fitted.holdout_example
    )
    version_label = f"v{model_version}"
    metadata = {
        **lineage,
        "holdout_metrics": winner.metrics,
        "mlflow_run_id": run_ids[winner.name],
        "registered_model": MODEL_NAME,
        "registered_version": model_version,
        "config": config.to_dict(),
        "dropped_features": fitted.selection.dropped,
    }
    bundle_args = (
        winner.p50_booster,
        winner.p90_booster,
        spec,
        version_label,
        metadata,
        winner.p90_log_offset,
    )
    with tempfile.TemporaryDirectory(prefix="agentlb-bundle-") as tmp:
        write_bundle_files(Path(tmp), *bundle_args)
        client.log_artifacts(run_ids[winner.name], tmp, BUNDLE_ARTIFACT_PATH)

    report("champion gate", 0.85)
    champion = check_champion(settings.tracking_uri, fitted.holdout, config.p90_alpha)
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
            bundle_path = str(export_bundle(settings.models_dir, *bundle_args))
    elif (settings.models_dir / CHAMPION_ALIAS).exists():
        bundle_path = str(settings.models_dir / CHAMPION_ALIAS)
    log.info("gate: %s", decision["reason"])
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
        "dropped_features": fitted.selection.dropped,
        "tuning": tuning_summary,
        "data_hash": lineage["data_hash"],
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
