"""Train/serve parity: the features serving computes at dispatch equal, column by column, the
features training rebuilds from the exported history."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, FleetSnapshot, TaskOutcome, TaskRequest
from agentlb.features import FeatureSpec
from agentlb.history import read_history, validate_history
from agentlb.store import Store
from agentlb.tracker import AgentLoadTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_serving_features_equal_training_features(tmp_path: Path, suffix: str) -> None:
    clock = Clock()
    store = Store.open(f"sqlite:///{tmp_path / 'agentlb.db'}")
    tracker = AgentLoadTracker(clock)
    for i in range(4):
        agent = Agent(id=f"agent-{i}", name=f"Agent {i}", capabilities=frozenset({"work"}), max_concurrency=2)
        store.add_agent(agent)
        tracker.register(agent, registered_at=0.0)
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=0), seed=5)
    rng = random.Random(5)
    served: dict[str, tuple[TaskRequest, FleetSnapshot, str]] = {}
    open_tasks: list[tuple[str, str, str]] = []
    for i in range(120):
        task = TaskRequest(
            task_type=rng.choice(["detect", "summarise", "triage"]),
            requirements={
                "input_tokens": rng.randint(10, 5000),
                "complexity": rng.choice(["low", "medium", "high"]),
                "priority": rng.choice(["low", "high"]),
            },
            task_id=f"task-{i}",
        )
        snapshot = tracker.snapshot()
        result = balancer.select(task, rng.choice(["hybrid", "least_connection", "predictive"]))
        store.record_dispatch(result)
        served[task.task_id] = (task, snapshot, result.selected_agent.id)
        open_tasks.append((task.task_id, result.selected_agent.id, task.task_type))
        clock.now += rng.uniform(0.1, 1.0)
        if len(open_tasks) > 3 or i == 119:
            while open_tasks:
                task_id, agent_id, task_type = open_tasks.pop(0)
                outcome = TaskOutcome(agent_id, rng.uniform(0.5, 8.0), rng.random() > 0.1, task_id, task_type)
                store.record_outcome(outcome, clock.now)
                balancer.report(outcome)

    path = tmp_path / f"history{suffix}"
    exported = store.history_frame()
    if suffix == ".csv":
        exported.to_csv(path, index=False)
    else:
        exported.to_parquet(path, index=False)
    frame = validate_history(read_history(path)).frame
    assert len(frame) == 120

    spec = FeatureSpec.from_frame(frame)
    assert set(spec.numeric_attributes) == {"input_tokens"}
    assert set(spec.categorical_attributes) == {"complexity", "priority"}
    training = spec.encode_frame(frame)
    for row, task_id in enumerate(frame["task_id"].astype(str)):
        task, snapshot, agent_id = served[task_id]
        state = snapshot.get(agent_id)
        assert state is not None
        serving = spec.encode_candidates(task, [state], snapshot)[0]
        for column, name in enumerate(spec.feature_names):
            want, got = serving[column], training[row, column]
            assert (math.isnan(want) and math.isnan(got)) or np.isclose(want, got, rtol=1e-12), (
                f"{task_id} {name}: serving {want} != training {got}"
            )
    store.close()
