"""Which strategy a selection uses while experiments run: the one seam between experiments and
the balancer, shared by the service and the simulator.

A selection that names a strategy is never re-routed. Otherwise the oldest running experiment
whose scope holds the task puts it in an arm by the stable hash of its task id, and the arm's
strategy selects. An arm with its own hybrid weights or model version selects through its own
strategy instance, registered in the balancer under `strategy[experiment/arm]`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from agentlb.balancer import Balancer
from agentlb.domain import ExperimentArmRef, TaskRequest
from agentlb.errors import ExperimentError
from agentlb.experiments.design import Arm, Experiment
from agentlb.predictor.base import Predictor, PredictorRef

PredictorLoader = Callable[[str], Predictor]


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
            arm = design.arm_for(experiment.id, task.task_id)
            return arm_strategy_name(experiment.id, arm), ExperimentArmRef(experiment.id, arm.name)
        return None, None

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
