"""`agentlb train / predict / retrain` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from agentlb.cli import app

FAST_CONFIG = {"lightgbm": {"num_boost_round": 60, "learning_rate": 0.1}, "sklearn_hgb": {"max_iter": 40}}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST_CONFIG))
    return path


def test_train_json_prints_only_the_summary_and_predict_scores_every_row(
    home: Path, history_csv: Path, config_file: Path, tmp_path: Path
) -> None:
    done = CliRunner().invoke(
        app, ["train", "--history", str(history_csv), "--config", str(config_file), "--json"]
    )
    assert done.exit_code == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # nothing but JSON on stdout
    assert {"candidates", "winner", "promoted", "model_version", "bundle_path"} <= set(summary)
    names = [c["name"] for c in summary["candidates"]]
    assert names == ["heuristic", "group_mean", "sklearn_hgb", "lightgbm"]
    for candidate in summary["candidates"]:
        assert {
            "name",
            "run_id",
            "mae",
            "rmse",
            "mape",
            "p90_coverage",
            "train_s",
            "predict_us_per_row",
        } <= set(candidate)
    assert summary["promoted"] and Path(summary["bundle_path"]) == home / "models" / "champion"
    assert "champion gate" in done.stderr  # progress went to stderr

    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", "--history", str(history_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out)
    source = pd.read_csv(history_csv)
    assert list(predictions.columns) == ["task_id", "predicted_p50_s", "predicted_p90_s"]
    assert predictions["task_id"].tolist() == source["task_id"].tolist()
    assert bool((predictions["predicted_p90_s"] >= predictions["predicted_p50_s"]).all())
    assert bool((predictions["predicted_p50_s"] > 0).all())


def test_bad_history_fails_with_the_row_number(home: Path, history_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(history_csv)
    frame.loc[41, "duration_s"] = -3.0
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    result = CliRunner().invoke(app, ["train", "--history", str(bad), "--json"])
    assert result.exit_code == 1
    assert "row 42" in result.stderr and "duration_s" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_train_on_a_true_false_attribute_some_rows_lack(
    home: Path, history: pd.DataFrame, config_file: Path, tmp_path: Path, suffix: str
) -> None:
    frame = history.copy()
    cached = (frame["complexity"] == "high").astype(object)
    frame["cached"] = cached.where(frame.index % 4 != 0, None)
    path = tmp_path / f"history{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)

    done = CliRunner().invoke(app, ["train", "--history", str(path), "--config", str(config_file), "--json"])

    assert done.exit_code == 0, done.stderr[-3000:]
    bundle = json.loads((Path(json.loads(done.stdout)["bundle_path"]) / "bundle.json").read_text())
    assert "cached" in bundle["feature_spec"]["numeric_attributes"]
    assert "cached" not in bundle["feature_spec"]["categorical_attributes"]


def test_predict_without_a_model_says_to_train(home: Path, history_csv: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["predict", "--history", str(history_csv), "--out", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 1
    assert "agentlb train" in result.stderr


def test_unknown_config_key_is_refused(home: Path, history_csv: Path, tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("lightgbm:\n  num_boost_rounds: 10\n")
    result = CliRunner().invoke(app, ["train", "--history", str(history_csv), "--config", str(path)])
    assert result.exit_code == 1
    assert "num_boost_rounds" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("30m", 1800.0), ("6h", 21600.0), ("2d", 172800.0)]
)
def test_durations(text: str, seconds: float) -> None:
    from agentlb.cli.train_cmds import parse_duration_s, parse_since

    assert parse_duration_s(text) == seconds
    assert parse_since(text, now=1_000_000.0) == 1_000_000.0 - seconds


def _serve_tasks(n: int, slowdown: float) -> str:
    """n selections by the champion through the real service, each reported `slowdown` times
    its predicted service time; returns the model version that predicted them."""
    from agentlb.domain import Agent, TaskOutcome, TaskRequest
    from agentlb.service import AgentLBService
    from agentlb.settings import load_settings

    service = AgentLBService.open(load_settings(model_poll_interval_s=0))
    try:
        for i in range(3):
            service.register_agent(Agent(id=f"agent-{i}", name=f"agent-{i}", max_concurrency=4))
        version = ""
        for i in range(n):
            task = TaskRequest("video_analysis", requirements={"input_tokens": 400 + 10 * i})
            result = service.select(task, "predictive")
            assert result.predicted_completion is not None and result.model_version
            version = result.model_version
            predicted = result.predicted_completion
            late = 1.5 * predicted.service_p90_s if i % 10 == 0 else predicted.service_p50_s
            service.report_outcome(TaskOutcome(result.selected_agent.id, slowdown * late, True, task.task_id))
        return version
    finally:
        service.close()


def test_drift_tells_a_retraining_job_when_to_retrain(
    home: Path, history_csv: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["drift"]).exit_code == 1  # no model yet: nothing to assess
    trained = runner.invoke(app, ["train", "--history", str(history_csv), "--config", str(config_file)])
    assert trained.exit_code == 0, trained.stderr[-2000:]
    monkeypatch.setenv("AGENTLB_DRIFT_MIN_SAMPLES", "30")

    few = runner.invoke(app, ["drift"])
    assert few.exit_code == 0 and "not enough evidence" in few.stdout

    version = _serve_tasks(40, slowdown=1.0)
    calm = runner.invoke(app, ["drift", "--json"])
    assert calm.exit_code == 0, calm.output
    report = json.loads(calm.stdout)
    assert report["model_version"] == version and report["samples"] == 40
    skipped = runner.invoke(app, ["retrain", "--if-drifted", "--json"])
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["skipped"] is True

    _serve_tasks(200, slowdown=4.0)  # the fleet got 4x slower than the model knows
    drifted = runner.invoke(app, ["drift", "--window", "24h"])
    assert drifted.exit_code == 3, drifted.output
    assert "DRIFTED" in drifted.stdout and "online MAE" in drifted.stdout


def test_drift_with_the_database_down_is_a_one_line_error(
    home: Path, history_csv: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = CliRunner().invoke(app, ["train", "--history", str(history_csv), "--config", str(config_file)])
    assert trained.exit_code == 0, trained.stderr[-2000:]
    monkeypatch.setenv("AGENTLB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    for command in (["drift"], ["retrain", "--if-drifted"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr.startswith("error:") and "Traceback" not in result.output, result.stderr


def test_train_tune_searches_then_reports_the_search(
    home: Path, history_csv: Path, config_file: Path
) -> None:
    done = CliRunner().invoke(
        app,
        ["train", "--history", str(history_csv), "--config", str(config_file), "--tune", "2", "--no-export"],
    )
    assert done.exit_code == 0, done.stderr[-3000:]
    assert "tuning: 2 trials" in done.stdout
    assert "runs view: http://127.0.0.1:5000/#/experiments/" in done.stdout
