"""Train/serve parity: the features serving computed for a dispatch are, after a round trip
through a history file and validation, exactly the features training builds for that row."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.features import FeatureSpec
from agentlb.history import read_history, validate_history
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.tracker import AgentLoadTracker


def test_serving_features_equal_training_features(tmp_path: Path, history: pd.DataFrame) -> None:
    spec = FeatureSpec.from_frame(history)
    now = [0.0]
    tracker = AgentLoadTracker(clock=lambda: now[0])
    for i in range(4):
        tracker.register(Agent(id=f"agent-{i}", name=f"a{i}", max_concurrency=2), registered_at=0.0)
    tracker.heartbeat("agent-1", 55.0, 30.0, 2)
    balancer = Balancer(tracker, PredictorRef(HeuristicPredictor()), BalancerConfig(slow_start_window_s=0.0))
    rng = random.Random(4)
    served: list[np.ndarray] = []
    rows: list[dict[str, object]] = []
    for i in range(80):
        now[0] += rng.uniform(0.1, 2.0)
        task = TaskRequest(
            rng.choice(["video_analysis", "text_analysis", "brand_new_type"]),
            requirements={
                "input_tokens": rng.randint(100, 3000),
                "complexity": rng.choice(["low", "high", "odd"]),
                "priority": rng.randint(1, 3),
            },
            task_id=f"p{i}",
        )
        snapshot = tracker.snapshot()
        result = balancer.select(task, "random")
        state = snapshot.by_id()[result.selected_agent.id]
        served.append(spec.encode_candidates(task, [state], snapshot)[0])
        duration = rng.uniform(0.5, 6.0)
        rows.append(
            {
                "task_id": task.task_id,
                "arrival_time": now[0],
                "agent_id": result.selected_agent.id,
                "success": True,
                "duration_s": duration,
                **result.dispatch_features,
            }
        )
        if i % 3:
            balancer.report(
                TaskOutcome(result.selected_agent.id, duration, True, task.task_id, task.task_type),
                finished_at=now[0],
            )
    path = tmp_path / "exported.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    trained = spec.encode_frame(validate_history(read_history(path)).frame)
    serving = np.vstack(served)
    for j, name in enumerate(spec.feature_names):
        np.testing.assert_allclose(trained[:, j], serving[:, j], rtol=1e-12, equal_nan=True, err_msg=name)
    assert np.isfinite(serving[:, spec.feature_names.index("agent_ewma_type_s")]).any()
