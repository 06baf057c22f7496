"""An experiment's report: per arm, what happened to its tasks, and the verdict.

Completion time is outcome report time minus selection time: what the orchestrator waited,
queueing at the agent included (the simulator's sojourn). Every reported outcome counts,
failures included: a strategy that fails fast must not look fast. `duration` is the agent's own
reported run time. The per-arm interval is a fixed-sample t interval (a description of that
arm); the difference to the control is the always-valid confidence sequence of sequential.py,
which is also what the verdict reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agentlb.experiments.bandit import ArmStats, ThompsonAllocator
from agentlb.experiments.design import THOMPSON, ExperimentDesign
from agentlb.experiments.sequential import METHOD, SequentialResult, confidence_sequence


@dataclass(frozen=True)
class ArmSamples:
    """One arm's tasks: how many were dispatched, and the completed ones in completion order."""

    tasks: int
    finished_at: NDArray[np.float64]
    completion_s: NDArray[np.float64]
    duration_s: NDArray[np.float64]
    success: NDArray[np.bool_]

    @classmethod
    def of(
        cls,
        tasks: int,
        finished_at: Sequence[float],
        completion_s: Sequence[float],
        duration_s: Sequence[float],
        success: Sequence[bool],
    ) -> ArmSamples:
        finished = np.asarray(finished_at, dtype=np.float64)
        order = np.argsort(finished, kind="stable")
        return cls(
            tasks,
            finished[order],
            np.asarray(completion_s, dtype=np.float64)[order],
            np.asarray(duration_s, dtype=np.float64)[order],
            np.asarray(success, dtype=np.bool_)[order],
        )


def arm_samples_from_rows(
    rows: Sequence[tuple[str, float | None, float | None, bool | None, float | None]],
) -> dict[str, ArmSamples]:
    """Rows of (arm, dispatched_at, finished_at, success, duration_s), finished_at None while the
    task is in flight, grouped by arm."""
    grouped: dict[str, list[tuple[float | None, float | None, bool | None, float | None]]] = {}
    for arm, dispatched, finished, success, duration in rows:
        grouped.setdefault(arm, []).append((dispatched, finished, success, duration))
    samples = {}
    for arm, items in grouped.items():
        done = [(d, f, bool(ok), r) for d, f, ok, r in items if f is not None and d is not None]
        samples[arm] = ArmSamples.of(
            len(items),
            [f for _, f, _, _ in done],
            [max(0.0, f - d) for d, f, _, _ in done],
            [float("nan") if r is None else r for _, _, _, r in done],
            [ok for _, _, ok, _ in done],
        )
    return samples


def experiment_report(design: ExperimentDesign, samples: dict[str, ArmSamples]) -> dict[str, Any]:
    """Per arm: tasks, completed, success rate, completion time mean (95% CI), p50, p99,
    duration mean/p50/p99, and the difference to the control arm's mean with its always-valid
    95% sequence; then the verdict."""
    empty = ArmSamples.of(0, [], [], [], [])
    control = samples.get(design.control.name, empty)
    comparisons = len(design.arms) - 1
    alpha = design.alpha / comparisons  # Bonferroni over the comparisons with the control
    arms: list[dict[str, Any]] = []
    sequences: dict[str, SequentialResult | None] = {}
    for i, arm in enumerate(design.arms):
        own = samples.get(arm.name, empty)
        summary = _arm_summary(own)
        summary["name"] = arm.name
        summary["strategy"] = arm.strategy
        summary["share"] = arm.share
        summary["weights"] = None if arm.weights is None else dict(arm.weights)
        summary["model_version"] = arm.model_version
        if i == 0:
            summary["diff_to_control_ci95"] = None
            summary["diff_to_control_s"] = None
        else:
            sequence = _against_control(control, own, alpha, design.mixing_effect)
            sequences[arm.name] = sequence
            summary["diff_to_control_s"] = (
                float(own.completion_s.mean() - control.completion_s.mean())
                if len(own.completion_s) and len(control.completion_s)
                else None
            )
            summary["diff_to_control_ci95"] = None if sequence is None else [sequence.lower, sequence.upper]
            summary["decided_after_tasks"] = None if sequence is None else sequence.decided_after
        arms.append(summary)
    if design.allocation == THOMPSON:
        return {"arms": arms, "verdict": _bandit_verdict(design, samples)}
    return {"arms": arms, "verdict": _verdict(design, arms, sequences)}


