"""A real Prometheus scraping two real `agentlb serve` processes under load, with the rules of
deploy/prometheus (`for:` shortened to seconds in this test's copy only).

Replica A serves a trained model, replica B a broken model path (the heuristic stands in).
Every dashboard panel query and every recording rule returns data through Prometheus's HTTP
API, every metric the rules and panels name is exported, and the spec's three alerts are
provoked for real and fire: an agent failing until ejected (LoadBalancingSystemDown on A),
model-backed selections through B's broken model (HighFallbackRate), and a fleet whose only
capable agent for a task type fills up (HighAgentLoadImbalance).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentlb.mixin import dashboards, rules
from agentlb.settings import load_settings
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import synthetic_history
from live_server import BIN, ServerProcess, free_port, server_env

pytestmark = pytest.mark.slow

SPEC_ALERTS = ("HighAgentLoadImbalance", "LoadBalancingSystemDown", "HighFallbackRate")
WORKERS = [
    {"id": f"work-{i}", "name": f"Work {i}", "capabilities": ["work"], "max_concurrency": 8} for i in range(4)
]
SPECIAL = {"id": "special-1", "name": "Special", "capabilities": ["special"], "max_concurrency": 2}
FLAKY = {"id": "flaky-1", "name": "Flaky", "capabilities": ["flaky"], "max_concurrency": 8}
EJECT_AFTER_FAILURES = 3


class Prometheus:
    """`prometheus` on a free loopback port with the given config; ready once /-/ready answers."""

    def __init__(self, config: Path, data: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: `make prometheus` installs the Debian package")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (data.parent / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (data.parent / "prometheus.log").read_text()
            try:
                if httpx.get(f"{self.base}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.base}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def firing(self) -> list[dict[str, Any]]:
        alerts = httpx.get(f"{self.base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()


class Load:
    """select -> outcome cycles against each server until stopped (a few per second)."""

    def __init__(self, targets: list[tuple[str, str]]) -> None:
        self.targets = targets
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        rng = random.Random(7)
        with httpx.Client(timeout=10) as http:
            while not self.stop_event.is_set():
                for base, strategy in self.targets:
                    chosen = http.post(
                        f"{base}/load-balancing/select-agent",
                        json={
                            "task_type": "summarise",
                            "required_capabilities": ["work"],
                            "strategy": strategy,
                        },
                    )
                    if chosen.status_code != 200:
                        self.errors.append(chosen.text)
                        continue
                    body = chosen.json()
                    http.post(
                        f"{base}/load-balancing/update-performance",
                        json={
                            "agent_id": body["selected_agent_id"],
                            "task_id": body["task_id"],
                            "task_duration": rng.uniform(0.5, 4.0),
                            "success": True,
                        },
                    )
                self.stop_event.wait(0.05)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


def _wait(description: str, missing: Any, timeout_s: float) -> None:
    """Poll `missing()` (what is not there yet) until it is empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = missing()
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{description} after {timeout_s:.0f} s: {sorted(left)}")
        time.sleep(0.5)


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for thing in reversed(started):
        thing.stop()


def _train_bundle(home: Path) -> str:
    settings = load_settings(home=home)
    config = TrainingConfig(
        lightgbm=LightGBMConfig(num_boost_round=30, learning_rate=0.2),
        sklearn_hgb=HGBConfig(max_iter=20, learning_rate=0.3),
    )
    summary = run_training(synthetic_history(n_tasks=1200, seed=3), settings=settings, config=config)
    assert summary["bundle_path"], summary
    return str(summary["bundle_path"])


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bload_balancer_[a-z_]+\b", expr))
    return {n for n in names if not n.endswith("_")}


