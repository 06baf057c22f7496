"""Shadow scoring and the live gate: a challenger predicts real selections of a running service
without deciding them, and is promoted only when its live error holds up."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.predictor.model import ModelPredictor
from agentlb.service import AgentLBService
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.store import Store
from agentlb.store.shadow import ShadowRecords
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.live_gate import promote_challenger
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import COMPLEXITY, NOISE_SIGMA, TASK_TYPES, default_fleet

CHAMPION = f"models:/{MODEL_NAME}@champion"
CHALLENGER = f"models:/{MODEL_NAME}@challenger"


def weak(config: TrainingConfig) -> TrainingConfig:
    return config.replace(
        lightgbm=LightGBMConfig(num_boost_round=3, num_leaves=2, learning_rate=0.1),
        sklearn_hgb=HGBConfig(enabled=False),
    )


def serve_live_tasks(settings: Settings, n: int, seed: int) -> dict[str, float]:
    """A running service (champion serving, challenger in the shadow) on the synthetic fleet:
    n selections, each reported with the duration the fleet's hidden truth gives it."""
    now = [1_700_000_000.0]
    service = AgentLBService.open(settings, clock=lambda: now[0])
    try:
        fleet = {a.agent_id: a for a in default_fleet(seed=1)}
        for agent in fleet.values():
            service.register_agent(
                Agent(id=agent.agent_id, name=agent.agent_id, max_concurrency=agent.max_concurrency)
            )
        assert service.shadow is not None and service.shadow.model is not None, (
            service.shadow and service.shadow.reason
        )
        rng = random.Random(seed)
        for i in range(n):
            task_type = rng.choice(list(TASK_TYPES))
            complexity = rng.choice(list(COMPLEXITY))
            tokens = int(math.exp(rng.gauss(math.log(1000), 0.6)))
            task = TaskRequest(
                task_type,
                requirements={"input_tokens": tokens, "complexity": complexity, "priority": 2},
                task_id=f"live-{seed}-{i}",
            )
            result = service.select(task, strategy="predictive")
            agent = fleet[result.selected_agent.id]
            size = TASK_TYPES[task_type] * (tokens / 1000.0) ** 0.7 * COMPLEXITY[complexity]
            duration = size / agent.speed_by_type[task_type] * math.exp(rng.gauss(0.0, NOISE_SIGMA))
            now[0] += duration / 4
            service.report_outcome(TaskOutcome(agent.agent_id, duration, True, task.task_id, task_type))
        service.shadow.flush(wait=True)
        evidence = service.shadow.evidence()
        assert evidence is not None
        return evidence.as_dict()
    finally:
        service.close()


@pytest.mark.slow
def test_a_worse_challenger_is_not_promoted_on_live_evidence_and_a_better_one_is(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    middling = fast_config.replace(
        lightgbm=LightGBMConfig(num_boost_round=12, num_leaves=4, learning_rate=0.1),
        sklearn_hgb=HGBConfig(enabled=False),
    )
    assert run_training(history, settings=settings, config=middling)["promoted"]  # v1, the first champion
    worse = run_training(history, settings=settings, config=weak(fast_config))  # v2, challenger only
    assert not worse["promoted"]
    monkeypatch.setenv("AGENTLB_MODEL_URI", CHAMPION)
    monkeypatch.setenv("AGENTLB_SHADOW_MODEL_URI", CHALLENGER)
    monkeypatch.setenv("AGENTLB_PROMOTION_MIN_LIVE_TASKS", "150")
    live = load_settings()

    evidence = serve_live_tasks(live, 200, seed=5)
    assert evidence["model_version"] == "v2" and evidence["tasks"] == 200
    assert evidence["champion_versions"] == ["v1"]
    assert evidence["challenger_mae_s"] > evidence["champion_mae_s"]
    decision = promote_challenger(live)
    assert not decision["promoted"] and "worse" in decision["reason"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"

    # a better model passes the offline gate but now waits for live evidence (v3, challenger)
    monkeypatch.setenv("AGENTLB_SHADOW_MODEL_URI", CHALLENGER)
    better = run_training(
        history, settings=live, config=fast_config.replace(sklearn_hgb=HGBConfig(enabled=False))
    )
    assert better["decision"].get("awaiting_live_evidence"), better["decision"]
    assert not better["promoted"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    early = promote_challenger(live)
    assert not early["promoted"] and "on 0 of the 150 tasks required" in early["reason"]
    store = Store.open(live.db_url)
    try:
        assert ShadowRecords(store).evidence(better["model_version"]).tasks == 0
    finally:
        store.close()
    # the same comparison on the same live tasks, now for the stronger challenger against v1
    v3 = serve_live_tasks(live, 200, seed=6)
    assert v3["model_version"] == better["model_version"]
    assert v3["challenger_mae_s"] <= v3["champion_mae_s"], v3
    assert promote_challenger(live)["promoted"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == str(
        better["registered_version"]
    )
    assert ModelPredictor.from_bundle(live.models_dir / "champion").version == better["model_version"]


def test_background_scoring_gives_the_serving_numbers(
    settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig
) -> None:
    import numpy as np

    run_training(history, settings=settings, config=fast_config.replace(sklearn_hgb=HGBConfig(enabled=False)))
    model = ModelPredictor.from_bundle(settings.models_dir / "champion")
    matrix = np.ascontiguousarray(model.spec.encode_frame(history.head(300)))
    served, background = model.predict_matrix(matrix), model.predict_matrix_in_background(matrix)
    np.testing.assert_allclose(background.p50_s, served.p50_s, rtol=1e-12)
    np.testing.assert_allclose(background.p90_s, served.p90_s, rtol=1e-12)
