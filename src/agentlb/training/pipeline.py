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

from agentlb.errors import ModelLoadError, TrainingInProgressError
from agentlb.features import FEATURE_VERSION, FeatureSpec, frame_hash
from agentlb.predictor.model import BUNDLE_ARTIFACT_PATH, ModelPredictor
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.training.bundle import export_bundle, write_bundle_files
from agentlb.training.candidates import (
    SERVABLE,
    CandidateResult,
    fit_group_mean,
    fit_heuristic,
    fit_lightgbm,
    fit_sklearn_hgb,
    holdout_metrics,
)
from agentlb.training.config import GateConfig, TrainingConfig
from agentlb.training.data import PreparedHistory, describe_rejections, encode, prepare_history
from agentlb.training.live_gate import defer_for_live_evidence

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger("agentlb.training")

ProgressCallback = Callable[[str, float], None]
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
LOCK_FILE = "training.lock"


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


def gate_decision(
    challenger: dict[str, float], champion: dict[str, float] | None, gate: GateConfig, champion_note: str = ""
) -> dict[str, Any]:
    """Promote when there is no champion; else only if MAE is `min_mae_improvement` better on the
    same holdout and p90 coverage is within the configured band."""
    coverage = challenger["p90_coverage"]
    decision: dict[str, Any] = {
        "challenger_mae": challenger["mae"],
        "challenger_p90_coverage": coverage,
        "champion_mae": champion["mae"] if champion else None,
        "champion_p90_coverage": champion["p90_coverage"] if champion else None,
        "min_mae_improvement": gate.min_mae_improvement,
        "coverage_band": [gate.coverage_low, gate.coverage_high],
    }
    if champion is None:
        decision["promoted"] = True
        decision["reason"] = "no usable champion yet" + (f" ({champion_note})" if champion_note else "")
        return decision
    needed = champion["mae"] * (1.0 - gate.min_mae_improvement)
    improvement = 1.0 - challenger["mae"] / champion["mae"] if champion["mae"] > 0 else 0.0
    decision["mae_improvement"] = improvement
    in_band = gate.coverage_low <= coverage <= gate.coverage_high
    if challenger["mae"] > needed:
        decision["promoted"] = False
        decision["reason"] = (
            f"MAE {challenger['mae']:.4f} vs champion {champion['mae']:.4f} ({100 * improvement:+.1f}%) "
            f"does not beat it by {100 * gate.min_mae_improvement:.0f}%"
        )
    elif not in_band:
        decision["promoted"] = False
        decision["reason"] = (
            f"p90 coverage {coverage:.3f} outside [{gate.coverage_low}, {gate.coverage_high}]"
        )
    else:
        decision["promoted"] = True
        decision["reason"] = (
            f"MAE {challenger['mae']:.4f} beats champion {champion['mae']:.4f} by {100 * improvement:.1f}% "
            f"and p90 coverage {coverage:.3f} is within [{gate.coverage_low}, {gate.coverage_high}]"
        )
    return decision


