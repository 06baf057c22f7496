"""Drift of the serving model: online accuracy from the store against the holdout's."""

from __future__ import annotations

import pytest
from store_helpers import LiveFleet, StoreClock

from agentlb.domain import SelectionResult, TaskOutcome
from agentlb.drift import DriftPolicy, assess_drift, assess_serving_model
from agentlb.store import Store

POLICY = DriftPolicy(window_s=3600.0, min_samples=20, mae_tolerance=0.25)


def _run(live: LiveFleet, store: Store, clock: StoreClock, start: int, n: int, slowdown: float) -> str:
    """n tasks whose durations are `slowdown` x their predicted p50, except every tenth, which
    runs past its p90 (so a calibrated p90 covers 90%); returns the model version."""
    result: SelectionResult | None = None
    for i in range(start, start + n):
        result = live.dispatch(i, strategy="predictive")
        predicted = result.predicted_completion
        assert predicted is not None
        duration = slowdown * (1.5 * predicted.service_p90_s if i % 10 == 0 else predicted.service_p50_s)
        clock.advance(1.0)
        store.record_outcome(TaskOutcome(result.selected_agent.id, duration, True, result.task_id), clock())
    assert result is not None and result.model_version is not None
    return result.model_version


def test_accurate_predictions_are_not_drift(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    version = _run(live, store, clock, 0, 40, slowdown=1.0)
    online = assess_drift(store, version, {}, POLICY, now=clock()).online_mae_s
    assert online is not None and online > 0
    report = assess_drift(store, version, {"mae": online}, POLICY, now=clock())
    assert report.samples == 40 and report.mae_ratio == pytest.approx(1.0)
    assert report.drifted is False and report.p90_coverage == pytest.approx(0.9)


def test_durations_far_from_predictions_are_drift_with_reasons(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    calibrated = _run(live, store, clock, 0, 40, slowdown=1.0)
    holdout = {"mae": assess_drift(store, calibrated, {}, POLICY, now=clock()).online_mae_s or 0.0}
    clock.advance(2 * POLICY.window_s)
    version = _run(live, store, clock, 40, 40, slowdown=3.0)
    report = assess_drift(store, version, holdout, POLICY, now=clock())
    assert report.drifted is True
    assert report.mae_ratio is not None and report.mae_ratio > 1.25
    assert any("online MAE" in r for r in report.reasons)
    assert any("p90 covers" in r for r in report.reasons)  # durations 3x the p50 escape the p90


def test_only_the_window_counts(store: Store, clock: StoreClock) -> None:
    """Old misses age out of the window: a model that has recovered is not drifting."""
    live = LiveFleet(store, clock)
    _run(live, store, clock, 0, 40, slowdown=3.0)
    clock.advance(2 * POLICY.window_s)
    version = _run(live, store, clock, 40, 40, slowdown=1.0)
    recent = assess_drift(store, version, {}, POLICY, now=clock())
    report = assess_drift(store, version, {"mae": recent.online_mae_s or 0.0}, POLICY, now=clock())
    assert report.samples == 40 and report.drifted is False


def test_too_few_tasks_is_no_verdict(store: Store, clock: StoreClock) -> None:
    live = LiveFleet(store, clock)
    version = _run(live, store, clock, 0, 5, slowdown=3.0)
    report = assess_drift(store, version, {"mae": 0.5}, POLICY, now=clock())
    assert report.drifted is None and report.samples == 5
    assert "20 needed" in report.reasons[0]
    unknown = assess_drift(store, "a-version-never-served", {"mae": 0.5}, POLICY, now=clock())
    assert unknown.samples == 0 and unknown.drifted is None


def test_the_heuristic_has_no_drift_to_report(store: Store) -> None:
    assert assess_serving_model(store, {"version": "heuristic", "source": "heuristic"}, POLICY) is None
