"""Training on a Dask cluster (`agentlb train --dask`): a LocalCluster of two worker processes
trains what the in-process pipeline trains, its bundle serves like one trained in process, a
worker lost mid-training fails the run without touching the champion, and a bad `--dask`
address is a clear error naming the flag."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.cli import app
from agentlb.domain import Agent, TaskRequest
from agentlb.errors import HistoryValidationError, TrainingFailedError
from agentlb.history import validate_history
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.model import ModelPredictor, load_champion
from agentlb.settings import MODEL_NAME, Settings
from agentlb.tracker import AgentLoadTracker
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.distributed import cluster as cluster_module
from agentlb.training.distributed.cluster import DaskTarget, dask_client, parse_target
from agentlb.training.distributed.pipeline import run_dask_training
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import TASK_TYPES, synthetic_history
from parity_support import assert_serving_equals_training, record_dispatches

pytestmark = pytest.mark.slow

CONFIG = TrainingConfig(
    lightgbm=LightGBMConfig(num_boost_round=80, learning_rate=0.1), sklearn_hgb=HGBConfig(enabled=False)
)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[tuple[Any, DaskTarget]]:
    """One LocalCluster of two worker processes for the module."""
    target = parse_target("local:2")
    with dask_client(target) as client:
        yield client, target


@pytest.fixture(scope="module")
def big_history() -> pd.DataFrame:
    """20,000 simulated tasks: enough rows per worker that data-parallel LightGBM, whose
    workers each bin some of the features from their own rows, bins as one process does (at
    6,000 the holdout MAE of the two differs by up to 3%, either way)."""
    return synthetic_history(n_tasks=20_000, seed=3)


def partitioned(history: pd.DataFrame, partitions: int = 4) -> Any:
    """The history as the data side hands it over: validated, in arrival-time order, partitioned."""
    return dd.from_pandas(validate_history(history).frame, npartitions=partitions, sort=False)


def _lightgbm(summary: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in summary["candidates"] if c["name"] == "lightgbm")


@pytest.fixture(scope="module")
def trained(
    dask_cluster: tuple[Any, DaskTarget], big_history: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The same history trained in process and on the cluster, each in its own home."""
    from agentlb.settings import load_settings

    client, target = dask_cluster
    out: dict[str, Any] = {}
    for name in ("process", "dask"):
        home = tmp_path_factory.mktemp(f"home-{name}")
        settings = load_settings(home=home, mlflow_tracking_uri=None, model_uri=None)
        stages: list[float] = []
        if name == "process":
            summary = run_training(big_history, settings=settings, config=CONFIG)
        else:
            summary = run_dask_training(
                partitioned(big_history),
                client,
                target,
                settings=settings,
                config=CONFIG,
                progress=lambda _m, fraction, stages=stages: stages.append(fraction),
            )
        out[name] = {"summary": summary, "settings": settings, "stages": stages}
    return out


def test_dask_training_matches_in_process_training(trained: dict[str, Any]) -> None:
    process, dask = trained["process"]["summary"], trained["dask"]["summary"]
    assert dask["promoted"] and dask["winner"] == "lightgbm"
    assert [c["name"] for c in dask["candidates"]] == ["heuristic", "group_mean", "lightgbm"]
    assert "sklearn_hgb" not in dask["skipped_candidates"]  # disabled in the config: nothing skipped
    for key in ("train", "holdout", "dropped"):
        assert dask["rows"][key] == process["rows"][key]
    assert "_started" not in dask and dask["total_s"] >= dask["fit_s"]
    assert dask["data_hash"] == process["data_hash"]
    assert dask["dropped_features"] == process["dropped_features"]
    by_name = {c["name"]: c for c in process["candidates"]}
    for name in ("heuristic", "group_mean"):  # exact aggregations on the cluster
        got = next(c for c in dask["candidates"] if c["name"] == name)
        assert got["mae"] == pytest.approx(by_name[name]["mae"], rel=1e-9)
        assert got["p90_coverage"] == pytest.approx(by_name[name]["p90_coverage"], rel=1e-9)
    dask_mae, process_mae = _lightgbm(dask)["mae"], _lightgbm(process)["mae"]
    assert abs(dask_mae - process_mae) <= 0.02 * process_mae, (dask_mae, process_mae)
    bundles = [
        json.loads((Path(s["summary"]["bundle_path"]) / "bundle.json").read_text()) for s in trained.values()
    ]
    assert bundles[0]["feature_spec"] == bundles[1]["feature_spec"]
    assert bundles[0]["format"] == bundles[1]["format"]
    stages = trained["dask"]["stages"]
    assert stages[0] == 0.0 and stages[-1] == 1.0 and stages == sorted(stages)

    client = MlflowClient(tracking_uri=trained["dask"]["settings"].tracking_uri)
    runs = {r.info.run_name: r for r in client.search_runs([dask["experiment_id"]])}
    assert set(runs) == {"heuristic", "group_mean", "lightgbm"}
    logged = runs["lightgbm"]
    assert logged.data.tags["trained_on"] == "dask" and logged.data.tags["dask_workers"] == "2"
    assert logged.data.metrics["mae"] == pytest.approx(dask_mae)
    assert logged.data.params["dask_workers"] == "2"
    assert {i.dataset.digest for i in logged.inputs.dataset_inputs} == {
        i.dataset.digest
        for i in MlflowClient(tracking_uri=trained["process"]["settings"].tracking_uri)
        .get_run(_lightgbm(process)["run_id"])
        .inputs.dataset_inputs
    }
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"


