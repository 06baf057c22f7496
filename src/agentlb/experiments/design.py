"""What an online experiment is: arms, their traffic shares, its scope and its stop conditions,
and the rule that puts a task in an arm.

Pure data and pure functions (no I/O): the service and the simulator route tasks with the same
code, so a verdict measured in the simulator is a verdict on what serving does.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlb.domain import TaskRequest
from agentlb.errors import ExperimentError

ARM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
SHARE_TOLERANCE = 1e-6
RUNNING = "running"
STOPPED = "stopped"  # stopped by an operator
COMPLETED = "completed"  # a stop condition was met
STATUSES = (RUNNING, STOPPED, COMPLETED)
DEFAULT_ALPHA = 0.05
# The normal mixture's scale, as a share of the control arm's mean completion time: the
# effect sizes the test is most sensitive to (sequential.py).
DEFAULT_MIXING_EFFECT = 0.1
MAX_ARMS = 8
HASH = "hash"  # a fixed split by a stable hash of the task id (an A/B test)
THOMPSON = "thompson"  # Thompson sampling on completion time (experiments/bandit.py)
ALLOCATIONS = (HASH, THOMPSON)
DEFAULT_SETTLE_PROBABILITY = 0.95
DEFAULT_MIN_SHARE = 0.05


@dataclass(frozen=True)
class Arm:
    """One way of selecting: a strategy, optionally with its own hybrid weights or model version."""

    name: str
    strategy: str
    share: float
    weights: Mapping[str, float] | None = None
    model_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "share": self.share,
            "weights": None if self.weights is None else dict(self.weights),
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class ExperimentDesign:
    """Arms (the first is the control), scope and stop conditions."""

    name: str
    arms: tuple[Arm, ...]
    task_types: frozenset[str] | None = None
    capabilities: frozenset[str] | None = None
    max_tasks: int | None = None
    max_duration_s: float | None = None
    stop_when_decided: bool = False
    alpha: float = DEFAULT_ALPHA
    mixing_effect: float = DEFAULT_MIXING_EFFECT
    allocation: str = HASH
    settle_probability: float = DEFAULT_SETTLE_PROBABILITY
    min_share: float = DEFAULT_MIN_SHARE
    apply_winner: bool = False
    _bounds: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        total = 0.0
        bounds = []
        for arm in self.arms:
            total += arm.share
            bounds.append(total)
        object.__setattr__(self, "_bounds", tuple(b / total for b in bounds) if total > 0 else ())

    @property
    def control(self) -> Arm:
        return self.arms[0]

    def in_scope(self, task: TaskRequest) -> bool:
        """A task is in scope when its type is listed (or no types are) and it requires every
        scope capability (or none are listed)."""
        if self.task_types is not None and task.task_type not in self.task_types:
            return False
        return self.capabilities is None or self.capabilities <= task.required_capabilities

    def arm_for(self, experiment_id: str, task_id: str) -> Arm:
        """The task's arm, by a stable hash of (experiment, task id): the same task id always
        lands in the same arm, on every replica and in every run, and arms get their shares."""
        digest = hashlib.blake2b(f"{experiment_id}\x00{task_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2.0**64
        for arm, bound in zip(self.arms, self._bounds, strict=True):
            if u < bound:
                return arm
        return self.arms[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arms": [arm.as_dict() for arm in self.arms],
            "task_types": None if self.task_types is None else sorted(self.task_types),
            "capabilities": None if self.capabilities is None else sorted(self.capabilities),
            "max_tasks": self.max_tasks,
            "max_duration_s": self.max_duration_s,
            "stop_when_decided": self.stop_when_decided,
            "alpha": self.alpha,
            "mixing_effect": self.mixing_effect,
            "allocation": self.allocation,
            "settle_probability": self.settle_probability,
            "min_share": self.min_share,
            "apply_winner": self.apply_winner,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], strategies: Sequence[str] | None = None) -> ExperimentDesign:
        """The design as stored (`as_dict`) or as a file or request gives it, validated again;
        ExperimentError names what is missing or wrong."""
        unknown = sorted(set(raw) - DESIGN_FIELDS)
        if unknown:
            raise ExperimentError(unknown[0], f"unknown field; known: {', '.join(sorted(DESIGN_FIELDS))}")
        if not isinstance(raw.get("arms"), list):
            raise ExperimentError("arms", "a list of arms is required")
        arms = []
        for i, a in enumerate(raw["arms"]):
            try:
                arms.append(
                    Arm(
                        name=str(a["name"]),
                        strategy=str(a["strategy"]),
                        share=float(a["share"]),
                        weights=None if a.get("weights") is None else dict(a["weights"]),
                        model_version=None if a.get("model_version") is None else str(a["model_version"]),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ExperimentError(f"arms[{i}]", f"needs name, strategy and share ({exc!r})") from exc
        return design(
            name=str(raw.get("name", "")),
            arms=arms,
            task_types=raw.get("task_types"),
            capabilities=raw.get("capabilities"),
            max_tasks=raw.get("max_tasks"),
            max_duration_s=raw.get("max_duration_s"),
            stop_when_decided=bool(raw.get("stop_when_decided", False)),
            alpha=float(raw.get("alpha", DEFAULT_ALPHA)),
            mixing_effect=float(raw.get("mixing_effect", DEFAULT_MIXING_EFFECT)),
            allocation=str(raw.get("allocation", HASH)),
            settle_probability=float(raw.get("settle_probability", DEFAULT_SETTLE_PROBABILITY)),
            min_share=float(raw.get("min_share", DEFAULT_MIN_SHARE)),
            apply_winner=bool(raw.get("apply_winner", False)),
            strategies=strategies,
        )


DESIGN_FIELDS = frozenset(
    {
        "name",
        "arms",
        "task_types",
        "capabilities",
        "max_tasks",
        "max_duration_s",
        "stop_when_decided",
        "alpha",
        "mixing_effect",
        "allocation",
        "settle_probability",
        "min_share",
        "apply_winner",
    }
)


@dataclass(frozen=True)
class Experiment:
    """A design with its identity and lifecycle, as the store keeps it."""

    id: str
    design: ExperimentDesign
    status: str
    created_at: float
    created_by: str = ""
    stopped_at: float | None = None
    stop_reason: str | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def expired(self, now: float) -> bool:
        limit = self.design.max_duration_s
        return limit is not None and now >= self.created_at + limit


def design(
    name: str,
    arms: Sequence[Arm],
    task_types: Sequence[str] | None = None,
    capabilities: Sequence[str] | None = None,
    max_tasks: int | None = None,
    max_duration_s: float | None = None,
    stop_when_decided: bool = False,
    alpha: float = DEFAULT_ALPHA,
    mixing_effect: float = DEFAULT_MIXING_EFFECT,
    strategies: Sequence[str] | None = None,
    allocation: str = HASH,
    settle_probability: float = DEFAULT_SETTLE_PROBABILITY,
    min_share: float = DEFAULT_MIN_SHARE,
    apply_winner: bool = False,
) -> ExperimentDesign:
    """A validated design; ExperimentError names the field and the reason. With `strategies`
    (the balancer's names), each arm's strategy must be one of them."""
    if not name.strip() or len(name) > 128:
        raise ExperimentError("name", "must be 1 to 128 characters")
    if not 2 <= len(arms) <= MAX_ARMS:
        raise ExperimentError("arms", f"an experiment needs 2 to {MAX_ARMS} arms, got {len(arms)}")
    seen: set[str] = set()
    for i, arm in enumerate(arms):
        where = f"arms[{i}]"
        if not ARM_NAME.match(arm.name):
            raise ExperimentError(f"{where}.name", "1 to 32 letters, digits, '_', '.' or '-'")
        if arm.name in seen:
            raise ExperimentError(f"{where}.name", f"arm name {arm.name!r} is used twice")
        seen.add(arm.name)
        if strategies is not None and arm.strategy not in strategies:
            raise ExperimentError(
                f"{where}.strategy", f"unknown strategy {arm.strategy!r}; valid: {', '.join(strategies)}"
            )
        if not (math.isfinite(arm.share) and arm.share > 0):
            raise ExperimentError(f"{where}.share", "must be a positive number")
        if arm.weights is not None and arm.strategy != "hybrid":
            raise ExperimentError(f"{where}.weights", "weights apply to the hybrid strategy only")
        if arm.weights is not None:
            _check_weights(f"{where}.weights", arm.weights)
        if arm.model_version is not None and not arm.model_version.strip():
            raise ExperimentError(f"{where}.model_version", "must not be empty")
    total = sum(arm.share for arm in arms)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ExperimentError("arms", f"shares must sum to 1, they sum to {total:g}")
    if max_tasks is not None and not (isinstance(max_tasks, int) and max_tasks >= 1):
        raise ExperimentError("max_tasks", "must be a whole number >= 1")
    if max_duration_s is not None and not (math.isfinite(max_duration_s) and max_duration_s > 0):
        raise ExperimentError("max_duration_s", "must be a positive number of seconds")
    if not 0.0 < alpha < 0.5:
        raise ExperimentError("alpha", "must be between 0 and 0.5")
    if not (math.isfinite(mixing_effect) and mixing_effect > 0):
        raise ExperimentError("mixing_effect", "must be a positive number")
    if allocation not in ALLOCATIONS:
        raise ExperimentError("allocation", f"one of {', '.join(ALLOCATIONS)}")
    if not 0.5 < settle_probability < 1.0:
        raise ExperimentError("settle_probability", "must be between 0.5 and 1")
    if not 0.0 <= min_share * len(arms) < 1.0:
        raise ExperimentError("min_share", f"must be >= 0 and below 1/{len(arms)} (one share per arm)")
    if apply_winner and any(arm.strategy != "hybrid" or arm.weights is None for arm in arms):
        raise ExperimentError(
            "apply_winner", "applies a winner's hybrid weights: every arm needs hybrid weights"
        )
    return ExperimentDesign(
        name=name.strip(),
        arms=tuple(arms),
        task_types=_names("task_types", task_types),
        capabilities=_names("capabilities", capabilities),
        max_tasks=max_tasks,
        max_duration_s=max_duration_s,
        stop_when_decided=stop_when_decided,
        alpha=alpha,
        mixing_effect=mixing_effect,
        allocation=allocation,
        settle_probability=settle_probability,
        min_share=min_share,
        apply_winner=apply_winner,
    )


def _names(field_name: str, values: Sequence[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if not values:
        raise ExperimentError(field_name, "give at least one value, or null for no restriction")
    if any(not isinstance(v, str) or not v for v in values):
        raise ExperimentError(field_name, "every value must be a non-empty string")
    return frozenset(values)


def _check_weights(field_name: str, weights: Mapping[str, float]) -> None:
    from agentlb.settings import normalise_weights

    try:
        normalise_weights(dict(weights))
    except ValueError as exc:
        raise ExperimentError(field_name, str(exc)) from exc
