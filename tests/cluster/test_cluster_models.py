"""Models across replicas: every replica of a cluster follows the registry alias of an MLflow
tracking server on PostgreSQL, and a promotion reaches all of them within the poll interval
while clients keep selecting through the front, without one failed request."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_support import ClusterResources, RunningCluster, Traffic

from agentlb.settings import MODEL_NAME, load_settings
from agentlb.training.config import GateConfig, HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import default_fleet, synthetic_history
from live_server import free_port
from postgres_support import OwnDatabase

POLL_INTERVAL_S = 2.0
# what a replica needs after its poll sees the alias move: download the bundle from the server
# and load two LightGBM boosters (well under a second idle; seconds on a busy shared machine)
LOAD_ALLOWANCE_S = 8.0
MLFLOW_START_TIMEOUT_S = 120.0
TRAINING = TrainingConfig(
    lightgbm=LightGBMConfig(num_boost_round=40, learning_rate=0.15),
    sklearn_hgb=HGBConfig(max_iter=30, learning_rate=0.2),
    # about promotions reaching replicas, not the gate: a small holdout's p90 coverage may leave the band
    gate=GateConfig(coverage_low=0.0, coverage_high=1.0),
)
REPLICA_LINE = re.compile(r"(replica-\d+): (http://\S+) ")


class TrackingServer:
    """`mlflow server` with its backend store in a PostgreSQL database of the test's own and
    artifacts proxied by the server (replicas need no shared disk)."""

    def __init__(self, home: Path, database: OwnDatabase) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "mlflow-server.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                database.url,
                "--default-artifact-root",
                "mlflow-artifacts:/",
                "--artifacts-destination",
                str(home / "mlflow-artifacts"),
            ],
            cwd=home,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTLB_", "MLFLOW_"))},
                "MLFLOW_DISABLE_TELEMETRY": "true",
            },
        )
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"mlflow server did not answer: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def tracking_server(tmp_path: Path, resources: ClusterResources) -> Iterator[TrackingServer]:
    database = OwnDatabase("agentlb_mlflow")
    server = None
    try:
        server = TrackingServer(tmp_path, database)
        yield server
    finally:
        if server is not None:
            server.stop()
        database.drop()


def serving(replica_url: str) -> dict[str, Any]:
    predictor: dict[str, Any] = httpx.get(f"{replica_url}/load-balancing/model", timeout=10).json()[
        "predictor"
    ]
    return predictor


@pytest.mark.slow
@pytest.mark.postgres
def test_promotion_reaches_every_replica_within_the_poll_interval_without_failed_requests(
    tmp_path: Path,
    resources: ClusterResources,
    tracking_server: TrackingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"models:/{MODEL_NAME}@champion"
    trainer = load_settings(home=tmp_path / "trainer", mlflow_tracking_uri=tracking_server.url, model_uri=uri)
    first = run_training(synthetic_history(n_tasks=1500, seed=1), settings=trainer, config=TRAINING)
    assert first["promoted"], first
    # the next version, registered now (the gate may make it champion: the operator sets the
    # alias back), so that the promotion below is one alias move at a known instant
    second = run_training(synthetic_history(n_tasks=1500, seed=2), settings=trainer, config=TRAINING)
    version = str(second["registered_version"])
    new_model_version = str(second["model_version"])
    from mlflow.tracking import MlflowClient

    registry = MlflowClient(tracking_uri=tracking_server.url)
    registry.set_registered_model_alias(MODEL_NAME, "champion", str(first["registered_version"]))

    home = tmp_path / "cluster"
    home.mkdir()
    cluster = RunningCluster(
        home,
        resources.database.url,
        resources.prefix,
        replicas=2,
        AGENTLB_MODEL_URI=uri,
        AGENTLB_MLFLOW_TRACKING_URI=tracking_server.url,
        AGENTLB_MODEL_POLL_INTERVAL_S=str(POLL_INTERVAL_S),
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    clients: Traffic | None = None
    try:
        replicas = dict(REPLICA_LINE.findall(cluster.output()))
        assert set(replicas) == {"replica-0", "replica-1"}, cluster.output()
        for name, url in replicas.items():
            model = serving(url)
            assert model["fallback_reason"] is None, (name, model)
            assert model["source"].startswith(f"models:/{MODEL_NAME}/1 "), (name, model)
        with httpx.Client(base_url=cluster.url, timeout=10) as http:
            for agent in default_fleet():
                response = http.post(
                    "/load-balancing/agents",
                    json={
                        "id": agent.agent_id,
                        "name": agent.agent_id,
                        "capabilities": ["work"],
                        "max_concurrency": 4,
                    },
                )
                assert response.status_code == 201, response.text

        clients = Traffic(
            cluster.url,
            {"task_type": "summarise", "required_capabilities": ["work"], "strategy": "predictive"},
        )
        time.sleep(1.0)  # clients under way on the first version
        registry.set_registered_model_alias(MODEL_NAME, "champion", version)
        promoted_at = time.monotonic()
        reached_after_s: dict[str, float] = {}
        deadline = promoted_at + POLL_INTERVAL_S + LOAD_ALLOWANCE_S + 30
        while len(reached_after_s) < len(replicas) and time.monotonic() < deadline:
            for name, url in replicas.items():
                if name not in reached_after_s and serving(url)["source"].startswith(
                    f"models:/{MODEL_NAME}/{version} "
                ):
                    reached_after_s[name] = time.monotonic() - promoted_at
            time.sleep(0.05)
        time.sleep(1.0)  # traffic on the new model at every replica
        clients.finish()
        print(f"promotion to version {version} reached the replicas after {reached_after_s} s")

        assert set(reached_after_s) == set(replicas), (
            f"not every replica loaded version {version}: {reached_after_s}"
        )
        assert max(reached_after_s.values()) <= POLL_INTERVAL_S + LOAD_ALLOWANCE_S, reached_after_s
        assert clients.failures == [], clients.failures[:5]
        assert clients.versions[new_model_version] > 0 and len(clients.versions) == 2, clients.versions
        assert clients.last_version == {name: new_model_version for name in replicas}, clients.last_version
    finally:
        if clients is not None:
            clients.finish()
        cluster.signal(signal.SIGTERM)
        try:
            cluster.wait(timeout_s=60)
        finally:
            if cluster.process.poll() is None:
                cluster.kill_all()