def test_dask_bundle_serves_like_a_bundle_trained_in_process(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = trained["dask"]["settings"]
    monkeypatch.setenv("AGENTLB_HOME", str(settings.home))
    for name in ("AGENTLB_MODEL_URI", "AGENTLB_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    model = load_champion()  # what `serve` loads: models/champion
    assert model.version == trained["dask"]["summary"]["model_version"]
    frame, served = record_dispatches(
        tmp_path, ".parquet", task_types=list(TASK_TYPES), agent_ids=[f"agent-{i}" for i in range(4)]
    )
    assert_serving_equals_training(model.spec, frame, served)
    from_history = model.predict_frame(frame)
    for row, task_id in enumerate(frame["task_id"].astype(str)):
        task, snapshot, agent_id = served[task_id]
        state = snapshot.get(agent_id)
        assert state is not None
        serving = model.predict_service(task, [state], snapshot)
        assert serving.p50_s[0] == pytest.approx(from_history.p50_s[row], rel=1e-12)
        assert serving.p90_s[0] == pytest.approx(from_history.p90_s[row], rel=1e-12)

    tracker = AgentLoadTracker(clock=lambda: 0.0)
    for i in range(4):
        tracker.register(Agent(id=f"agent-{i}", name=f"a{i}", max_concurrency=3), registered_at=0.0)
    balancer = Balancer(tracker, PredictorRef(model), BalancerConfig(slow_start_window_s=0.0))
    result = balancer.select(TaskRequest("video_analysis", requirements={"input_tokens": 900}), "predictive")
    assert result.model_version == model.version and not result.fallback_used
    in_process = ModelPredictor.from_bundle(trained["process"]["summary"]["bundle_path"])
    assert in_process.spec.to_dict() == model.spec.to_dict()


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("local:zero", "local:N needs 1 to 64 workers"),
        ("local:0", "local:N needs 1 to 64 workers"),
        ("ftp://host:21", "unknown scheme 'ftp'"),
        ("just-a-name", "not a scheduler address"),
        ("tcp://127.0.0.1:99999", "port 99999 is outside"),
    ],
)
def test_bad_dask_addresses_are_errors_naming_the_flag(home: Path, address: str, words: str) -> None:
    done = CliRunner().invoke(app, ["train", "--dask", address, "--history", str(home)])
    assert done.exit_code == 1
    assert f"error: --dask {address!r}: " in done.stderr and words in done.stderr


def test_unreachable_scheduler_and_bad_setting_are_clear_errors(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1.0)
    done = CliRunner().invoke(app, ["train", "--dask", "tcp://127.0.0.1:9", "--history", str(home)])
    assert done.exit_code == 1
    assert "error: --dask 'tcp://127.0.0.1:9': cannot reach the Dask scheduler within 1 s" in done.stderr
    monkeypatch.setenv("AGENTLB_DASK_SCHEDULER", "local:many")
    done = CliRunner().invoke(app, ["train", "--history", str(home)])
    assert done.exit_code == 1 and "error: AGENTLB_DASK_SCHEDULER 'local:many'" in done.stderr
    done = CliRunner().invoke(app, ["train", "--dask", "local:2", "--tune", "3", "--history", str(home)])
    assert done.exit_code != 0 and "--tune" in done.stderr and "--dask" in done.stderr


