"""Metrics of one run and their aggregation over seeds (mean with a 95% t interval)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agentlb.sim.simulator import RunResult

# Two-sided 97.5% quantiles of Student's t by degrees of freedom (1-30); 1.96 beyond.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)

SUMMARY_METRICS = (
    "mean_sojourn_s",
    "p50_sojourn_s",
    "p95_sojourn_s",
    "p99_sojourn_s",
    "mean_wait_s",
    "p50_wait_s",
    "p95_wait_s",
    "p99_wait_s",
    "throughput_per_s",
    "success_rate",
    "utilisation_mean",
    "utilisation_max",
    "utilisation_cv",
    "load_variance",
    "over_utilised_share",
    "fallback_rate",
    "deadline_miss_rate",
    "rejected_share",
)


def measured_sojourns(result: RunResult) -> np.ndarray:
    """Sojourn times (wait + service) of the measured, dispatched tasks."""
    start = result.measured_from
    arrival = np.asarray(result.arrival_s[start:])
    finish = np.asarray(result.finish_s[start:])
    dispatched = np.asarray([bool(a) for a in result.agent_ids[start:]])
    sojourn: np.ndarray = (finish - arrival)[dispatched]
    return sojourn


def run_metrics(result: RunResult) -> dict[str, float | None]:
    """The issue's metrics for one run, warm-up excluded.

    Sojourn and wait are over dispatched tasks (failed ones included: they took the time);
    utilisation is busy slot-seconds over slot-seconds present in the measured window;
    over-utilised share is the share of agent-time with tasks queued behind full slots.
    """
    start = result.measured_from
    arrival = np.asarray(result.arrival_s[start:])
    begin = np.asarray(result.start_s[start:])
    finish = np.asarray(result.finish_s[start:])
    dispatched = np.asarray([bool(a) for a in result.agent_ids[start:]])
    success = np.asarray(result.success[start:])
    sojourn = (finish - arrival)[dispatched]
    wait = (begin - arrival)[dispatched]
    n = len(arrival)
    utilisation = np.asarray(list(result.utilisation_by_agent.values()), dtype=np.float64)
    util_mean = float(utilisation.mean()) if utilisation.size else 0.0
    deadlines = [
        (d, f - a)
        for d, a, f, ok in zip(result.deadline_s[start:], arrival, finish, dispatched, strict=True)
        if d is not None and ok
    ]
    span = float(np.nanmax(finish[dispatched]) - result.window_s[0]) if dispatched.any() else 0.0

    def q(values: np.ndarray, p: float) -> float | None:
        return float(np.percentile(values, p)) if values.size else None

    return {
        "mean_sojourn_s": float(sojourn.mean()) if sojourn.size else None,
        "p50_sojourn_s": q(sojourn, 50),
        "p95_sojourn_s": q(sojourn, 95),
        "p99_sojourn_s": q(sojourn, 99),
        "mean_wait_s": float(wait.mean()) if wait.size else None,
        "p50_wait_s": q(wait, 50),
        "p95_wait_s": q(wait, 95),
        "p99_wait_s": q(wait, 99),
        "throughput_per_s": float(dispatched.sum() / span) if span > 0 else None,
        "success_rate": float(success.sum() / n) if n else None,
        "utilisation_mean": util_mean,
        "utilisation_max": float(utilisation.max()) if utilisation.size else 0.0,
        "utilisation_cv": float(utilisation.std() / util_mean) if util_mean > 0 else 0.0,
        "load_variance": float(utilisation.var()) if utilisation.size else 0.0,
        "over_utilised_share": result.over_utilised_share,
        "fallback_rate": float(np.mean(result.fallback[start:])) if n else 0.0,
        "deadline_miss_rate": (sum(1 for d, s in deadlines if s > d) / len(deadlines) if deadlines else None),
        "rejected_share": float(1.0 - dispatched.mean()) if n else 0.0,
    }


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """95% confidence interval of the mean across independent replications (Student t)."""
    k = len(values)
    mean = sum(values) / k
    if k < 2:
        return mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    t = _T975[k - 2] if k - 1 <= len(_T975) else 1.96
    half = t * sd / math.sqrt(k)
    return mean - half, mean + half


def ci_key(metric: str) -> str:
    """`mean_sojourn_s` -> `mean_sojourn_ci95` (the results.json names)."""
    return metric.removesuffix("_s") + "_ci95"


def aggregate(per_seed: Sequence[Mapping[str, float | None]]) -> dict[str, Any]:
    """Mean over seeds of each metric, with `ci_key(metric)` = [low, high]; None when absent."""
    out: dict[str, Any] = {}
    for name in SUMMARY_METRICS:
        values = [float(v) for m in per_seed if (v := m.get(name)) is not None]
        if not values:
            out[name] = None
            out[ci_key(name)] = None
            continue
        low, high = ci95(values)
        out[name] = sum(values) / len(values)
        out[ci_key(name)] = [low, high]
    return out