def test_dashboards_rules_and_spec_alerts_against_a_real_prometheus(
    tmp_path: Path, cleanup: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AGENTLB_MLFLOW_TRACKING_URI", "AGENTLB_DATABASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    home_a.mkdir()
    home_b.mkdir()
    bundle = _train_bundle(home_a)
    (home_b / "broken-model").write_text("not a model\n")
    common = {
        "AGENTLB_EXPERIMENT_UPKEEP_INTERVAL_S": "1",
        "AGENTLB_EJECTION_CONSECUTIVE_FAILURES": str(EJECT_AFTER_FAILURES),
        "AGENTLB_EJECTION_BASE_TIME_S": "600",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    serve = [str(BIN / "agentlb"), "serve"]
    a = ServerProcess(serve, home_a, server_env(home_a, AGENTLB_MODEL_URI=bundle, **common))
    cleanup.append(a)
    b = ServerProcess(
        serve, home_b, server_env(home_b, AGENTLB_MODEL_URI=str(home_b / "broken-model"), **common)
    )
    cleanup.append(b)
    for server in (a, b):
        for agent in [*WORKERS, SPECIAL, FLAKY]:
            assert httpx.post(f"{server.base}/load-balancing/agents", json=agent).status_code == 201
    assert httpx.get(f"{a.base}/load-balancing/model").json()["predictor"]["fallback_reason"] is None
    assert httpx.get(f"{b.base}/load-balancing/model").json()["predictor"]["fallback_reason"]

    # Prometheus: this test's copy of the rules, with `for:` of seconds and 1 s intervals.
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "recording.yml").write_text(yaml.safe_dump(rules.recording_rules()))
    (prom_dir / "alerts.yml").write_text(yaml.safe_dump(rules.alert_rules(for_override="2s")))
    config = rules.prometheus_config(a.base.removeprefix("http://"), "1s", "1s")
    config["scrape_configs"][0]["static_configs"][0]["targets"].append(b.base.removeprefix("http://"))
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = Prometheus(prom_dir / "prometheus.yml", prom_dir / "data")
    cleanup.append(prometheus)

    # Load on both: A selects with hybrid (its model), B with predictive (through its broken model).
    load = Load([(a.base, "hybrid"), (b.base, "predictive")])
    cleanup.append(load)
    instance_a = a.base.removeprefix("http://")

    # Before any fault, A is healthy and Prometheus sees it so.
    assert httpx.get(f"{a.base}/load-balancing/health").json()["status"] == "healthy"
    _wait(
        "A not seen healthy by Prometheus",
        lambda: (
            []
            if prometheus.query(
                f'load_balancer_health_status{{instance="{instance_a}", status="healthy"}} == 1'
            )
            else ["A"]
        ),
        20,
    )
    assert not [f for f in prometheus.firing() if f["labels"].get("instance") == instance_a]

    # Provoke: the only `special` agent fills its slots (imbalance), `flaky` fails until ejected,
    # and a task nobody can take is refused (a select error).
    with httpx.Client(base_url=a.base, timeout=10) as http:
        for _ in range(SPECIAL["max_concurrency"]):
            chosen = http.post(
                "/load-balancing/select-agent",
                json={"task_type": "render", "required_capabilities": ["special"]},
            )
            assert chosen.json()["selected_agent_id"] == "special-1"
        for _ in range(EJECT_AFTER_FAILURES):
            chosen = http.post(
                "/load-balancing/select-agent",
                json={"task_type": "fetch", "required_capabilities": ["flaky"]},
            ).json()
            receipt = http.post(
                "/load-balancing/update-performance",
                json={
                    "agent_id": "flaky-1",
                    "task_id": chosen["task_id"],
                    "task_duration": 1.0,
                    "success": False,
                },
            ).json()
        assert receipt["ejected"] is True
        assert http.get("/load-balancing/health").json()["status"] == "degraded"
        refused = http.post(
            "/load-balancing/select-agent",
            json={"task_type": "x", "required_capabilities": ["nobody-has-this"]},
        )
        assert refused.status_code == 409
        # An online experiment on A: selections that name no strategy go to its arms.
        experiment = {
            "name": "wrr vs lc",
            "arms": [
                {"name": "control", "strategy": "weighted_round_robin", "share": 0.5},
                {"name": "lc", "strategy": "least_connection", "share": 0.5},
            ],
            "task_types": ["job"],
        }
        assert http.post("/load-balancing/experiments", json=experiment).status_code == 201
        for _ in range(20):
            chosen = http.post(
                "/load-balancing/select-agent", json={"task_type": "job", "required_capabilities": ["work"]}
            ).json()
            assert chosen["experiment"] is not None
            outcome = {
                "agent_id": chosen["selected_agent_id"],
                "task_id": chosen["task_id"],
                "task_duration": 0.5,
            }
            assert http.post("/load-balancing/update-performance", json=outcome).status_code == 200

    # Every panel query and every recording rule returns data; every metric named is exported.
    queries = [
        (f"{uid} / {title}", expr.replace("$__rate_interval", "1m"))
        for uid, title, expr in dashboards.panel_queries()
    ]
    queries += [(f"recording {r.record}", r.expr) for r in rules.RECORDING]
    queries += [(f"recorded {r.record}", r.record) for r in rules.RECORDING]
    _wait(
        "queries still without data",
        lambda: [label for label, expr in queries if not prometheus.query(expr)],
        45,
    )
    exported = set(httpx.get(f"{prometheus.base}/api/v1/label/__name__/values").json()["data"])
    named = set().union(
        *(_metric_names(e) for _, e in queries), *(_metric_names(al.expr) for al in rules.ALERTS)
    )
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    for alert in rules.ALERTS:  # each alert expression evaluates (most are silent here)
        prometheus.query(alert.expr)

    # The spec's three alerts fire, LoadBalancingSystemDown for A (the ejected agent).
    def missing() -> set[str]:
        firing = prometheus.firing()
        names = {f["labels"]["alertname"] for f in firing}
        down_a = any(
            f["labels"]["alertname"] == "LoadBalancingSystemDown"
            and f["labels"].get("instance") == instance_a
            for f in firing
        )
        return (set(SPEC_ALERTS) - names) | (set() if down_a else {"LoadBalancingSystemDown on A"})

    _wait("spec alerts still not firing", missing, 40)
    firing = {f["labels"]["alertname"]: f for f in prometheus.firing()}
    down_a = next(
        f
        for f in prometheus.firing()
        if f["labels"]["alertname"] == "LoadBalancingSystemDown" and f["labels"].get("instance") == instance_a
    )
    assert down_a["labels"]["status"] == "degraded"
    assert "ejected agents: flaky-1" in down_a["annotations"]["description"]
    assert "special-1" in firing["HighAgentLoadImbalance"]["annotations"]["description"]
    assert "predictive" in firing["HighFallbackRate"]["annotations"]["description"]
    assert "AgentLBModelFallback" in firing  # B serves the heuristic
    assert not load.errors[:3], load.errors[:3]
