"""The always-valid confidence sequence: it covers the truth however often it is read, and it
decides when there is a difference."""

from __future__ import annotations

import numpy as np

from agentlb.experiments.design import Arm, design
from agentlb.experiments.report import ArmSamples, experiment_report
from agentlb.experiments.sequential import MIN_SAMPLES_PER_ARM, confidence_sequence


def stream(rng: np.random.Generator, n: int, mean_b: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = rng.integers(0, 2, n)
    a = rng.exponential(1.0, int((order == 0).sum()))
    b = rng.exponential(mean_b, int((order == 1).sum()))
    return a, b, order


def test_under_no_difference_it_rarely_ever_decides_though_read_after_every_task() -> None:
    rng = np.random.default_rng(1)
    decided = 0
    runs = 300
    for _ in range(runs):
        a, b, order = stream(rng, 2000, 1.0)
        result = confidence_sequence(a, b, order, alpha=0.05, mixing_effect=0.1)
        assert result is not None
        decided += result.decided
    # ever-excluded-zero over 2,000 looks per run; a fixed t-test read that often errs in most runs
    assert decided / runs <= 0.05


def test_it_decides_a_real_difference_and_covers_it() -> None:
    rng = np.random.default_rng(2)
    a, b, order = stream(rng, 4000, 0.8)
    result = confidence_sequence(a, b, order, alpha=0.05, mixing_effect=0.1)
    assert result is not None and result.decided
    assert result.upper < 0 and result.lower <= -0.2 <= result.upper
    assert result.decided_after is not None and result.decided_after < 4000


def test_nothing_is_judged_before_each_arm_has_its_minimum() -> None:
    order = np.array([0, 1] * (MIN_SAMPLES_PER_ARM - 1))
    ones = np.ones(MIN_SAMPLES_PER_ARM - 1)
    assert confidence_sequence(ones, ones, order, 0.05, 0.1) is None


def test_the_report_names_the_faster_arm_and_keeps_the_control_first() -> None:
    plan = design("x", [Arm("control", "least_connection", 0.5), Arm("fast", "hybrid", 0.5)])
    rng = np.random.default_rng(3)
    n = 1500
    t = np.arange(n, dtype=float)
    slow, fast = rng.exponential(2.0, n), rng.exponential(1.0, n)
    report = experiment_report(
        plan,
        {
            "control": ArmSamples.of(n + 5, t, slow, slow, [True] * n),
            "fast": ArmSamples.of(n, t + 0.5, fast, fast, [True] * n),
        },
    )
    control, fast_arm = report["arms"]
    assert control["name"] == "control" and control["diff_to_control_ci95"] is None
    assert control["tasks"] == n + 5 and control["completed"] == n
    lo, hi = fast_arm["diff_to_control_ci95"]
    assert lo < fast_arm["diff_to_control_s"] < hi < 0
    assert report["verdict"]["decided"] and report["verdict"]["winner"] == "fast"
    ci = control["mean_completion_ci95"]
    assert ci[0] < control["mean_completion_s"] < ci[1]
