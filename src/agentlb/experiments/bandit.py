"""Thompson sampling over experiment arms on mean completion time (lower is better), with
bounded exploration: the live tuning of hybrid weights.

Each arm's mean has a normal posterior, N(sample mean, sample variance / n) (the large-sample
posterior under a flat prior). A task goes to the arm whose posterior draw is lowest, except
that (1) until every arm has `min_samples` completions the arms take turns, and (2) a share
`min_share` of the traffic per arm is always kept, so an arm that looked bad early can still
recover. The bandit settles when one arm's posterior probability of being the fastest reaches
`settle_probability` (estimated from posterior draws).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MIN_SAMPLES = 30
PROBABILITY_DRAWS = 4000


@dataclass
class ArmStats:
    """Running count, mean and sum of squared deviations (Welford) of completion times."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @property
    def variance_of_mean(self) -> float:
        if self.n < 2:
            return math.inf
        return self.m2 / (self.n - 1) / self.n

    @classmethod
    def of(cls, values: Sequence[float] | NDArray[np.float64]) -> ArmStats:
        data = np.asarray(values, dtype=np.float64)
        if len(data) == 0:
            return cls()
        return cls(len(data), float(data.mean()), float(((data - data.mean()) ** 2).sum()))


class ThompsonAllocator:
    def __init__(
        self,
        arms: Sequence[str],
        min_share: float = 0.05,
        min_samples: int = MIN_SAMPLES,
        seed: int | None = None,
    ) -> None:
        self.arms = tuple(arms)
        self.min_share = min_share
        self.min_samples = min_samples
        self.stats = {arm: ArmStats() for arm in self.arms}
        self._rng = random.Random(seed)
        self._turn = 0

    def choose(self) -> str:
        """The arm for the next task."""
        short = [arm for arm in self.arms if self.stats[arm].n < self.min_samples]
        if short:
            self._turn += 1
            return short[self._turn % len(short)]
        if self._rng.random() < self.min_share * len(self.arms):
            return self.arms[self._rng.randrange(len(self.arms))]
        draws = {arm: self._rng.gauss(s.mean, math.sqrt(s.variance_of_mean)) for arm, s in self.stats.items()}
        return min(draws, key=draws.__getitem__)

    def observe(self, arm: str, completion_s: float) -> None:
        self.stats[arm].add(completion_s)

    def replace(self, stats: Mapping[str, ArmStats]) -> None:
        """Take counts from a more complete source (the store, across replicas)."""
        self.stats = {arm: stats.get(arm, ArmStats()) for arm in self.arms}

    def probability_best(self, draws: int = PROBABILITY_DRAWS, seed: int = 0) -> dict[str, float]:
        """Posterior probability that each arm has the lowest mean (0 for an arm without the
        minimum sample)."""
        ready = [a for a in self.arms if self.stats[a].n >= max(2, self.min_samples)]
        if not ready:
            return {arm: 0.0 for arm in self.arms}
        rng = np.random.default_rng(seed)
        samples = np.stack(
            [rng.normal(self.stats[a].mean, math.sqrt(self.stats[a].variance_of_mean), draws) for a in ready]
        )
        wins = np.bincount(samples.argmin(axis=0), minlength=len(ready)) / draws
        best = dict(zip(ready, (float(w) for w in wins), strict=True))
        return {arm: best.get(arm, 0.0) for arm in self.arms}

    def settled(self, probability: float) -> tuple[str, float] | None:
        """(arm, P(best)) once every arm has its minimum sample and one arm is the fastest with
        at least `probability`; None before."""
        if any(s.n < self.min_samples for s in self.stats.values()):
            return None
        chances = self.probability_best()
        arm = max(chances, key=chances.__getitem__)
        return (arm, chances[arm]) if chances[arm] >= probability else None
