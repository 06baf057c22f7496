"""Which strategy a selection uses while experiments run: the one seam between experiments and
the balancer, shared by the service and the simulator.

A selection that names a strategy is never re-routed. Otherwise the oldest running experiment
whose scope holds the task puts it in an arm by the stable hash of its task id, and the arm's
strategy selects. An arm with its own hybrid weights or model version selects through its own
strategy instance, registered in the balancer under `strategy[experiment/arm]`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from agentlb.balancer import Balancer
from agentlb.domain import ExperimentArmRef, TaskRequest
from agentlb.errors import ExperimentError
from agentlb.experiments.bandit import ArmStats, ThompsonAllocator
from agentlb.experiments.design import THOMPSON, Arm, Experiment
from agentlb.predictor.base import Predictor, PredictorRef

PredictorLoader = Callable[[str], Predictor]
# Tasks of adaptive (Thompson) experiments awaiting their outcome, for the in-process update of
# the arms' posteriors; the oldest are forgotten beyond this (the store-based refresh at each
# upkeep still counts them).
MAX_PENDING = 100_000


def arm_strategy_name(experiment_id: str, arm: Arm) -> str:
    """The balancer strategy an arm selects with: its strategy itself, or a variant of it."""
    if arm.weights is None and arm.model_version is None:
        return arm.strategy
    return f"{arm.strategy}[{experiment_id}/{arm.name}]"


class ExperimentRouter:
    """The running experiments, their arms' strategies in the balancer, and per-experiment
    counts of routed tasks (for `max_tasks`). Thread-safe: `route` runs on the request path,
    `set_running` from a maintenance thread."""

    def __init__(
        self,
        balancer: Balancer,
        clock: Callable[[], float],
        load_model_version: PredictorLoader | None = None,
    ) -> None:
        self.balancer = balancer
        self.clock = clock
        self.load_model_version = load_model_version
        self._running: tuple[Experiment, ...] = ()
        self._routed: dict[str, int] = {}
        self._variants: dict[str, tuple[str, ...]] = {}  # experiment id -> variant names
        self._allocators: dict[str, ThompsonAllocator] = {}
        self._pending: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def running(self) -> tuple[Experiment, ...]:
        return self._running

    def routed(self, experiment_id: str) -> int:
        return self._routed.get(experiment_id, 0)

    def prepared(self, experiment_id: str) -> bool:
        return experiment_id in self._variants

    def prepare(self, experiment: Experiment) -> None:
        """Register the strategies of an experiment's arms; ExperimentError naming the arm when
        one cannot be built (e.g. a model version that does not load)."""
        names: list[str] = []
        for i, arm in enumerate(experiment.design.arms):
            name = arm_strategy_name(experiment.id, arm)
            if name == arm.strategy:
                continue
            predictor: PredictorRef | None = None
            if arm.model_version is not None:
                if self.load_model_version is None:
                    raise ExperimentError(
                        f"arms[{i}].model_version", "model versions need a model registry (AGENTLB_MODEL_URI)"
                    )
                try:
                    predictor = PredictorRef(self.load_model_version(arm.model_version))
                except Exception as exc:  # any load failure is the arm's problem, named
                    raise ExperimentError(
                        f"arms[{i}].model_version",
                        f"model version {arm.model_version!r} does not load: {exc}",
                    ) from exc
            self.balancer.add_strategy(name, self.balancer.variant(arm.strategy, predictor, arm.weights))
            names.append(name)
        with self._lock:
            self._variants[experiment.id] = tuple(names)
            if experiment.design.allocation == THOMPSON:
                self._allocators[experiment.id] = ThompsonAllocator(
                    [a.name for a in experiment.design.arms],
                    experiment.design.min_share,
                    seed=self.balancer.seed,
                )

    def set_running(self, experiments: Sequence[Experiment], routed: Mapping[str, int] | None = None) -> None:
        """Route to these experiments from now on (oldest first); arms' strategies are built for
        new ones and dropped for those no longer running. `routed`: tasks already routed to each
        (from the store, so that `max_tasks` holds across restarts and replicas)."""
        ordered = tuple(sorted((e for e in experiments if e.running), key=lambda e: (e.created_at, e.id)))
        for experiment in ordered:
            if not self.prepared(experiment.id):
                self.prepare(experiment)
        keep = {e.id for e in ordered}
        with self._lock:
            gone = [eid for eid in self._variants if eid not in keep]
            dropped = [name for eid in gone for name in self._variants.pop(eid)]
            for eid in gone:
                self._allocators.pop(eid, None)
            for eid, count in (routed or {}).items():
                self._routed[eid] = max(self._routed.get(eid, 0), count)
            self._running = ordered
        for name in dropped:
            self.balancer.remove_strategy(name)

    def route(self, task: TaskRequest, strategy: str | None) -> tuple[str | None, ExperimentArmRef | None]:
        """The strategy to select with, and the arm when an experiment took the task."""
        if strategy is not None or not self._running:
            return strategy, None
        now = self.clock()
        for experiment in self._running:
            design = experiment.design
            if not design.in_scope(task) or experiment.expired(now):
                continue
            with self._lock:
                count = self._routed.get(experiment.id, 0)
                if design.max_tasks is not None and count >= design.max_tasks:
                    continue
                self._routed[experiment.id] = count + 1
                allocator = self._allocators.get(experiment.id)
                if allocator is None:
                    arm = design.arm_for(experiment.id, task.task_id)
                else:
                    name = allocator.choose()
                    arm = next(a for a in design.arms if a.name == name)
                    self._pending[task.task_id] = (experiment.id, name, now)
                    if len(self._pending) > MAX_PENDING:
                        self._pending.popitem(last=False)
            return arm_strategy_name(experiment.id, arm), ExperimentArmRef(experiment.id, arm.name)
        return None, None

    def observe_outcome(self, task_id: str, finished_at: float) -> None:
        """A routed task of an adaptive experiment finished: its arm's posterior learns the
        completion time (outcome time minus routing time)."""
        if not self._pending:
            return
        with self._lock:
            entry = self._pending.pop(task_id, None)
            if entry is None:
                return
            experiment_id, arm, routed_at = entry
            allocator = self._allocators.get(experiment_id)
            if allocator is not None:
                allocator.observe(arm, max(0.0, finished_at - routed_at))

    def refresh_allocator(self, experiment_id: str, stats: Mapping[str, ArmStats]) -> None:
        """Replace an adaptive experiment's arm statistics with the store's (every replica's
        outcomes, the ones this process never saw included)."""
        with self._lock:
            allocator = self._allocators.get(experiment_id)
            if allocator is not None:
                allocator.replace(stats)

    def limits_reached(self, now: float) -> list[tuple[Experiment, str]]:
        """Running experiments whose task or time limit is reached, with the reason."""
        done = []
        for experiment in self._running:
            limit = experiment.design.max_tasks
            if limit is not None and self.routed(experiment.id) >= limit:
                done.append((experiment, f"max_tasks reached ({limit} tasks)"))
            elif experiment.expired(now):
                done.append((experiment, f"max_duration_s reached ({experiment.design.max_duration_s:g} s)"))
        return done
