"""One contract, every registered strategy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from core_helpers import FakeClock, make_agent

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.errors import NoEligibleAgentError
from agentlb.strategies import STRATEGY_NAMES
from agentlb.tracker import AgentLoadTracker


def _play(balancer: Balancer, clock: FakeClock, strategy: str, n: int = 60) -> list[str]:
    picks = []
    for i in range(n):
        task = TaskRequest(
            task_type=f"t{i % 3}", required_capabilities=frozenset({"work"}), task_id=f"task-{i}"
        )
        result = balancer.select(task, strategy)
        picks.append(result.selected_agent.id)
        clock.advance(0.5)
        if i % 2 == 0:
            duration = 1.0 + int(result.selected_agent.id[1:]) * 0.5
            balancer.report(
                TaskOutcome(result.selected_agent.id, duration, True, task.task_id, task.task_type)
            )
    return picks


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_same_seed_same_picks(
    strategy: str, fleet_factory: Callable[..., Balancer], clock: FakeClock
) -> None:
    first = _play(fleet_factory(5, seed=3), clock, strategy)
    clock.now = 1_000.0
    second = _play(fleet_factory(5, seed=3), clock, strategy)
    assert first == second


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_never_picks_disabled_ejected_or_incapable(strategy: str, clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("good1", ("work", "gpu")), registered_at=0.0)
    tracker.register(make_agent("good2", ("work", "gpu")), registered_at=0.0)
    tracker.register(make_agent("good3", ("work", "gpu")), registered_at=0.0)
    tracker.register(make_agent("off", ("work", "gpu"), enabled=False), registered_at=0.0)
    tracker.register(make_agent("nogpu", ("work",)), registered_at=0.0)
    tracker.register(make_agent("ejected", ("work", "gpu")), registered_at=0.0)
    tracker.eject("ejected", until=clock.now + 1_000)
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=0), seed=1)
    for i in range(200):
        task = TaskRequest(task_type="t", required_capabilities=frozenset({"gpu"}), task_id=f"x{i}")
        result = balancer.select(task, strategy)
        assert result.selected_agent.id in {"good1", "good2", "good3"}
        assert 0.0 <= result.confidence_score <= 1.0
        for alt in result.alternative_agents:
            assert alt.agent_id in {"good1", "good2", "good3"}
            assert 0.0 <= alt.score <= 1.0
        balancer.report(TaskOutcome(result.selected_agent.id, 1.0 + i % 3, True, task.task_id, "t"))


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_single_agent_works(strategy: str, fleet_factory: Callable[..., Balancer]) -> None:
    balancer = fleet_factory(1)
    for i in range(5):
        result = balancer.select(TaskRequest(task_type="t", task_id=f"s{i}"), strategy)
        assert result.selected_agent.id == "a0"
        assert result.strategy_used == strategy


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_empty_fleet_raises_specific_error(strategy: str, clock: FakeClock) -> None:
    balancer = Balancer(AgentLoadTracker(clock))
    with pytest.raises(NoEligibleAgentError):
        balancer.select(TaskRequest(task_type="t", required_capabilities=frozenset({"work"})), strategy)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_scores_in_documented_range(
    strategy: str, fleet_factory: Callable[..., Balancer], clock: FakeClock
) -> None:
    balancer = fleet_factory(6)
    _play(balancer, clock, "least_connection", 40)
    snapshot = balancer.tracker.snapshot()
    decision = balancer.strategies[strategy].decide(
        TaskRequest(task_type="t1"), list(snapshot.agents), snapshot
    )
    assert set(decision.scores) == {s.agent.id for s in snapshot.agents}
    assert all(0.0 <= v <= 1.0 for v in decision.scores.values())
    assert 0.0 <= decision.confidence <= 1.0
    assert decision.chosen in decision.scores


def test_missing_capability_is_named(fleet_factory: Callable[..., Balancer]) -> None:
    balancer = fleet_factory(3)
    with pytest.raises(NoEligibleAgentError) as info:
        balancer.select(TaskRequest(task_type="t", required_capabilities=frozenset({"work", "telepathy"})))
    assert info.value.missing_capabilities == ["telepathy"]
    assert "telepathy" in str(info.value)


def test_agent_definition_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Agent(id="x", name="x", max_concurrency=0)
