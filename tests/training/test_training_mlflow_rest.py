"""The runs, registered versions and aliases are what a tracking server (and so the MLflow UI)
shows: start `mlflow server` on a free loopback port and ask its REST API."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from agentlb.settings import MODEL_NAME, Settings
from agentlb.training.config import HGBConfig, TrainingConfig
from agentlb.training.pipeline import run_training

SERVER_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


@contextlib.contextmanager
def mlflow_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on the test's tracking DB; bounded start-up wait, always stopped."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log_path = tmp_path / "mlflow-server.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                settings.tracking_uri,
                "--default-artifact-root",
                settings.mlflow_artifacts_dir.as_uri(),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_runs_versions_and_aliases_through_the_rest_api(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig, tmp_path: Path
) -> None:
    config = fast_config.replace(sklearn_hgb=HGBConfig(enabled=False))
    summary = run_training(history, settings=settings, config=config)
    with mlflow_server(settings, tmp_path) as base:
        experiment = _request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=agentlb-completion-time"
        )
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = _request(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
        names = {r["info"]["run_name"] for r in runs}
        assert names == {c["name"] for c in summary["candidates"]}
        lightgbm = next(r for r in runs if r["info"]["run_name"] == "lightgbm")
        metrics = {m["key"]: m["value"] for m in lightgbm["data"]["metrics"]}
        assert metrics["mae"] == pytest.approx(summary["candidates"][-1]["mae"])
        alias = _request(f"{base}/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}&alias=champion")
        version = alias["model_version"]
        assert version["version"] == "1" and version["run_id"] == lightgbm["info"]["run_id"]
        assert "challenger" in version["aliases"] and "champion" in version["aliases"]
        # the serving side can load the champion through the tracking server, too
        from agentlb.predictor.model import ModelPredictor

        served = ModelPredictor.from_uri(f"models:/{MODEL_NAME}@champion", tracking_uri=base)
        assert served.version == "v1"
