"""The live weight bandit: Thompson sampling that keeps exploration bounded, settles on the
fastest arm, and (in a service) applies its hybrid weights."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.experiments.bandit import ThompsonAllocator
from agentlb.experiments.design import THOMPSON, Arm, design
from agentlb.service import AgentLBService
from agentlb.settings import load_settings
from agentlb.sim.experiment import simulate_experiment


def test_the_allocator_settles_on_the_fastest_arm_and_keeps_every_arm_explored() -> None:
    rng = random.Random(0)
    means = {"a": 1.0, "b": 1.25, "c": 1.5}
    allocator = ThompsonAllocator(list(means), min_share=0.05, seed=1)
    chosen = []
    for _ in range(3000):
        arm = allocator.choose()
        chosen.append(arm)
        allocator.observe(arm, rng.expovariate(1.0 / means[arm]))
    late = chosen[1000:]
    assert late.count("a") / len(late) > 0.7
    for arm in ("b", "c"):  # bounded exploration: every arm keeps at least its floor share
        assert late.count(arm) / len(late) >= 0.04
    settled = allocator.settled(0.95)
    assert settled is not None and settled[0] == "a"


def test_in_the_simulator_the_bandit_sends_most_traffic_to_the_better_weights() -> None:
    plan = design(
        "weights",
        [
            Arm("wrr", "hybrid", 0.5, weights={"weighted_round_robin": 1.0}),  # round robin
            Arm("default", "hybrid", 0.5, weights={"weighted_round_robin": 0.25, "predictive": 0.75}),
        ],
        allocation=THOMPSON,
    )
    run = simulate_experiment("heterogeneous", plan, seed=3, tasks=3000)
    arms = {a["name"]: a for a in run.report["arms"]}
    assert arms["default"]["mean_completion_s"] < arms["wrr"]["mean_completion_s"]
    assert arms["default"]["tasks"] > 5 * arms["wrr"]["tasks"]
    assert run.report["verdict"]["decided"] and run.report["verdict"]["winner"] == "default"


def test_a_service_with_the_weight_bandit_applies_the_settled_weights(tmp_path: Path) -> None:
    fast = {"least_connection": 0.5, "predictive": 0.5}
    slow = {"weighted_round_robin": 1.0}
    settings = load_settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'agentlb.db'}",
        model_uri=str(tmp_path / "none"),
        model_poll_interval_s=0,
        weight_bandit=True,
        weight_bandit_candidates=[slow, fast],
        seed=1,
    )
    now = [1_000.0]
    service = AgentLBService.open(settings, clock=lambda: now[0])
    try:
        for i in range(3):
            service.register_agent(Agent(id=f"a{i}", name=f"a{i}", max_concurrency=1000))
        [bandit] = service.experiments.list("running")
        assert bandit.design.allocation == THOMPSON
        rng = random.Random(2)
        for i in range(400):
            result = service.select(TaskRequest("t", task_id=f"task-{i}"))
            assert result.experiment is not None
            weights = bandit.design.arms[int(result.experiment.arm[1:])].weights
            now[0] += rng.expovariate(1.0 if weights == pytest.approx(fast) else 0.5)
            service.report_outcome(TaskOutcome(result.selected_agent.id, 0.5, True, result.task_id, "t"))
        service.experiments.upkeep()
        finished = service.experiments.get(bandit.id)
        assert finished.status == "completed" and "settled: w1" in (finished.stop_reason or "")
        assert service.balancer.hybrid_weights == pytest.approx(
            {"weighted_round_robin": 0.0, "least_connection": 0.5, "predictive": 0.5, "resource_aware": 0.0}
        )
        assert service.store.latest_weights() == service.balancer.hybrid_weights
        assert service.select(TaskRequest("t", task_id="after")).experiment is None
    finally:
        service.close()
