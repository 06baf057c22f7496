"""Hot reload from the MLflow registry: the service follows the champion alias by itself,
off the request path, and requests keep being served while it swaps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agentlb.api import create_app
from agentlb.settings import MODEL_NAME, load_settings
from agentlb.training.config import GateConfig, HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import default_fleet, synthetic_history


def test_service_follows_the_champion_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTLB_MLFLOW_TRACKING_URI", "AGENTLB_DATABASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"models:/{MODEL_NAME}@champion"
    settings = load_settings(home=tmp_path, model_uri=uri, model_poll_interval_s=0.2)
    config = TrainingConfig(
        lightgbm=LightGBMConfig(num_boost_round=40, learning_rate=0.15),
        sklearn_hgb=HGBConfig(max_iter=30, learning_rate=0.2),
        # about hot reload, not the gate: a 300-row holdout's p90 coverage may leave the default band
        gate=GateConfig(coverage_low=0.0, coverage_high=1.0),
    )
    first = run_training(synthetic_history(n_tasks=1500, seed=1), settings=settings, config=config)
    assert first["promoted"], first["decision"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    with TestClient(create_app(settings)) as http:
        model = http.get("/load-balancing/model").json()["predictor"]
        assert model["fallback_reason"] is None
        assert model["source"].startswith(f"models:/{MODEL_NAME}/1 ")
        for agent in default_fleet():
            http.post(
                "/load-balancing/agents",
                json={
                    "id": agent.agent_id,
                    "name": agent.agent_id,
                    "capabilities": ["work"],
                    "max_concurrency": 4,
                },
            )
        # a second version, made champion by an operator (or the gate)
        second = run_training(synthetic_history(n_tasks=1500, seed=2), settings=settings, config=config)
        version = second["registered_version"]
        client.set_registered_model_alias(MODEL_NAME, "champion", str(version))

        deadline = time.monotonic() + 30
        served = 0
        while time.monotonic() < deadline:
            response = http.post(
                "/load-balancing/select-agent",
                json={
                    "task_type": "summarise",
                    "required_capabilities": ["work"],
                    "strategy": "predictive",
                },
            )
            assert response.status_code == 200, response.text
            served += 1
            source = http.get("/load-balancing/model").json()["predictor"]["source"]
            if source.startswith(f"models:/{MODEL_NAME}/{version} "):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the service never picked up the new champion")
        assert served >= 1
        selection = http.post(
            "/load-balancing/select-agent",
            json={
                "task_type": "summarise",
                "required_capabilities": ["work"],
                "strategy": "predictive",
            },
        ).json()
        assert selection["fallback_used"] is False
        assert selection["model_version"] == http.get("/load-balancing/model").json()["predictor"]["version"]


def test_model_endpoint_reports_the_heuristic_fallback(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, model_poll_interval_s=0)
    with TestClient(create_app(settings)) as http:
        body = http.get("/load-balancing/model").json()["predictor"]
        assert body["version"] == "heuristic"
        assert body["fallback_reason"]
        assert http.get("/load-balancing/health").json()["status"] in {"degraded", "unhealthy"}
