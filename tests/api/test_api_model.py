"""A trained model served by the API: reload by endpoint and by polling the bundle."""

from __future__ import annotations

import random

from api_support import ClientFactory
from fastapi.testclient import TestClient

from agentlb.training.bundle import export_bundle
from agentlb.training.quick import fit_predictor

AGENTS = [{"id": f"a{i}", "name": f"A{i}", "capabilities": ["work"], "max_concurrency": 8} for i in range(4)]


def generate_history(client: TestClient, n: int) -> None:
    rng = random.Random(5)
    for i in range(n):
        task_type = ("small", "large")[i % 2]
        chosen = client.post(
            "/load-balancing/select-agent",
            json={
                "task_type": task_type,
                "required_capabilities": ["work"],
                "strategy": "round_robin",
                "task_requirements": {"size": 1 + i % 5},
            },
        ).json()
        agent = int(chosen["selected_agent_id"][1:])
        duration = (1 + i % 5) * (3.0 if task_type == "large" else 1.0) * (1 + agent) * rng.uniform(0.9, 1.1)
        client.post(
            "/load-balancing/update-performance",
            json={
                "agent_id": chosen["selected_agent_id"],
                "task_id": chosen["task_id"],
                "task_duration": duration,
            },
        )


def test_reload_serves_the_trained_model(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start()
    for agent in AGENTS:
        client.post("/load-balancing/agents", json=agent)
    generate_history(client, 120)
    service = client.app.state.service  # type: ignore[attr-defined]
    model = fit_predictor(service.store.history_frame(), seed=1)
    settings = service.settings
    export_bundle(settings.models_dir, model.p50_booster, model.p90_booster, model.spec, model.version, {})

    reloaded = client.post("/load-balancing/model/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["predictor"]["version"] == model.version
    chosen = client.post(
        "/load-balancing/select-agent",
        json={
            "task_type": "large",
            "required_capabilities": ["work"],
            "strategy": "predictive",
            "task_requirements": {"size": 3},
            "top_k": 3,
        },
    ).json()
    assert chosen["model_version"] == model.version
    assert chosen["fallback_used"] is False
    # a0 is four times faster than a3; 120 rows teach the model the direction
    predicted = {a["agent_id"]: a["predicted_p50_s"] for a in chosen["alternative_agents"]}
    predicted[chosen["selected_agent_id"]] = chosen["predicted_completion_s"]["p50"]
    assert predicted["a0"] < predicted["a3"]
    health = client.get("/load-balancing/health").json()
    assert not any("model unavailable" in r for r in health["reasons"])
    assert service.store.deployments()[0]["version"] == model.version
    # the model's drift report: one completed task so far, too few to tell
    client.post(
        "/load-balancing/update-performance",
        json={"agent_id": chosen["selected_agent_id"], "task_id": chosen["task_id"], "task_duration": 2.0},
    )
    drift = client.get("/load-balancing/model").json()["predictor"]["drift"]
    assert drift["model_version"] == model.version and drift["samples"] == 1
    assert drift["drifted"] is None and "200 needed" in drift["reasons"][0]


def test_poll_picks_up_a_new_bundle_and_a_restart_loads_it(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start()
    for agent in AGENTS:
        client.post("/load-balancing/agents", json=agent)
    generate_history(client, 60)
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.poll_model() is False  # no bundle yet: nothing changes
    model = fit_predictor(service.store.history_frame(), seed=2)
    export_bundle(
        service.settings.models_dir, model.p50_booster, model.p90_booster, model.spec, model.version, {}
    )
    assert service.poll_model() is True
    assert service.predictor.current.version == model.version
    assert service.poll_model() is False  # same version: no reload
    sqlite_factory.stop(client)
    restarted = sqlite_factory.start()
    assert restarted.get("/load-balancing/health").json()["predictor"]["version"] == model.version


def test_reloaded_model_is_compiled_off_the_request_path(sqlite_factory: ClientFactory) -> None:
    client = sqlite_factory.start(model_compile=True)
    for agent in AGENTS:
        client.post("/load-balancing/agents", json=agent)
    generate_history(client, 120)
    service = client.app.state.service  # type: ignore[attr-defined]
    model = fit_predictor(service.store.history_frame(), seed=1)
    export_bundle(service.settings.models_dir, model.p50_booster, model.p90_booster, model.spec, "v9", {})

    reloaded = client.post("/load-balancing/model/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["predictor"]["version"] == "v9"
    assert service.compile_thread is not None
    service.compile_thread.join(120)
    info = client.get("/load-balancing/model").json()["predictor"]
    assert info["version"] == "v9" and info["evaluator"] == "compiled"
    chosen = client.post(
        "/load-balancing/select-agent",
        json={"task_type": "large", "required_capabilities": ["work"], "strategy": "predictive"},
    ).json()
    assert chosen["model_version"] == "v9" and chosen["fallback_used"] is False
    assert chosen["predicted_completion_s"]["p50"] > 0
