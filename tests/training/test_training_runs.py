"""What a training run leaves behind: failed candidates as FAILED runs, a gate an outage cannot
fool, nested Optuna trials, and an experiment a data scientist can read in the MLflow UI."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from agentlb.settings import MODEL_NAME, Settings
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.gate import check_champion
from agentlb.training.pipeline import run_training
from agentlb.training.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, RUNS_VIEW_TAG


def _no_hgb(config: TrainingConfig) -> TrainingConfig:
    return config.replace(sklearn_hgb=HGBConfig(enabled=False))


def _runs(settings: Settings) -> list[Any]:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name("agentlb-completion-time")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id]))


def test_a_failing_candidate_leaves_a_failed_run_and_a_promoted_winner(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    broken = fast_config.replace(sklearn_hgb=HGBConfig(max_iter=5, max_leaf_nodes=1))  # sklearn refuses 1
    summary = run_training(history, settings=settings, config=broken, export=False)
    assert summary["promoted"] and summary["winner"] == "lightgbm"
    assert {c["name"] for c in summary["candidates"]} == {"heuristic", "group_mean", "lightgbm"}
    [failed] = summary["failed_candidates"]
    assert failed["name"] == "sklearn_hgb" and "max_leaf_nodes" in failed["error"]
    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(failed["run_id"])
    assert run.info.status == "FAILED"
    assert "max_leaf_nodes" in run.data.tags["error"]


def _bundle_dir(settings: Settings, run_id: str) -> Path:
    return next(p for p in settings.mlflow_artifacts_dir.rglob("bundle") if run_id in str(p))


def test_gate_refuses_to_replace_a_champion_it_cannot_load(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    first = run_training(history, settings=settings, config=_no_hgb(fast_config), export=False)
    assert first["promoted"] and first["decision"]["champion_state"] == "absent"
    champion_run = client.get_model_version_by_alias(MODEL_NAME, "champion").run_id
    shutil.rmtree(_bundle_dir(settings, champion_run))  # the champion's artifact is gone

    second = run_training(history, settings=settings, config=_no_hgb(fast_config), export=False)
    assert not second["promoted"]
    assert second["decision"]["champion_state"] == "unloadable"
    assert "cannot be loaded" in second["decision"]["reason"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"


def test_gate_replaces_a_champion_of_an_older_feature_version_without_comparison(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run_training(history, settings=settings, config=_no_hgb(fast_config), export=False)
    client.set_model_version_tag(MODEL_NAME, "1", "feature_version", "1")
    again = run_training(history, settings=settings, config=_no_hgb(fast_config), export=False)
    assert again["promoted"], again["decision"]
    assert again["decision"]["champion_state"] == "older_features"
    assert "older than" in again["decision"]["reason"]


def test_gate_refuses_when_the_tracking_server_does_not_answer(
    history: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the tracking server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    check = check_champion(f"http://127.0.0.1:{port}", history.tail(50), 0.9)
    assert check.state == "unloadable" and "does not answer" in check.note


def test_a_better_unservable_candidate_is_said_plainly(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    weak = fast_config.replace(lightgbm=LightGBMConfig(num_boost_round=3, num_leaves=2))
    summary = run_training(history, settings=settings, config=weak, export=False)
    assert summary["best_overall"] != "lightgbm"
    assert summary["notice"].startswith(f"{summary['best_overall']} beats the served lightgbm")


def test_tune_logs_nested_trials_and_is_no_worse_than_the_defaults_on_inner_cv(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    summary = run_training(
        history, settings=settings, config=_no_hgb(fast_config), export=False, tune_trials=4
    )
    tuning = summary["tuning"]
    assert tuning["trials"] == 4
    assert tuning["best_cv_mae"] <= tuning["default_cv_mae"]
    runs = _runs(settings)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == tuning["run_id"]]
    assert len(children) == 4
    assert all("cv_mae" in r.data.metrics for r in children)
    lgb_run = next(r for r in runs if r.info.run_name == "lightgbm")
    for name, value in tuning["best_params"].items():
        assert float(lgb_run.data.params[name]) == pytest.approx(float(value))


def test_experiment_opens_on_training_runs_with_their_datasets(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    summary = run_training(history, settings=settings, config=_no_hgb(fast_config), export=False)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment(summary["experiment_id"])
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert "workflowType=machine_learning" in summary["runs_view"]  # MLflow 3.17 picks the view by it
    assert summary["runs_view"].endswith(
        f"/#/experiments/{summary['experiment_id']}/runs"
        "?workflowType=machine_learning&viewStateShareKey=training-runs"
    )
    view = json.loads(experiment.tags[RUNS_VIEW_TAG])
    assert {"metrics.`mae`", "metrics.`p90_coverage`", "metrics.`train_s`"} <= set(view["selectedColumns"])
    run = client.get_run(summary["candidates"][0]["run_id"])
    inputs = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "holdout"}
    assert inputs["training"].digest and inputs["training"].digest != inputs["holdout"].digest
    assert json.loads(inputs["holdout"].profile)["num_rows"] == summary["rows"]["holdout"]
