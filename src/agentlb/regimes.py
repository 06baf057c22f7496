"""How each agent runs right now against what the model predicts: slow-down regimes.

The offline model says how long a task should take; an agent that throttles, is rate-limited or
shares its machine runs every task slower for a while. Each completion gives a residual,
log(actual / predicted p50) with the model's own prediction recorded at dispatch. Per agent:

- A Page-Hinkley test (one-sided, for an increase) on the residuals less the model's usual
  error on that agent and task type raises an alarm when their cumulative excess over `delta`
  reaches `threshold`; no residual moves it by more than `max_step`, so one outlier never does.
  The regime's level is the mean excess of the residuals that pushed the test up; a level
  under `min_level` (a factor of 2) is no regime. Its stamp is the latest start of that work.
- Evidence is ordered by when the work *started*, not when it finished: a slow-down slows the
  tasks that start in it, and those finish long after it has ended. A completion that started
  before the stamp (of the work that set, confirmed or ended the latest regime) says nothing new;
  one that started after it either confirms the regime (the level follows it) or, having run as
  usual, ends it.
- A regime fades with the age of its evidence (`memory_s`): an agent that is avoided completes
  no new work that could clear it, so after a while it is offered work again.
- Its end restores the agent's duration EWMAs to what they were before its evidence began
  (`restore_ewmas`; the tracker does it), so the slowed work stops speaking for the agent.

`factor(now)` = exp(level x exp(-(now - stamp) / memory_s)) multiplies a trained model's service
prediction for the agent (`predictor.base.regime_corrected`). The state is plain numbers, kept
by the tracker from the outcome events it receives, so a replica replaying them holds the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Residuals are clipped to this many e-folds either way (a hung task or a clock glitch must not
# set a regime beyond any real slow-down).
MAX_LOG_RESIDUAL = math.log(20.0)


@dataclass(frozen=True)
class RegimeConfig:
    """Page-Hinkley parameters on log residuals, and how long a regime's evidence speaks."""

    enabled: bool = True
    delta: float = 0.25
    threshold: float = 2.0
    memory_s: float = 15.0
    bias_alpha: float = 0.05
    # no residual moves the test by more than this: one outlier (a task far larger than its
    # attributes said) is not a slow-down, two in a row may be
    max_step: float = 1.0
    # a regime is declared only for a slow-down at least this large (log factor)
    min_level: float = math.log(2.0)
    max_log_factor: float = math.log(10.0)
    restore_ewmas: bool = True


@dataclass(frozen=True)
class Regime:
    """An agent's current slow-down: log factor `level` shown by work started at `stamp`."""

    level: float
    stamp: float
    memory_s: float

    def factor(self, now: float) -> float:
        age = max(now - self.stamp, 0.0)
        return math.exp(self.level * math.exp(-age / self.memory_s))


class RegimeDetector:
    """One agent's Page-Hinkley test and regime (plain floats: checkpointed as a dict)."""

    __slots__ = ("bias", "cum", "level", "n", "samples", "stamp", "window_latest", "window_sum")

    def __init__(self) -> None:
        # The model's usual log error on this agent per task type, learned outside regimes (a
        # specialist runs its off-home types slower than predicted all the time: not a regime),
        # with the residuals seen per type (the bias is shrunk towards 0 while they are few).
        self.bias: dict[str, float] = {}
        self.n: dict[str, int] = {}
        # The Page-Hinkley sum of (excess - delta) above its running minimum; it restarts from 0
        # whenever it falls to it (the one-sided test for an increase).
        self.cum = 0.0
        self.window_sum = 0.0  # excess above delta summed since the sum last restarted
        self.samples = 0  # the residuals in it
        self.window_latest = -math.inf  # latest start among the residuals since the restart
        self.level = 0.0  # 0: no regime
        self.stamp = -math.inf  # start of the latest work that set, confirmed or ended a regime

    def regime(self, config: RegimeConfig) -> Regime | None:
        if self.level <= 0.0:
            return None
        return Regime(self.level, self.stamp, config.memory_s)

    def factor_at(self, now: float, config: RegimeConfig) -> float:
        regime = self.regime(config)
        return 1.0 if regime is None else regime.factor(now)

    def observe(self, log_residual: float, task_type: str, started_at: float, config: RegimeConfig) -> bool:
        """Learn from one completion of `task_type`; True when the regime changed."""
        r = min(max(log_residual, -MAX_LOG_RESIDUAL), MAX_LOG_RESIDUAL)
        if started_at < self.stamp:
            # started before the latest evidence that set or ended a regime: says nothing new
            # (a slowed task finishing long after its agent recovered must not re-raise it)
            return False
        n = self.n.get(task_type, 0)
        bias = self.bias.get(task_type, 0.0)
        excess = r - bias * n / (n + 10.0)
        self.n[task_type] = n + 1
        if self.level > 0.0:
            return self._in_regime(excess, started_at, config)
        self.bias[task_type] = bias + config.bias_alpha * (r - bias)
        return self._test(excess, started_at, config)

    def _test(self, excess: float, started_at: float, config: RegimeConfig) -> bool:
        self.cum += min(excess - config.delta, config.max_step)
        if self.cum <= 0.0:
            self._reset_test()
            return False
        if excess > config.delta:  # the level: the mean of the residuals that pushed the test up
            self.window_sum += excess
            self.samples += 1
        self.window_latest = max(self.window_latest, started_at)
        if self.cum < config.threshold:
            return False
        level = min(self.window_sum / self.samples, config.max_log_factor)
        stamp = self.window_latest
        self._reset_test()
        if level <= max(config.min_level, 0.0):
            return False
        self.level, self.stamp = level, stamp
        return True

    def _in_regime(self, excess: float, started_at: float, config: RegimeConfig) -> bool:
        if excess > 0.5 * self.level:
            self.level += 0.3 * (min(excess, config.max_log_factor) - self.level)
            self.stamp = started_at
            return True
        # Work that started after the latest slow evidence ran as usual: the regime is over.
        self.level, self.stamp = 0.0, started_at
        self._reset_test()
        return True

    def _reset_test(self) -> None:
        self.cum = 0.0
        self.window_sum, self.samples, self.window_latest = 0.0, 0, -math.inf

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"bias": dict(self.bias), "n": dict(self.n)}
        for name in _SCALARS:
            value = getattr(self, name)
            document[name] = value if math.isfinite(value) else None  # JSON has no infinities
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> RegimeDetector:
        detector = cls()
        detector.bias = {k: float(v) for k, v in document.get("bias", {}).items()}
        detector.n = {k: int(v) for k, v in document.get("n", {}).items()}
        for name in _SCALARS:
            value = document.get(name)
            if value is not None:
                default = getattr(detector, name)
                setattr(detector, name, type(default)(value))
        return detector


_SCALARS = ("cum", "level", "samples", "stamp", "window_latest", "window_sum")