def bandit_stats(design: ExperimentDesign, samples: dict[str, ArmSamples]) -> dict[str, ArmStats]:
    return {
        arm.name: ArmStats.of(samples[arm.name].completion_s) for arm in design.arms if arm.name in samples
    }


def _bandit_verdict(design: ExperimentDesign, samples: dict[str, ArmSamples]) -> dict[str, Any]:
    """Settled when one arm is the fastest with posterior probability >= settle_probability.
    (Adaptive allocation breaks the fixed-split assumptions of the sequential test, so the
    bandit's own posterior decides.)"""
    allocator = ThompsonAllocator([a.name for a in design.arms], design.min_share)
    allocator.replace(bandit_stats(design, samples))
    settled = allocator.settled(design.settle_probability)
    return {
        "decided": settled is not None,
        "winner": None if settled is None else settled[0],
        "method": f"Thompson sampling; settled when P(fastest) >= {design.settle_probability}",
        "alpha": design.alpha,
        "metric": "mean completion time (outcome report time minus selection time)",
        "probability_best": allocator.probability_best(),
    }


def _against_control(
    control: ArmSamples, treatment: ArmSamples, alpha: float, mixing_effect: float
) -> SequentialResult | None:
    stamps = np.concatenate([control.finished_at, treatment.finished_at])
    labels = np.concatenate([np.zeros(len(control.finished_at)), np.ones(len(treatment.finished_at))])
    order = labels[np.argsort(stamps, kind="stable")].astype(np.int64)
    return confidence_sequence(control.completion_s, treatment.completion_s, order, alpha, mixing_effect)


def _verdict(
    design: ExperimentDesign, arms: list[dict[str, Any]], sequences: dict[str, SequentialResult | None]
) -> dict[str, Any]:
    """Decided when some arm's sequence excludes 0. The winner is the fastest arm decided
    faster than the control; when every other arm is decided slower, the control wins."""
    decided = {name: s for name, s in sequences.items() if s is not None and s.decided}
    faster = [name for name, s in decided.items() if s.upper < 0.0]
    means = {a["name"]: a["mean_completion_s"] for a in arms}
    winner: str | None = None
    if faster:
        winner = min(faster, key=lambda name: means[name] if means[name] is not None else float("inf"))
    elif decided and len(decided) == len(sequences):
        winner = design.control.name
    return {
        "decided": winner is not None,
        "winner": winner,
        "method": METHOD,
        "alpha": design.alpha,
        "metric": "mean completion time (outcome report time minus selection time)",
    }


def _arm_summary(arm: ArmSamples) -> dict[str, Any]:
    completion = arm.completion_s
    n = len(completion)
    summary: dict[str, Any] = {
        "tasks": arm.tasks,
        "completed": n,
        "success_rate": float(arm.success.mean()) if n else None,
        "mean_completion_s": float(completion.mean()) if n else None,
        "p50_completion_s": _quantile(completion, 0.5),
        "p99_completion_s": _quantile(completion, 0.99),
        "mean_completion_ci95": _mean_interval(completion),
    }
    durations = arm.duration_s[np.isfinite(arm.duration_s)]
    summary["mean_duration_s"] = float(durations.mean()) if len(durations) else None
    summary["p50_duration_s"] = _quantile(durations, 0.5)
    summary["p99_duration_s"] = _quantile(durations, 0.99)
    return summary


def _quantile(values: NDArray[np.float64], q: float) -> float | None:
    return float(np.quantile(values, q)) if len(values) else None


def _mean_interval(values: NDArray[np.float64]) -> list[float] | None:
    """The t interval of the mean (95%)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = float(values.mean())
    half = float(t.ppf(0.975, n - 1)) * float(values.std(ddof=1)) / float(np.sqrt(n))
    return [mean - half, mean + half]
