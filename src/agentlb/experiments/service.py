"""Experiments in a running service: start, stop, report, and the periodic upkeep that applies
stop conditions and picks up experiments started or stopped at other replicas (the store is
the one truth; every replica routes from what it reads there)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from agentlb.balancer import Balancer
from agentlb.domain import SelectionResult
from agentlb.errors import ExperimentError, StoreUnavailableError, UnknownExperimentError
from agentlb.experiments.design import (
    COMPLETED,
    RUNNING,
    STATUSES,
    STOPPED,
    THOMPSON,
    Arm,
    Experiment,
    ExperimentDesign,
    design,
)
from agentlb.experiments.report import arm_samples_from_rows, bandit_stats, experiment_report
from agentlb.experiments.routing import ExperimentRouter, PredictorLoader
from agentlb.observability import log_event
from agentlb.store import Store
from agentlb.store.experiments import ExperimentRecords

log = logging.getLogger("agentlb.experiments")
WEIGHT_BANDIT = "weight-bandit"


class ExperimentMetrics:
    """Per-arm series, in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.selections = Counter(
            "agentlb_experiment_selections_total",
            "Selections routed to an experiment arm",
            ["experiment", "arm"],
            registry=registry,
        )
        self.completed = Gauge(
            "agentlb_experiment_arm_completed_tasks",
            "Completed tasks of an experiment arm (from the store, at the last upkeep)",
            ["experiment", "arm"],
            registry=registry,
        )
        self.mean_completion = Gauge(
            "agentlb_experiment_arm_mean_completion_seconds",
            "Mean completion time (report minus selection) of an experiment arm",
            ["experiment", "arm"],
            registry=registry,
        )
        self.decided = Gauge(
            "agentlb_experiment_decided",
            "1 when the experiment's sequential test has decided",
            ["experiment"],
            registry=registry,
        )

    def publish(self, experiment: Experiment, report: dict[str, Any]) -> None:
        for arm in report["arms"]:
            labels = (experiment.id, arm["name"])
            self.completed.labels(*labels).set(arm["completed"])
            if arm["mean_completion_s"] is not None:
                self.mean_completion.labels(*labels).set(arm["mean_completion_s"])
        self.decided.labels(experiment.id).set(1.0 if report["verdict"]["decided"] else 0.0)