def test_train_dask_cli_reads_a_partitioned_dataset_and_prints_only_json(
    home: Path, dask_cluster: tuple[Any, DaskTarget], history: pd.DataFrame, tmp_path: Path
) -> None:
    """`agentlb train --dask ADDRESS --history DATASET --json` against the module's cluster."""
    client, _ = dask_cluster
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    ordered = history.sort_values("arrival_time", kind="stable").reset_index(drop=True)
    for number, start in enumerate(range(0, len(ordered), 1000)):
        ordered.iloc[start : start + 1000].to_parquet(dataset / f"part-{number:03d}.parquet", index=False)
    config = tmp_path / "fast.yaml"
    config.write_text("lightgbm:\n  num_boost_round: 40\nsklearn_hgb:\n  enabled: true\n")
    address = client.scheduler_info(n_workers=0)["address"]
    done = CliRunner().invoke(
        app, ["train", "--dask", address, "--history", str(dataset), "--config", str(config), "--json"]
    )
    assert done.exit_code == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # nothing but JSON on stdout
    assert summary["promoted"] and summary["dask"]["workers"] == 2
    assert summary["rows"]["train"] + summary["rows"]["holdout"] == int(history["success"].sum())
    assert "sklearn_hgb" in summary["skipped_candidates"]
    assert f"Dask cluster {address}: 2 workers; dashboard http" in done.stderr
    assert ModelPredictor.from_bundle(summary["bundle_path"]).version == summary["model_version"]


def test_a_bad_history_on_the_cluster_is_a_history_error_not_a_cluster_error(
    settings: Settings, dask_cluster: tuple[Any, DaskTarget], history: pd.DataFrame
) -> None:
    client, target = dask_cluster
    with pytest.raises(HistoryValidationError, match="too little history to train"):
        run_dask_training(partitioned(history.head(60), 2), client, target, settings=settings, config=CONFIG)
    shuffled = dd.concat([partitioned(history.tail(1500), 1), partitioned(history.head(1500), 1)])
    with pytest.raises(HistoryValidationError, match="partitions must be in arrival-time order"):
        run_dask_training(shuffled, client, target, settings=settings, config=CONFIG)
    assert MlflowClient(tracking_uri=settings.tracking_uri).get_experiment_by_name(CONFIG.experiment) is None


def _kill_a_worker(client: Any) -> str:
    pids = client.run(os.getpid)
    address = sorted(pids)[0]
    os.kill(pids[address], signal.SIGKILL)
    return str(address)


def test_a_worker_killed_mid_training_fails_the_run_and_keeps_the_champion(
    settings: Settings, dask_cluster: tuple[Any, DaskTarget], history: pd.DataFrame
) -> None:
    client, target = dask_cluster
    champion = run_training(history, settings=settings, config=CONFIG)
    assert champion["promoted"]
    champion_link = os.readlink(settings.models_dir / "champion")
    killed: list[str] = []

    def kill_during_lightgbm(message: str, _fraction: float) -> None:
        if message == "candidate lightgbm" and not killed:
            killed.append(_kill_a_worker(client))

    with pytest.raises(TrainingFailedError) as failure:
        run_dask_training(
            partitioned(history),
            client,
            target,
            settings=settings,
            config=CONFIG,
            progress=kill_during_lightgbm,
        )
    assert killed
    message = str(failure.value)
    assert (
        "lightgbm" in message and f"worker {killed[0]} left the cluster during LightGBM training" in message
    )

    mlflow = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(CONFIG.experiment)
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    failed = [r for r in runs if r.info.run_name == "lightgbm" and r.info.status == "FAILED"]
    assert len(failed) == 1 and "left the cluster" in failed[0].data.tags["error"]
    assert str(mlflow.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    assert os.readlink(settings.models_dir / "champion") == champion_link
    assert len(mlflow.search_model_versions(f"name='{MODEL_NAME}'")) == 1  # nothing registered
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker for later tests
