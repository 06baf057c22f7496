"""Tables for the model-comparison notebook, so the notebook only calls the package.

The notebook (notebooks/01-model-comparison.ipynb) reads the experiment's runs from MLflow and
compares candidates on the holdout, by task type; the code for both lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentlb.predictor.model import ModelPredictor
from agentlb.training.candidates import fit_group_mean, fit_heuristic
from agentlb.training.config import GroupMeanConfig
from agentlb.training.data import prepare_history

if TYPE_CHECKING:
    import pandas as pd

RUN_METRICS = (
    "mae",
    "rmse",
    "mape",
    "median_ape",
    "p90_pinball",
    "p90_coverage",
    "train_s",
    "predict_us_per_row",
)


def experiment_runs(tracking_uri: str, experiment: str = "agentlb-completion-time") -> pd.DataFrame:
    """One row per candidate run of the experiment, newest first (what the MLflow UI lists)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame(columns=["run_id", "candidate", "started", "data_hash", *RUN_METRICS])
    rows = []
    for run in client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]):
        row: dict[str, object] = {
            "run_id": run.info.run_id,
            "candidate": run.info.run_name,
            "started": pd.Timestamp(run.info.start_time, unit="ms"),
            "data_hash": run.data.tags.get("data.data_hash"),
        }
        row.update({m: run.data.metrics.get(m, np.nan) for m in RUN_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def holdout_predictions(
    history: pd.DataFrame | str | Path,
    model_uri: str,
    tracking_uri: str | None = None,
    holdout_frac: float = 0.2,
) -> pd.DataFrame:
    """The holdout rows with the p50 of the heuristic, the per-(agent, type) mean and the model
    at `model_uri`, in seconds: for error-by-task-type tables and plots."""
    prepared = prepare_history(
        history, holdout_frac, skip_bad_rows=True, min_train_rows=10, min_holdout_rows=5
    )
    holdout = prepared.holdout
    out = holdout[["task_type", "duration_s"]].copy()
    if "agent_id" in holdout.columns:
        out["agent_id"] = holdout["agent_id"]
    out["heuristic"] = fit_heuristic(holdout).p50_s
    out["group_mean"] = fit_group_mean(prepared.train, holdout, GroupMeanConfig(), 0.9).p50_s
    prediction = ModelPredictor.from_uri(model_uri, tracking_uri).predict_frame(holdout)
    out["model"] = prediction.p50_s
    out["model_p90"] = prediction.p90_s
    return out


def error_by_task_type(predictions: pd.DataFrame) -> pd.DataFrame:
    """MAE per task type of each predictor in `holdout_predictions`, plus the model's p90 coverage."""
    import pandas as pd

    columns = [c for c in ("heuristic", "group_mean", "model") if c in predictions.columns]
    errors = pd.DataFrame({c: (predictions[c] - predictions["duration_s"]).abs() for c in columns})
    errors["task_type"] = predictions["task_type"]
    table = errors.groupby("task_type").mean()
    table["model_p90_coverage"] = (
        (predictions["duration_s"] <= predictions["model_p90"]).groupby(predictions["task_type"]).mean()
    )
    table["rows"] = predictions.groupby("task_type").size()
    return table