class ExperimentService:
    def __init__(
        self,
        store: Store,
        balancer: Balancer,
        registry: CollectorRegistry,
        clock: Callable[[], float],
        strategies: Sequence[str],
        load_model_version: PredictorLoader | None = None,
        apply_weights: Callable[[dict[str, float]], object] | None = None,
    ) -> None:
        self.records = ExperimentRecords(store)
        self.router = ExperimentRouter(balancer, clock, load_model_version)
        self.metrics = ExperimentMetrics(registry)
        self.clock = clock
        self.strategies = tuple(strategies)
        self.apply_weights = apply_weights

    def load(self) -> None:
        """Route to the running experiments in the store (at start, and at every upkeep)."""
        running = self.records.find(RUNNING)
        usable = []
        for experiment in running:
            if self.router.prepared(experiment.id):
                usable.append(experiment)
                continue
            try:
                self.router.prepare(experiment)
            except ExperimentError as exc:
                self.records.finish(experiment.id, STOPPED, f"cannot run here: {exc}", self.clock())
                log_event(
                    log, "experiment_unusable", logging.WARNING, experiment=experiment.id, reason=str(exc)
                )
                continue
            usable.append(experiment)
        self.router.set_running(usable, self.records.routed_counts())

    # --- lifecycle ------------------------------------------------------------------
    def start(self, design: ExperimentDesign, created_by: str) -> Experiment:
        """Validate the arms against this service (strategies, model versions), store the
        experiment, and route to it from the next selection."""
        for i, arm in enumerate(design.arms):
            if arm.strategy not in self.strategies:
                raise ExperimentError(
                    f"arms[{i}].strategy",
                    f"unknown strategy {arm.strategy!r}; valid: {', '.join(self.strategies)}",
                )
        experiment = new_experiment(design, created_by, self.clock())
        self.router.prepare(experiment)  # a model version that does not load fails here, not later
        self.records.create(experiment)
        self.router.set_running([*self.router.running, experiment])
        log_event(log, "experiment_started", experiment=experiment.id, design=design.as_dict(), by=created_by)
        return experiment

    def ensure_weight_bandit(self, candidates: Sequence[Mapping[str, float]]) -> Experiment:
        """The running live weight bandit, started over `candidates` when none runs."""
        for experiment in self.records.find(RUNNING):
            if experiment.design.name == WEIGHT_BANDIT:
                return experiment
        share = 1.0 / len(candidates)
        plan = design(
            WEIGHT_BANDIT,
            [Arm(f"w{i}", "hybrid", share, weights=dict(w)) for i, w in enumerate(candidates)],
            allocation=THOMPSON,
            apply_winner=True,
            strategies=self.strategies,
        )
        return self.start(plan, "settings")

    def get(self, experiment_id: str) -> Experiment:
        experiment = self.records.get(experiment_id)
        if experiment is None:
            raise UnknownExperimentError(experiment_id)
        return experiment

    def list(self, status: str | None = None) -> list[Experiment]:
        if status is not None and status not in STATUSES:
            raise ExperimentError("status", f"one of {', '.join(STATUSES)}")
        return self.records.find(status)

    def stop(self, experiment_id: str, stopped_by: str) -> Experiment:
        experiment = self.get(experiment_id)
        if experiment.running:
            self.records.finish(experiment_id, STOPPED, f"stopped by {stopped_by}", self.clock())
            log_event(log, "experiment_stopped", experiment=experiment_id, by=stopped_by)
            self.router.set_running([e for e in self.router.running if e.id != experiment_id])
        return self.get(experiment_id)

    # --- evidence -------------------------------------------------------------------
    def report(self, experiment_id: str) -> dict[str, Any]:
        """The experiment with its per-arm report and verdict (a decided experiment with
        `stop_when_decided` is completed by this read, as by the upkeep)."""
        experiment = self.get(experiment_id)
        report = self._evidence(experiment)
        if experiment.running and experiment.design.stop_when_decided and report["verdict"]["decided"]:
            self._complete(experiment, f"decided: {report['verdict']['winner']} wins")
            experiment = self.get(experiment_id)
        return {**describe(experiment), **report}

    def _evidence(self, experiment: Experiment) -> dict[str, Any]:
        report = evidence(self.records, experiment)
        self.metrics.publish(experiment, report)
        return report

    def observe(self, result: SelectionResult) -> None:
        if result.experiment is not None:
            self.metrics.selections.labels(result.experiment.experiment_id, result.experiment.arm).inc()

    def resume(self) -> None:
        """At start: route to the running experiments in the store; their evidence and stop
        conditions wait for the first upkeep (start-up reads no experiment's rows)."""
        try:
            self.load()
        except StoreUnavailableError as exc:
            log_event(log, "experiment_resume_failed", logging.WARNING, reason=str(exc))

    def upkeep(self) -> None:
        """Apply stop conditions (tasks, time, a decisive result) and follow the store."""
        try:
            self.load()
            now = self.clock()
            for experiment, reason in self.router.limits_reached(now):
                self._complete(experiment, reason)
            for experiment in self.router.running:
                self._follow(experiment)
        except StoreUnavailableError as exc:
            log_event(log, "experiment_upkeep_failed", logging.WARNING, reason=str(exc))

    def _follow(self, experiment: Experiment) -> None:
        """One running experiment's upkeep: the report (and metrics); an adaptive experiment's
        posteriors from the store; completion when decided and asked to."""
        design = experiment.design
        samples = arm_samples_from_rows(self.records.arm_rows(experiment.id))
        report = experiment_report(design, samples)
        self.metrics.publish(experiment, report)
        if design.allocation == THOMPSON:
            self.router.refresh_allocator(experiment.id, bandit_stats(design, samples))
        verdict = report["verdict"]
        if not verdict["decided"]:
            return
        if design.allocation == THOMPSON:
            chance = verdict["probability_best"][verdict["winner"]]
            self._complete(experiment, f"settled: {verdict['winner']} (P(fastest) = {chance:.3f})")
            winner = next(a for a in design.arms if a.name == verdict["winner"])
            if design.apply_winner and winner.weights is not None and self.apply_weights is not None:
                self.apply_weights(dict(winner.weights))
        elif design.stop_when_decided:
            self._complete(experiment, f"decided: {verdict['winner']} wins")

    def _complete(self, experiment: Experiment, reason: str) -> None:
        if self.records.finish(experiment.id, COMPLETED, reason, self.clock()):
            log_event(log, "experiment_completed", experiment=experiment.id, reason=reason)
        self.router.set_running([e for e in self.router.running if e.id != experiment.id])


def evidence(records: ExperimentRecords, experiment: Experiment) -> dict[str, Any]:
    """The per-arm report and verdict from the stored dispatches and outcomes."""
    return experiment_report(experiment.design, arm_samples_from_rows(records.arm_rows(experiment.id)))


def new_experiment(design: ExperimentDesign, created_by: str, now: float) -> Experiment:
    return Experiment(
        id=secrets.token_hex(6), design=design, status=RUNNING, created_at=now, created_by=created_by
    )


def describe(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.id,
        "name": experiment.design.name,
        "status": experiment.status,
        "created_at": experiment.created_at,
        "created_by": experiment.created_by,
        "stopped_at": experiment.stopped_at,
        "stop_reason": experiment.stop_reason,
        "design": experiment.design.as_dict(),
    }
