"""What a training run writes to MLflow: the experiment, one run per candidate (params, lineage,
datasets, metrics, plots, or the error of a candidate that failed) and the registered model.

The experiment is tagged as a model-training experiment (`mlflow.experimentKind`) and carries a
shared view of the runs table (`mlflow.sharedViewState.<key>`) showing the metrics to compare.
MLflow 3.17's UI picks GenAI or machine-learning pages from a per-browser "workflow type"
(GenAI unless switched; the `workflowType` URL parameter switches it) before it reads that tag,
so `runs_view_url` carries `workflowType=machine_learning` as well as the shared view's key.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import ModelLoadError
from agentlb.features import FEATURE_VERSION, FeatureSpec, frame_hash
from agentlb.settings import MODEL_NAME
from agentlb.training.candidates import SERVABLE, CandidateResult
from agentlb.training.config import TrainingConfig

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the MLflow 3 UI's "machine learning" experiment type
RUNS_VIEW_KEY = "training-runs"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
RUNS_VIEW_METRICS = ("mae", "p90_coverage", "train_s")
RUNS_VIEW: dict[str, Any] = {
    "selectedColumns": [
        "attributes.`Dataset`",
        *(f"metrics.`{m}`" for m in RUNS_VIEW_METRICS),
        "attributes.`Models`",
        "tags.`candidate`",
    ],
    "orderByKey": "attributes.start_time",
    "orderByAsc": False,
}
CANDIDATE_ERROR_TAG = "error"
SCHEMA_SAMPLE_ROWS = 5000


def ensure_experiment(client: MlflowClient, name: str, artifacts_dir: Path) -> str:
    """The experiment id, created with an explicit artifact location under the home's var/,
    tagged as a model-training experiment with the runs view (also on an older experiment)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = str(
            client.create_experiment(name, artifact_location=artifacts_dir.resolve().as_uri())
        )
        tags: dict[str, str] = {}
    else:
        experiment_id = str(experiment.experiment_id)
        tags = dict(experiment.tags)
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: json.dumps(RUNS_VIEW)}
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def runs_view_url(tracking_ui: str, experiment_id: str) -> str:
    """The MLflow UI page of the experiment's runs with `mae`, `p90_coverage`, `train_s` shown."""
    return (
        f"{tracking_ui.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"
    )


@dataclass(frozen=True)
class DatasetSummary:
    """What a run records of a training or holdout set: its first rows (for the schema), our
    content hash of all of it, its rows and cells; summed partition by partition on a cluster."""

    sample: pd.DataFrame
    digest: str
    rows: int
    elements: int

    @classmethod
    def of(cls, frame: pd.DataFrame) -> DatasetSummary:
        return cls(frame.head(SCHEMA_SAMPLE_ROWS), frame_hash(frame), len(frame), int(frame.size))


def summarised_inputs(parts: dict[str, DatasetSummary]) -> list[Any]:
    """The training and holdout sets as MLflow datasets: digest = our content hash of the whole
    set, profile = its size, schema inferred from its first SCHEMA_SAMPLE_ROWS rows (MLflow's
    inference looks at every value: ~30 s per million rows)."""
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for context, summary in parts.items():
        sample = from_pandas(summary.sample, targets="duration_s", name=f"history-{context}")
        with warnings.catch_warnings():  # its hint on integer columns concerns model signatures
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow.types.utils")
            described = sample._to_mlflow_entity()
        entity = Dataset(
            name=described.name,
            digest=summary.digest,
            source_type=described.source_type,
            source=described.source,
            schema=described.schema,
            profile=json.dumps({"num_rows": summary.rows, "num_elements": summary.elements}),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


def start_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    lineage: dict[str, Any],
    config: TrainingConfig,
    datasets: list[Any],
    extra_tags: dict[str, str] | None = None,
) -> str:
    """A candidate's run with its lineage tags and its datasets; left RUNNING."""
    tags = {f"data.{k}": str(v) for k, v in lineage.items() if k != "feature_names"}
    tags.update({"candidate": name, "mlflow.runName": name, "seed": str(config.seed)})
    tags.update(extra_tags or {})
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    run_id = str(run.info.run_id)
    if datasets:
        client.log_inputs(run_id, datasets=datasets)
    return run_id


def dataset_inputs(train: pd.DataFrame, holdout: pd.DataFrame) -> list[Any]:
    return summarised_inputs({"training": DatasetSummary.of(train), "holdout": DatasetSummary.of(holdout)})


def log_failure(client: MlflowClient, run_id: str, error: BaseException) -> str:
    """Mark a candidate's run FAILED with its error (tag and `error.txt`); the message."""
    message = f"{type(error).__name__}: {error}"
    client.set_tag(run_id, CANDIDATE_ERROR_TAG, message[:5000])
    client.log_text(run_id, message, "error.txt")
    client.set_terminated(run_id, status="FAILED")
    return message


def log_result(
    client: MlflowClient,
    run_id: str,
    result: CandidateResult,
    config: TrainingConfig,
    spec: FeatureSpec,
    actual: np.ndarray,
    dropped_features: dict[str, str],
) -> None:
    """Params, holdout metrics and plots of a fitted candidate; the run ends unless it is the
    served candidate (its model is logged into it next)."""
    from mlflow.entities import Metric, Param

    now_ms = int(time.time() * 1000)
    values = {
        **result.params,
        "holdout_frac": config.holdout_frac,
        "seed": config.seed,
        "p90_alpha": config.p90_alpha,
        "dropped_features": ",".join(sorted(dropped_features)) or "none",
    }
    params = [Param(k, str(v)[:500]) for k, v in sorted(values.items())]
    metrics = {**result.metrics, "train_s": result.train_s, "predict_us_per_row": result.predict_us_per_row}
    client.log_batch(
        run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()], params=params
    )
    if dropped_features:
        client.log_dict(run_id, dropped_features, "dropped_features.json")
    if result.name in ("sklearn_hgb", "lightgbm"):
        with tempfile.TemporaryDirectory(prefix="agentlb-plots-") as tmp:
            _plots(result, actual, spec, Path(tmp))
            client.log_artifacts(run_id, tmp, "plots")
    if result.name not in SERVABLE:
        client.set_terminated(run_id)


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


def register(
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
