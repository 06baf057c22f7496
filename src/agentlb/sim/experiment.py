"""Online experiments in the simulator: the service's router and report on a simulated fleet.

An A/B run routes each task by the same stable hash as serving, the arms' strategies select
through the same balancer, and the report and its sequential verdict are computed by the same
code from the same quantities (completion = finish − arrival, the sojourn: what serving
measures as outcome report time minus selection time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentlb.errors import SimulationError
from agentlb.experiments.design import ExperimentDesign
from agentlb.experiments.report import ArmSamples, experiment_report
from agentlb.sim.scenarios import get_scenario
from agentlb.sim.simulator import RunConfig, RunResult, simulate


def arm_samples_from_run(result: RunResult) -> dict[str, ArmSamples]:
    """Every routed task after the run's warm-up share, grouped by arm."""
    if not result.arms:
        raise SimulationError("the run had no experiment")
    grouped: dict[str, list[int]] = {}
    for i in range(result.measured_from, len(result.arms)):
        if result.arms[i]:
            grouped.setdefault(result.arms[i], []).append(i)
    samples = {}
    for arm, indices in grouped.items():
        done = [i for i in indices if math.isfinite(result.finish_s[i]) and result.agent_ids[i]]
        samples[arm] = ArmSamples.of(
            len(indices),
            [result.finish_s[i] for i in done],
            [result.finish_s[i] - result.arrival_s[i] for i in done],
            [result.service_s[i] for i in done],
            [result.success[i] for i in done],
        )
    return samples


@dataclass(frozen=True)
class SimulatedExperiment:
    seed: int
    report: dict[str, Any]

    @property
    def decided(self) -> bool:
        return bool(self.report["verdict"]["decided"])

    @property
    def winner(self) -> str | None:
        winner: str | None = self.report["verdict"]["winner"]
        return winner

    @property
    def decided_after(self) -> int | None:
        """Completed tasks (control and the deciding arm) when the verdict was first reached."""
        found = [a["decided_after_tasks"] for a in self.report["arms"][1:] if a.get("decided_after_tasks")]
        return min(found) if found else None


def simulate_experiment(
    scenario_name: str, design: ExperimentDesign, seed: int, tasks: int, load: float | None = None
) -> SimulatedExperiment:
    """One replication of the scenario with every task routed by the experiment."""
    scenario = get_scenario(scenario_name)
    fleet, workload = scenario.build(seed, tasks, load)
    result = simulate(fleet, workload, RunConfig(design.control.strategy, seed, experiment=design))
    return SimulatedExperiment(seed, experiment_report(design, arm_samples_from_run(result)))


def simulate_experiments(
    scenario_name: str, design: ExperimentDesign, seeds: Sequence[int], tasks: int, load: float | None = None
) -> dict[str, Any]:
    """Replications over `seeds`: how often the verdict was decided, for which arm, and after
    how many completed tasks (the figures of docs/benchmarks.md)."""
    runs = [simulate_experiment(scenario_name, design, seed, tasks, load) for seed in seeds]
    decided = [r for r in runs if r.decided]
    winners: dict[str, int] = {}
    for r in decided:
        assert r.winner is not None
        winners[r.winner] = winners.get(r.winner, 0) + 1
    after = sorted(r.decided_after for r in decided if r.decided_after is not None)
    return {
        "scenario": scenario_name,
        "design": design.as_dict(),
        "seeds": list(seeds),
        "tasks": tasks,
        "decided_share": len(decided) / len(runs) if runs else 0.0,
        "winners": winners,
        "decided_after_median": after[len(after) // 2] if after else None,
        "decided_after": after,
        "runs": [
            {
                "seed": r.seed,
                "decided": r.decided,
                "winner": r.winner,
                "decided_after": r.decided_after,
                "arms": [
                    {k: a[k] for k in ("name", "completed", "mean_completion_s", "diff_to_control_ci95")}
                    for a in r.report["arms"]
                ],
            }
            for r in runs
        ],
    }
