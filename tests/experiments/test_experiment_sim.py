"""Experiments in the simulator, through the service's own router and report."""

from __future__ import annotations

import pytest

from agentlb.experiments.design import Arm, design
from agentlb.sim.experiment import simulate_experiments


def test_an_ab_test_of_least_connection_against_hybrid_on_surveillance_finds_hybrid() -> None:
    plan = design("ab", [Arm("control", "least_connection", 0.5), Arm("hybrid", "hybrid", 0.5)])
    result = simulate_experiments("surveillance", plan, range(3), 2000)
    assert result["decided_share"] == 1.0
    assert result["winners"] == {"hybrid": 3}
    for run in result["runs"]:
        control, hybrid = run["arms"]
        assert hybrid["mean_completion_s"] < control["mean_completion_s"]
        assert control["completed"] + hybrid["completed"] >= 0.85 * 2000


@pytest.mark.slow
def test_an_aa_test_rarely_reports_a_difference() -> None:
    plan = design("aa", [Arm("a", "least_connection", 0.5), Arm("b", "least_connection", 0.5)])
    result = simulate_experiments("heterogeneous", plan, range(40), 1500)
    assert result["decided_share"] <= 0.05
