"""A fresh installation ends with a model-backed service (`make serve` runs this bootstrap)."""

from __future__ import annotations

import shutil
from pathlib import Path

from agentlb.domain import TaskRequest
from agentlb.first_model import ensure_first_model
from agentlb.predictor.model import ModelPredictor
from agentlb.settings import load_settings
from agentlb.tracker import AgentLoadTracker

REPO = Path(__file__).resolve().parents[2]


def test_first_model_is_trained_once_and_serves(tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    shutil.copy(REPO / "examples" / "fleet.yaml", fleet_file)
    settings = load_settings(home=tmp_path)
    stages: list[float] = []

    first = ensure_first_model(settings, fleet_file, lambda _m, f: stages.append(f), tasks=3000)
    assert first.trained and first.model_version is not None
    assert stages[0] == 0.0 and stages[-1] == 1.0 and stages == sorted(stages)

    again = ensure_first_model(settings, fleet_file, tasks=3000)
    assert not again.trained and again.model_version == first.model_version

    predictor = ModelPredictor.from_bundle(settings.models_dir / "champion")
    from agentlb.sim.fleet import fleet_agents

    tracker = AgentLoadTracker()
    for agent in fleet_agents(fleet_file):
        tracker.register(agent)
    snapshot = tracker.snapshot()
    vision = [s for s in snapshot.agents if "video_analysis" in s.agent.capabilities]
    service = predictor.predict_service(
        TaskRequest(task_type="video_analysis", requirements={"input_tokens": 4000, "complexity": "high"}),
        vision,
        snapshot,
    )
    by_agent = dict(zip([s.agent.id for s in vision], service.p50_s, strict=True))
    # the demo fleet's GPU agent is 4x the CPU agent on video analysis; the model learned it
    assert by_agent["vision-gpu-1"] < by_agent["vision-cpu-1"]
    assert all(service.p90_s >= service.p50_s)
