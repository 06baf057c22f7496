"""Online residual correction of a model's service-time prediction, per agent.

The offline model says how long a task should take; an agent's recent residuals say how it
runs right now. The tracker keeps one `ResidualCorrection` per agent, updated from the outcome
events it already receives (the completed task's duration against the p50 recorded at its
dispatch), so a replica that replays those events holds the same correction. Strategies read
the result as `AgentState.service_correction`, a factor on the predicted service time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESIDUAL_ALPHA = 0.3
RESIDUAL_PRIOR_SAMPLES = 2.0
# evidence fades with the time since the agent's last completion: an agent shunned for being
# slow completes nothing, and a correction that never fades would exile it for good
RESIDUAL_FADE_S = 30.0
# a factor beyond this either way is clipped: one wild duration must not exile an agent
MAX_LOG_CORRECTION = math.log(8.0)


@dataclass
class ResidualCorrection:
    """EWMA of log(actual / model p50), shrunk towards 0 while samples are few."""

    log_ratio: float = 0.0
    samples: int = 0
    stamp_s: float = 0.0

    def applied_log(self) -> float:
        n = float(self.samples)
        return self.log_ratio * n / (n + RESIDUAL_PRIOR_SAMPLES)

    def factor(self) -> float:
        return math.exp(self.applied_log())

    def observe(self, duration_s: float, predicted_s: float, now_s: float, dispatched_s: float) -> None:
        """`predicted_s` was already corrected at dispatch (by about the faded `applied_log()`
        then); adding that back makes the EWMA one of the raw model's residual, not of its own
        correction."""
        if not (duration_s > 0 and predicted_s > 0):
            return
        in_force = self.applied_log() * math.exp(-max(dispatched_s - self.stamp_s, 0.0) / RESIDUAL_FADE_S)
        raw = math.log(duration_s / predicted_s) + in_force
        raw = max(-MAX_LOG_CORRECTION, min(MAX_LOG_CORRECTION, raw))
        if self.samples == 0:
            self.log_ratio = raw
        else:
            self.log_ratio += RESIDUAL_ALPHA * (raw - self.log_ratio)
        self.samples += 1
        self.stamp_s = now_s


def faded_factor(log_correction: float, stamp_s: float, now_s: float) -> float:
    """The factor in force at `now_s`: the log correction fades with the evidence's age."""
    if log_correction == 0.0:
        return 1.0
    age_s = max(now_s - stamp_s, 0.0)
    return math.exp(log_correction * math.exp(-age_s / RESIDUAL_FADE_S))
