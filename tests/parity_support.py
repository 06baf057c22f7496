"""Train/serve parity, shared by the feature parity test and the tests of trained bundles: tasks
dispatched by the real Balancer with their outcomes recorded in a store, the store's history
exported to a file and read back as training reads it, and what serving computed at each
dispatch kept for comparison."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, FleetSnapshot, TaskOutcome, TaskRequest
from agentlb.features import FeatureSpec
from agentlb.history import read_history, validate_history
from agentlb.store import Store
from agentlb.tracker import AgentLoadTracker

Served = dict[str, tuple[TaskRequest, FleetSnapshot, str]]
TASK_TYPES = ("detect", "summarise", "triage")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def record_dispatches(
    tmp_path: Path,
    suffix: str,
    task_types: Sequence[str] = TASK_TYPES,
    agent_ids: Sequence[str] = (),
    cached_on_some: bool = False,
) -> tuple[pd.DataFrame, Served]:
    """120 dispatches on four agents: the validated history read back from a `suffix` file and,
    per task id, the task, the snapshot serving scored it on and the chosen agent. With
    `cached_on_some`, two tasks in three have a true/false attribute `cached`."""
    clock = Clock()
    store = Store.open(f"sqlite:///{tmp_path / 'agentlb.db'}")
    tracker = AgentLoadTracker(clock)
    for agent_id in agent_ids or [f"agent-{i}" for i in range(4)]:
        agent = Agent(id=agent_id, name=agent_id, capabilities=frozenset({"work"}), max_concurrency=2)
        store.add_agent(agent)
        tracker.register(agent, registered_at=0.0)
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=0), seed=5)
    rng = random.Random(5)
    served: Served = {}
    open_tasks: list[tuple[str, str, str]] = []
    for i in range(120):
        task = TaskRequest(
            task_type=rng.choice(list(task_types)),
            requirements={
                "input_tokens": rng.randint(10, 5000),
                "complexity": rng.choice(["low", "medium", "high"]),
                "priority": rng.choice(["low", "high"]),
            },
            task_id=f"task-{i}",
        )
        if cached_on_some and i % 3:
            task = replace(task, requirements={**task.requirements, "cached": i % 2 == 0})
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
    store.close()
    if suffix == ".csv":
        exported.to_csv(path, index=False)
    else:
        exported.to_parquet(path, index=False)
    return validate_history(read_history(path)).frame, served


def assert_serving_equals_training(spec: FeatureSpec, frame: pd.DataFrame, served: Served) -> None:
    """Every feature serving computed for a dispatch equals what training encodes for its row."""
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
