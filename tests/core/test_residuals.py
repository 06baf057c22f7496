"""Per-agent residual correction of a model's prediction: kept by the tracker from outcome events."""

from __future__ import annotations

import math

import pytest
from core_helpers import FakeClock, make_agent

from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.residuals import RESIDUAL_FADE_S, RESIDUAL_PRIOR_SAMPLES, ResidualCorrection, faded_factor
from agentlb.tracker import AgentLoadTracker


def _factor(tracker: AgentLoadTracker, agent: str) -> float:
    state = tracker.state(agent)
    return faded_factor(state.service_correction_log, state.service_correction_stamp, tracker.clock())


def _run(tracker: AgentLoadTracker, agent: str, slow: float, n: int, start: int = 0) -> None:
    """n tasks predicted at 1 s (times the correction in force, as the balancer records it)."""
    for k in range(start, start + n):
        tracker.dispatch(agent, TaskRequest(task_type="t", task_id=f"{agent}-{k}"), _factor(tracker, agent))
        tracker.complete(TaskOutcome(agent, slow, True, f"{agent}-{k}"))


def test_a_slowed_agent_earns_a_factor_shrunk_while_samples_are_few(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("a"))
    tracker.register(make_agent("b"))
    assert tracker.state("a").service_correction_log == 0.0
    _run(tracker, "a", 5.0, 1)
    one = _factor(tracker, "a")
    assert one == pytest.approx(math.exp(math.log(5.0) / (1 + RESIDUAL_PRIOR_SAMPLES)))
    _run(tracker, "a", 5.0, 15, start=1)
    assert 4.0 < _factor(tracker, "a") <= 5.0 + 1e-9
    _run(tracker, "b", 1.0, 5)
    assert _factor(tracker, "b") == pytest.approx(1.0)
    # the episode ends: the factor returns towards 1 within a few completions
    _run(tracker, "a", 1.0, 8, start=16)
    assert _factor(tracker, "a") < 1.3


def test_the_correction_fades_with_the_age_of_its_evidence(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("a"))
    _run(tracker, "a", 4.0, 10)
    fresh = _factor(tracker, "a")
    clock.advance(RESIDUAL_FADE_S)
    assert _factor(tracker, "a") == pytest.approx(math.exp(math.log(fresh) / math.e))
    clock.advance(10 * RESIDUAL_FADE_S)
    assert _factor(tracker, "a") == pytest.approx(1.0, abs=1e-3)


def test_failures_and_outcomes_without_a_prediction_leave_it_alone(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("a"))
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="1"), 1.0)
    tracker.complete(TaskOutcome("a", 9.0, False, "1"))
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="2"))
    tracker.complete(TaskOutcome("a", 9.0, True, "2"))
    tracker.complete(TaskOutcome("a", 9.0, True))
    assert tracker.state("a").service_correction_log == 0.0


def test_replaying_the_same_events_gives_the_same_factor(clock: FakeClock) -> None:
    first, second = AgentLoadTracker(clock), AgentLoadTracker(clock)
    for tracker in (first, second):
        tracker.register(make_agent("a"))
        _run(tracker, "a", 3.0, 4)
        _run(tracker, "a", 0.5, 3, start=4)
    assert first.state("a").service_correction_log == second.state("a").service_correction_log != 0.0


def test_one_wild_duration_is_clipped() -> None:
    residual = ResidualCorrection()
    for _ in range(50):
        residual.observe(1e6, 1.0, 0.0, 0.0)
    assert residual.factor() <= 8.0 + 1e-9
    residual.observe(0.0, 1.0, 0.0, 0.0)  # a zero duration says nothing about speed
    assert residual.samples == 50
