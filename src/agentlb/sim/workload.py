"""Workloads: which tasks arrive when, with what hidden size and what visible attributes.

A task's `size` is hidden truth (seconds of work on a speed-1 agent); the balancer sees only
its type and attributes (`input_tokens` correlated with size, `complexity`, `priority`), as a
real orchestrator would. Noise and the failure draw are fixed per task when it is generated,
so every strategy in a replication faces exactly the same tasks (common random numbers).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentlb.domain import AttributeValue
from agentlb.errors import SimulationError

TOKENS_PER_SIZE_S = 400.0
PRIORITIES = (("low", 0.2), ("normal", 0.6), ("high", 0.2))


@dataclass(frozen=True)
class TaskType:
    """One task type in a mix: share of arrivals, mean size, size spread and optional deadline.

    `deadline_factor` gives tasks a deadline of factor x mean_size seconds (sojourn budget).
    """

    name: str
    share: float
    mean_size_s: float
    size_sigma: float = 0.6
    deadline_factor: float | None = None


@dataclass(frozen=True)
class SimTask:
    index: int
    task_id: str
    arrival_s: float
    task_type: str
    size_s: float
    noise: float
    failure_draw: float
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    deadline_s: float | None = None


@dataclass(frozen=True)
class Poisson:
    rate_per_s: float


@dataclass(frozen=True)
class Bursty:
    """Markov-modulated Poisson: a high state at `high_factor` x the low state's rate.

    Rates are set so the long-run mean is `rate_per_s`; state durations are exponential.
    """

    rate_per_s: float
    high_factor: float = 3.0
    mean_high_s: float = 20.0
    mean_low_s: float = 60.0


@dataclass(frozen=True)
class Diurnal:
    """Sinusoidal rate: rate x (1 + amplitude x sin(2 pi t / period)), by thinning."""

    rate_per_s: float
    amplitude: float = 0.3
    period_s: float = 600.0


ArrivalProcess = Poisson | Bursty | Diurnal


def mean_size(mix: Sequence[TaskType]) -> float:
    total = sum(t.share for t in mix)
    return sum(t.share * t.mean_size_s for t in mix) / total


def arrival_times(process: ArrivalProcess, n: int, rng: random.Random) -> list[float]:
    """`n` arrival instants from time 0 for the given process."""
    if process.rate_per_s <= 0:
        raise SimulationError("arrival rate must be > 0")
    times: list[float] = []
    t = 0.0
    if isinstance(process, Poisson):
        for _ in range(n):
            t += rng.expovariate(process.rate_per_s)
            times.append(t)
        return times
    if isinstance(process, Bursty):
        share_high = process.mean_high_s / (process.mean_high_s + process.mean_low_s)
        low = process.rate_per_s / (1.0 - share_high + share_high * process.high_factor)
        high = low * process.high_factor
        in_high = rng.random() < share_high
        state_end = rng.expovariate(1.0 / (process.mean_high_s if in_high else process.mean_low_s))
        while len(times) < n:
            rate = high if in_high else low
            step = rng.expovariate(rate)
            if t + step < state_end:
                t += step
                times.append(t)
            else:  # memoryless: restart the draw at the state change
                t = state_end
                in_high = not in_high
                state_end = t + rng.expovariate(
                    1.0 / (process.mean_high_s if in_high else process.mean_low_s)
                )
        return times
    peak = process.rate_per_s * (1.0 + abs(process.amplitude))
    while len(times) < n:
        t += rng.expovariate(peak)
        rate = process.rate_per_s * (1.0 + process.amplitude * math.sin(2.0 * math.pi * t / process.period_s))
        if rng.random() * peak <= rate:
            times.append(t)
    return times


def _choose(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    total = sum(w for _, w in options)
    draw = rng.random() * total
    for name, weight in options:
        draw -= weight
        if draw < 0:
            return name
    return options[-1][0]


def lognormal_mean_one(rng: random.Random, sigma: float) -> float:
    """A lognormal multiplier with mean 1 (mu = -sigma^2 / 2)."""
    if sigma <= 0:
        return 1.0
    return rng.lognormvariate(-0.5 * sigma * sigma, sigma)


def task_attributes(rng: random.Random, task_type: TaskType, size_s: float) -> dict[str, AttributeValue]:
    """What an orchestrator knows: token count tracks the size (with 25% noise), complexity
    is the size band relative to the type (10% mislabelled), priority is independent."""
    tokens = max(1, round(size_s * TOKENS_PER_SIZE_S * lognormal_mean_one(rng, 0.25)))
    relative = size_s / task_type.mean_size_s
    complexity = "low" if relative < 0.6 else ("medium" if relative < 1.5 else "high")
    if rng.random() < 0.1:
        complexity = rng.choice(("low", "medium", "high"))
    return {"input_tokens": tokens, "complexity": complexity, "priority": _choose(rng, PRIORITIES)}


def generate_tasks(
    mix: Sequence[TaskType],
    process: ArrivalProcess,
    n: int,
    seed: int,
    noise_sigma: float = 0.3,
    id_prefix: str = "t",
) -> list[SimTask]:
    """`n` tasks of the mix arriving by `process`; a pure function of its arguments."""
    if n < 1:
        raise SimulationError("the number of tasks must be >= 1")
    if not mix:
        raise SimulationError("the task mix is empty")
    rng = random.Random(seed)
    times = arrival_times(process, n, random.Random(seed * 7919 + 1))
    by_name = {t.name: t for t in mix}
    options = [(t.name, t.share) for t in mix]
    tasks: list[SimTask] = []
    for i, arrival in enumerate(times):
        kind = by_name[_choose(rng, options)]
        size = kind.mean_size_s * lognormal_mean_one(rng, kind.size_sigma)
        attributes = task_attributes(rng, kind, size)
        deadline = kind.deadline_factor * kind.mean_size_s if kind.deadline_factor else None
        tasks.append(
            SimTask(
                index=i,
                task_id=f"{id_prefix}{i:07d}",
                arrival_s=arrival,
                task_type=kind.name,
                size_s=size,
                noise=lognormal_mean_one(rng, noise_sigma),
                failure_draw=rng.random(),
                attributes=attributes,
                deadline_s=deadline,
            )
        )
    return tasks
