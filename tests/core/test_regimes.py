"""Slow-down regimes: detection on residuals, start-time order, fading, and the tracker seam."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from core_helpers import FakeClock, make_agent

from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.predictor.base import ServicePrediction, regime_corrected
from agentlb.regimes import RegimeConfig, RegimeDetector
from agentlb.replication.state import export_state, import_state
from agentlb.tracker import AgentLoadTracker, TrackerConfig

CONFIG = RegimeConfig()


def _noise(rng: random.Random) -> float:
    return rng.gauss(0.0, 0.4)


def test_usual_noise_raises_no_alarm() -> None:
    rng = random.Random(3)
    detector = RegimeDetector()
    alarms = sum(detector.observe(_noise(rng), "t", float(i), CONFIG) for i in range(2000))
    assert alarms <= 10  # a handful in 2,000 residuals of sd 0.4, each ended by the next one
    assert abs(detector.bias["t"]) < 0.2


def test_five_fold_slowdown_is_seen_within_a_few_completions() -> None:
    rng = random.Random(5)
    detector = RegimeDetector()
    for i in range(200):
        detector.observe(_noise(rng), "t", float(i), CONFIG)
    seen_after = None
    for k in range(1, 10):
        if detector.observe(math.log(5.0) + _noise(rng), "t", 200.0 + k, CONFIG) and detector.level > 0:
            seen_after = k
            break
    assert seen_after is not None and seen_after <= 3
    regime = detector.regime(CONFIG)
    assert regime is not None
    assert 2.5 < regime.factor(regime.stamp) < 10.0


def _usual(detector: RegimeDetector, runs: int = 12) -> None:
    for i in range(runs):
        detector.observe(0.0, "t", float(i), CONFIG)


def test_work_started_before_the_evidence_does_not_end_the_regime() -> None:
    detector = RegimeDetector()
    _usual(detector)
    for i in range(3):
        detector.observe(math.log(5.0), "t", 100.0 + i, CONFIG)
    assert detector.level > 0
    stamp = detector.stamp
    # usual-speed work that started before the slow evidence says nothing about now
    assert not detector.observe(0.0, "t", stamp - 5.0, CONFIG)
    assert detector.level > 0
    # usual-speed work that started after it ends the regime
    assert detector.observe(0.0, "t", stamp + 1.0, CONFIG)
    assert detector.regime(CONFIG) is None


def test_regime_fades_with_the_age_of_its_evidence() -> None:
    detector = RegimeDetector()
    _usual(detector)
    for i in range(3):
        detector.observe(math.log(5.0), "t", 100.0 + i, CONFIG)
    regime = detector.regime(CONFIG)
    assert regime is not None
    fresh, later, much_later = (regime.factor(regime.stamp + age) for age in (0.0, 30.0, 300.0))
    assert fresh > later > much_later
    assert much_later == pytest.approx(1.0, abs=0.01)


def test_detector_document_round_trip() -> None:
    detector = RegimeDetector()
    for i, r in enumerate([0.1, -0.2, 1.7, 1.5, 1.6]):
        detector.observe(r, "t", float(i), CONFIG)
    copy = RegimeDetector.from_document(detector.to_document())
    assert copy.to_document() == detector.to_document()
    assert RegimeDetector.from_document({}).to_document() == RegimeDetector().to_document()


def _slow_agent_tracker(clock: FakeClock, config: RegimeConfig = CONFIG) -> AgentLoadTracker:
    tracker = AgentLoadTracker(clock, TrackerConfig(regimes=config))
    tracker.register(make_agent("a"))
    tracker.register(make_agent("b"))
    for i in range(18):
        slow = i >= 12
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"s{i}"), predicted_service_s=1.0)
        clock.advance(5.0 if slow else 1.0)
        tracker.complete(TaskOutcome("a", 5.0 if slow else 1.0, True, f"s{i}"))
    return tracker


def test_tracker_publishes_the_regime_in_snapshots(clock: FakeClock) -> None:
    tracker = _slow_agent_tracker(clock)
    before = tracker.snapshot()
    assert set(before.regimes) == {"a"}
    assert before.regimes["a"].factor(before.now) > 2.5
    # a task dispatched during the regime records the corrected prediction; its residual is
    # taken against the model's own, so a usual-speed run ends the regime
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="n"), predicted_service_s=4.0)
    clock.advance(1.0)
    tracker.complete(TaskOutcome("a", 1.0, True, "n"))
    assert tracker.snapshot().regimes == {}
    assert set(before.regimes) == {"a"}  # a snapshot already handed out keeps its view


def test_regime_detection_can_be_turned_off(clock: FakeClock) -> None:
    tracker = _slow_agent_tracker(clock, RegimeConfig(enabled=False))
    assert tracker.snapshot().regimes == {}


def test_failures_and_tasks_without_predictions_say_nothing(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("a"))
    for i in range(18):
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"f{i}"), predicted_service_s=1.0)
        tracker.complete(TaskOutcome("a", 9.0, False, f"f{i}"))
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"u{i}"))
        tracker.complete(TaskOutcome("a", 9.0, True, f"u{i}"))
    assert tracker.snapshot().regimes == {}


def test_checkpoint_carries_the_regime(clock: FakeClock) -> None:
    tracker = _slow_agent_tracker(clock)
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="open"), predicted_service_s=4.0)
    state = export_state(tracker)
    fresh = AgentLoadTracker(clock)
    import_state(fresh, state)
    assert export_state(fresh) == state
    assert fresh.snapshot().regimes == tracker.snapshot().regimes
    for document in state["agents"]:  # a checkpoint from before regimes were kept still loads
        del document["regime"], document["dispatch_factor"], document["pre_regime"]
    older = AgentLoadTracker(clock)
    import_state(older, state)
    assert older.snapshot().regimes == {}


class _Learned:
    regime_corrected = True


def test_only_learned_predictors_are_corrected(clock: FakeClock) -> None:
    tracker = _slow_agent_tracker(clock)
    snapshot = tracker.snapshot()
    service = ServicePrediction(np.array([2.0, 2.0]), np.array([4.0, 4.0]))
    corrected = regime_corrected(_Learned(), service, snapshot.agents, snapshot)  # type: ignore[arg-type]
    factor = snapshot.regimes["a"].factor(snapshot.now)
    assert corrected.p50_s.tolist() == pytest.approx([2.0 * factor, 2.0])
    assert corrected.p90_s.tolist() == pytest.approx([4.0 * factor, 4.0])
    assert regime_corrected(object(), service, snapshot.agents, snapshot) is service  # type: ignore[arg-type]


def test_the_end_of_a_regime_restores_the_duration_ewmas(clock: FakeClock) -> None:
    tracker = AgentLoadTracker(clock)
    tracker.register(make_agent("a"))
    for i in range(12):
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"u{i}"), predicted_service_s=1.0)
        clock.advance(1.0)
        tracker.complete(TaskOutcome("a", 1.0, True, f"u{i}"))
    usual = tracker.state("a").ewma_duration_by_type["t"]
    fleet_before = tracker.snapshot().fleet_ewma_by_type["t"]
    for i in range(4):
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"s{i}"), predicted_service_s=1.0)
        clock.advance(5.0)
        tracker.complete(TaskOutcome("a", 5.0, True, f"s{i}"))
    assert "a" in tracker.snapshot().regimes
    assert tracker.state("a").ewma_duration_by_type["t"] > 2 * usual  # the slowed work counted
    factor = tracker.snapshot().regimes["a"].factor(clock.now)  # in the prediction, as a balancer records it
    tracker.dispatch("a", TaskRequest(task_type="t", task_id="n"), predicted_service_s=factor)
    clock.advance(1.0)
    tracker.complete(TaskOutcome("a", 1.0, True, "n"))
    snapshot = tracker.snapshot()
    assert snapshot.regimes == {}
    # the EWMAs are those from before the regime, moved by the one usual run that ended it
    assert snapshot.agents[0].ewma_duration_by_type["t"] == pytest.approx(usual)
    assert snapshot.fleet_ewma_by_type["t"] == pytest.approx(fleet_before)


def test_the_slowdown_gauge_shows_each_agents_factor(clock: FakeClock) -> None:
    from prometheus_client import CollectorRegistry

    from agentlb.observability import ServiceState, StateMetrics

    tracker = _slow_agent_tracker(clock)
    snapshot = tracker.snapshot()
    registry = CollectorRegistry()
    metrics = StateMetrics(registry)
    state = ServiceState("healthy", "v1", "test", False, None, 0.25)
    metrics.refresh(snapshot.agents, snapshot.now, state, snapshot.regimes)
    factor = registry.get_sample_value("load_balancer_agent_slowdown_factor", {"agent": "a"})
    assert factor == pytest.approx(snapshot.regimes["a"].factor(snapshot.now))
    assert factor is not None and factor > 2.5
    assert registry.get_sample_value("load_balancer_agent_slowdown_factor", {"agent": "b"}) == 1.0
    tracker.remove("a")
    after = tracker.snapshot()
    metrics.refresh(after.agents, after.now, state, after.regimes)
    assert registry.get_sample_value("load_balancer_agent_slowdown_factor", {"agent": "a"}) is None