def ensure_experiment(client: MlflowClient, name: str, artifacts_dir: Path) -> str:
    """The experiment id, created with an explicit artifact location under the home's var/."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=artifacts_dir.resolve().as_uri()))


def _plots(result: CandidateResult, actual_s: np.ndarray, spec: FeatureSpec, out: Path) -> list[Path]:
    """Residual plot for every fitted candidate; feature importance for LightGBM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(result.p50_s, actual_s - result.p50_s, s=4, alpha=0.4)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("predicted p50 (s)")
    ax.set_ylabel("actual - predicted (s)")
    ax.set_title(f"{result.name}: holdout residuals")
    fig.tight_layout()
    paths.append(out / "residuals.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    if result.p50_booster is not None:
        gains = result.p50_booster.feature_importance(importance_type="gain")
        order = np.argsort(gains)
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.barh([spec.feature_names[i] for i in order], gains[order])
        ax.set_xlabel("total gain")
        ax.set_title("LightGBM p50: feature importance")
        fig.tight_layout()
        paths.append(out / "feature_importance.png")
        fig.savefig(paths[-1], dpi=80)
        plt.close(fig)
        importance = {spec.feature_names[i]: float(gains[i]) for i in range(len(gains))}
        paths.append(out / "feature_importance.json")
        paths[-1].write_text(json.dumps(importance, indent=2, sort_keys=True))
    return paths


def _champion_metrics(
    tracking_uri: str, holdout: pd.DataFrame, alpha: float
) -> tuple[dict[str, float] | None, str, str | None]:
    """The current champion's metrics on this holdout; None (with why) when there is none usable."""
    try:
        champion = ModelPredictor.from_uri(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}", tracking_uri)
    except ModelLoadError as exc:
        return None, str(exc).splitlines()[0][:300], None
    prediction = champion.predict_frame(holdout)
    actual = holdout["duration_s"].to_numpy(dtype=np.float64)
    return holdout_metrics(actual, prediction.p50_s, prediction.p90_s, alpha), "", champion.version


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
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Train every candidate, register the best servable pair as challenger, gate it to
    champion and export the champion bundle. Returns the `agentlb train --json` summary.

    `history` is a frame or a CSV/Parquet path; `from_db` reads the store's history instead.
    `progress(message, fraction_done)` is called at each stage (the bootstrap's progress bar).
    Raises HistoryValidationError for a bad or too short history, TrainingInProgressError when
    another training holds the lock.
    """
    settings = settings or load_settings()
    config = (config or TrainingConfig()).replace(holdout_frac=holdout_frac, seed=seed)
    report = progress or _noop
    with training_lock(settings.var_dir):
        return _run(history, settings, config, from_db, since, skip_bad_rows, export, report)


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
    spec = FeatureSpec.from_frame(prepared.train)
    x_train, log_y = encode(spec, prepared.train)
    x_holdout, _ = encode(spec, prepared.holdout)
    encode_s = time.perf_counter() - encode_started
    actual = prepared.holdout["duration_s"].to_numpy(dtype=np.float64)
    alpha = config.p90_alpha

    results: list[CandidateResult] = []
    report("candidate heuristic", 0.2)
    results.append(fit_heuristic(prepared.holdout))
    report("candidate group_mean", 0.25)
    results.append(fit_group_mean(prepared.train, prepared.holdout, config.group_mean, alpha))
    if config.sklearn_hgb.enabled:
        report("candidate sklearn_hgb", 0.3)
        results.append(
            fit_sklearn_hgb(spec, x_train, log_y, x_holdout, config.sklearn_hgb, alpha, config.seed)
        )
    report("candidate lightgbm (p50 + p90)", 0.45)
    results.append(fit_lightgbm(spec, x_train, log_y, x_holdout, config.lightgbm, alpha, config.seed))
    for result in results:
        result.metrics = holdout_metrics(actual, result.p50_s, result.p90_s, alpha)
    fit_s = time.perf_counter() - started

    report("logging runs to MLflow", 0.6)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a training job
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment_id = ensure_experiment(client, config.experiment, settings.mlflow_artifacts_dir)
    lineage = _lineage(prepared, spec)
    run_ids = {
        result.name: _log_run(client, experiment_id, result, lineage, config, spec, actual, x_holdout)
        for result in results
    }

    servable = [r for r in results if r.name in SERVABLE]
    winner = min(servable, key=lambda r: r.metrics["mae"])
    best_overall = min(results, key=lambda r: r.metrics["mae"])
    assert winner.p50_booster is not None and winner.p90_booster is not None
    report("registering the challenger", 0.75)
    model_version = _register(client, run_ids[winner.name], winner, spec, lineage, x_holdout)
    version_label = f"v{model_version}"
    metadata = {
        **lineage,
        "holdout_metrics": winner.metrics,
        "mlflow_run_id": run_ids[winner.name],
        "registered_model": MODEL_NAME,
        "registered_version": model_version,
        "config": config.to_dict(),
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
    champion_metrics, champion_note, champion_version = _champion_metrics(
        settings.tracking_uri, prepared.holdout, alpha
    )
    decision = gate_decision(winner.metrics, champion_metrics, config.gate, champion_note)
    decision = defer_for_live_evidence(decision, settings, has_champion=champion_version is not None)
    decision["champion_version"] = champion_version
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
        "winner": winner.name,
        "best_overall": best_overall.name,
        "promoted": bool(decision["promoted"]),
        "decision": decision,
        "model_version": version_label,
        "registered_version": model_version,
        "bundle_path": bundle_path,
        "experiment_id": experiment_id,
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


def _log_run(
    client: MlflowClient,
    experiment_id: str,
    result: CandidateResult,
    lineage: dict[str, Any],
    config: TrainingConfig,
    spec: FeatureSpec,
    actual: np.ndarray,
    x_holdout: np.ndarray,
) -> str:
    """One MLflow run per candidate: params, lineage tags, holdout metrics, plots."""
    tags = {f"data.{k}": str(v) for k, v in lineage.items() if k != "feature_names"}
    tags.update({"candidate": result.name, "mlflow.runName": result.name, "seed": str(config.seed)})
    run = client.create_run(experiment_id, tags=tags, run_name=result.name)
    run_id = str(run.info.run_id)
    from mlflow.entities import Metric, Param

    now_ms = int(time.time() * 1000)
    values = {
        **result.params,
        "holdout_frac": config.holdout_frac,
        "seed": config.seed,
        "p90_alpha": config.p90_alpha,
    }
    params = [Param(k, str(v)[:500]) for k, v in sorted(values.items())]
    metrics = {**result.metrics, "train_s": result.train_s, "predict_us_per_row": result.predict_us_per_row}
    client.log_batch(
        run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()], params=params
    )
    if result.name in ("sklearn_hgb", "lightgbm"):
        with tempfile.TemporaryDirectory(prefix="agentlb-plots-") as tmp:
            _plots(result, actual, spec, Path(tmp))
            client.log_artifacts(run_id, tmp, "plots")
    if result.name not in SERVABLE:
        client.set_terminated(run_id)
    return run_id


def _register(
    client: MlflowClient,
    run_id: str,
    winner: CandidateResult,
    spec: FeatureSpec,
    lineage: dict[str, Any],
    x_holdout: np.ndarray,
) -> str:
    """Log the p50 booster as an MLflow model (signature + input example) and register it; the
    run also carries the full bundle (both boosters + feature spec) under `bundle/`."""
    import mlflow
    import mlflow.lightgbm
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame(np.nan_to_num(x_holdout[:5], nan=-1.0), columns=spec.feature_names)
    assert winner.p50_booster is not None
    signature = infer_signature(example, winner.p50_booster.predict(example.to_numpy()))
    with mlflow.start_run(run_id=run_id):
        info = mlflow.lightgbm.log_model(
            winner.p50_booster,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=MODEL_NAME,
            pip_requirements=[f"lightgbm=={_version('lightgbm')}"],
        )
    version = info.registered_model_version
    if version is None:
        raise ModelLoadError(f"MLflow did not register {MODEL_NAME} for run {run_id}")
    client.set_model_version_tag(MODEL_NAME, str(version), "feature_version", FEATURE_VERSION)
    client.set_model_version_tag(MODEL_NAME, str(version), "data_hash", str(lineage["data_hash"]))
    return str(version)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
