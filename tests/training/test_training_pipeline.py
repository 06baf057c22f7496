"""The full pipeline on a simulated history: MLflow runs, registry, aliases, gate, bundle."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from agentlb.errors import TrainingInProgressError
from agentlb.features import FEATURE_VERSION
from agentlb.predictor.model import ModelPredictor
from agentlb.settings import MODEL_NAME, Settings
from agentlb.training.config import GateConfig, HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.gate import ChampionCheck, gate_decision
from agentlb.training.pipeline import run_training, training_lock

CANDIDATES = {"heuristic", "group_mean", "sklearn_hgb", "lightgbm"}


def _weak(config: TrainingConfig) -> TrainingConfig:
    """A deliberately under-fitted LightGBM: 3 rounds of stumps."""
    return config.replace(
        lightgbm=LightGBMConfig(num_boost_round=3, num_leaves=2, learning_rate=0.1),
        sklearn_hgb=HGBConfig(enabled=False),
    )


def test_train_logs_registers_promotes_and_exports(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    stages: list[float] = []
    summary = run_training(
        history,
        settings=settings,
        config=fast_config,
        progress=lambda _message, fraction: stages.append(fraction),
    )
    assert {c["name"] for c in summary["candidates"]} == CANDIDATES
    assert summary["winner"] == "lightgbm" and summary["promoted"]
    assert summary["model_version"] == "v1"
    assert stages[0] == 0.0 and stages[-1] == 1.0 and stages == sorted(stages)
    json.dumps(summary)  # the --json summary is plain JSON

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name("agentlb-completion-time")
    assert experiment is not None
    assert experiment.artifact_location.startswith((settings.var_dir / "mlartifacts").as_uri())
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == CANDIDATES
    by_name = {r.info.run_name: r for r in runs}
    for candidate in summary["candidates"]:
        logged = by_name[candidate["name"]].data
        assert logged.metrics["mae"] == pytest.approx(candidate["mae"])
        assert {"rmse", "mape", "median_ape", "p90_pinball", "p90_coverage", "train_s"} <= set(logged.metrics)
        assert logged.tags["data.data_hash"] == summary["data_hash"]
        assert logged.tags["data.feature_version"] == FEATURE_VERSION
    lgb_run = by_name["lightgbm"].info.run_id
    artifacts = {a.path for a in client.list_artifacts(lgb_run)}
    assert {"bundle", "plots"} <= artifacts
    assert {a.path for a in client.list_artifacts(lgb_run, "plots")} >= {
        "plots/residuals.png",
        "plots/feature_importance.png",
    }

    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    challenger = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    assert str(champion.version) == str(challenger.version) == "1"
    assert champion.run_id == lgb_run
    assert json.loads(champion.tags["gate_decision"])["promoted"] is True

    bundle = ModelPredictor.from_bundle(summary["bundle_path"])
    assert Path(summary["bundle_path"]) == settings.models_dir / "champion"
    assert bundle.version == "v1"
    assert bundle.metrics["mae"] == pytest.approx(summary["candidates"][-1]["mae"])
    from_registry = ModelPredictor.from_uri(f"models:/{MODEL_NAME}@champion", settings.tracking_uri)
    assert from_registry.version == "v1" and "models:/" in from_registry.source


def test_gate_promotes_a_better_model_and_refuses_a_worse_one(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    weak = run_training(history, settings=settings, config=_weak(fast_config))
    assert weak["promoted"]  # nothing to beat yet
    good = run_training(
        history, settings=settings, config=fast_config.replace(sklearn_hgb=HGBConfig(enabled=False))
    )
    assert good["promoted"], good["decision"]
    assert good["decision"]["champion_version"] == "v1"
    assert good["decision"]["mae_improvement"] >= 0.02
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "2"
    worse = run_training(history, settings=settings, config=_weak(fast_config))
    assert not worse["promoted"]
    assert "does not beat" in worse["decision"]["reason"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "3"
    assert ModelPredictor.from_bundle(settings.models_dir / "champion").version == "v2"
    assert worse["bundle_path"] == str(settings.models_dir / "champion")


def test_same_history_config_and_seed_give_the_same_metrics(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    first = run_training(history, settings=settings, config=fast_config, export=False)
    second = run_training(history, settings=settings, config=fast_config, export=False)
    for a, b in zip(first["candidates"], second["candidates"], strict=True):
        assert (a["name"], a["mae"], a["p90_coverage"]) == (b["name"], b["mae"], b["p90_coverage"])
    assert first["data_hash"] == second["data_hash"]


def test_model_beats_the_baselines_on_simulated_history(
    settings: Settings, fast_config: TrainingConfig
) -> None:
    """The product's claim: the learned model predicts better than the per-(agent, type) mean."""
    from agentlb.training.synthetic import synthetic_history

    summary = run_training(
        synthetic_history(4000, seed=5), settings=settings, config=fast_config, export=False
    )
    mae = {c["name"]: c["mae"] for c in summary["candidates"]}
    assert mae["lightgbm"] <= 0.9 * mae["group_mean"], mae
    assert mae["lightgbm"] <= 0.7 * mae["heuristic"], mae
    coverage = {c["name"]: c["p90_coverage"] for c in summary["candidates"]}["lightgbm"]
    assert 0.8 <= coverage <= 0.97


def test_a_second_concurrent_training_is_refused(settings: Settings, history: pd.DataFrame) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with training_lock(settings.var_dir):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(TrainingInProgressError, match="already in progress"):
            run_training(history, settings=settings)
    finally:
        release.set()
        holder.join()


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted", "reason"),
    [
        ({"mae": 1.0, "p90_coverage": 0.9}, None, True, "no champion yet"),
        ({"mae": 1.0, "p90_coverage": 0.7}, None, False, "coverage 0.700 outside"),
        ({"mae": 0.97, "p90_coverage": 0.9}, {"mae": 1.0, "p90_coverage": 0.9}, True, "beats champion"),
        ({"mae": 0.99, "p90_coverage": 0.9}, {"mae": 1.0, "p90_coverage": 0.9}, False, "does not beat"),
        ({"mae": 1.2, "p90_coverage": 0.9}, {"mae": 1.0, "p90_coverage": 0.9}, False, "does not beat"),
        (
            {"mae": 0.5, "p90_coverage": 0.7},
            {"mae": 1.0, "p90_coverage": 0.9},
            False,
            "coverage 0.700 outside",
        ),
        ({"mae": 0.5, "p90_coverage": 0.99}, {"mae": 1.0, "p90_coverage": 0.9}, False, "outside"),
    ],
)
def test_gate_rule(
    challenger: dict[str, float], champion: dict[str, float] | None, promoted: bool, reason: str
) -> None:
    check = ChampionCheck.absent() if champion is None else ChampionCheck.loaded(champion, "v1")
    decision = gate_decision(challenger, check, GateConfig())
    assert decision["promoted"] is promoted
    assert reason in decision["reason"]
