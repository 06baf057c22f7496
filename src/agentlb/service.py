"""The application service: one selection = balancer + dispatch record + metrics/log; one outcome
= store + tracker. No HTTP types here, so the API, the CLI and scripts share one code path.

Durability rule: an outcome is committed to the store before the tracker learns from it and
before the API acknowledges it. A dispatch record is best effort: when the database is down a
selection still succeeds from memory, the failure is counted and /health says "degraded".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import statistics
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlb.balancer import Balancer, healthy_counts
from agentlb.domain import (
    Agent,
    AgentLoadMetrics,
    CompletedTask,
    SelectionResult,
    TaskOutcome,
    TaskRequest,
)
from agentlb.drift import DriftPolicy, assess_serving_model
from agentlb.errors import (
    AgentLBError,
    ConflictingOutcomeError,
    DispatchWriteSkippedError,
    DuplicateTaskError,
    InvalidWeightsError,
    ModelLoadError,
    StoreUnavailableError,
    TaskAlreadyCompletedError,
    UnknownAgentError,
    UnknownStrategyError,
    UnknownTaskError,
)
from agentlb.experiments.service import ExperimentService
from agentlb.group_commit import GroupCommitWriter, PendingWrite
from agentlb.model_loading import alias_of, load_model, load_predictor
from agentlb.observability import Metrics, log_event, selection_log_fields
from agentlb.predictor.base import Predictor, PredictorRef
from agentlb.replication import Replica, open_live_state
from agentlb.settings import MODEL_NAME, Settings, normalise_weights
from agentlb.shadow import ShadowScorer
from agentlb.store import OutcomeWrite, Store
from agentlb.strategies import STRATEGY_NAMES
from agentlb.tracker import AgentLoadTracker, Clock

log = logging.getLogger("agentlb.service")
selection_log = logging.getLogger("agentlb.selection")

OVER_UTILISED_LOAD = 0.9
BENCHMARK_MAX_TASKS = 5000
BENCHMARK_MAX_SEEDS = 3
BENCHMARK_MAX_RUNS = 24
# A store failure this recent keeps /health at "degraded".
STORE_FAILURE_WINDOW_S = 60.0
# After a failed dispatch write, skip dispatch writes this long (selections stay fast).
DISPATCH_WRITE_PAUSE_S = 5.0


@dataclass(frozen=True)
class OutcomeReceipt:
    """What `report_outcome` did: the task it closed, whether it was a duplicate."""

    task_id: str
    agent_id: str
    duplicate: bool
    closed_dispatch: bool
    ejected: bool


@dataclass(frozen=True)
class HealthReport:
    status: str  # healthy | degraded | unhealthy
    reasons: list[str]
    database: str
    predictor: dict[str, Any]
    agents_enabled: int
    agents_ejected: int
    dispatch_write_failures: int


@dataclass
class _StoreFailures:
    dispatch_writes: int = 0
    last_failure_at: float = float("-inf")
    last_reason: str = ""


class AgentLBService:
    """Balancer, tracker and store wired together; every public method is thread-safe."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        tracker: AgentLoadTracker,
        balancer: Balancer,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tracker = tracker
        self.balancer = balancer
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.started_at = clock()
        self._failures = _StoreFailures()
        self._failures_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._dispatch_paused_until = float("-inf")
        self.compile_thread: threading.Thread | None = None  # the latest model compile, if any
        # Hot writes (dispatches, outcomes) go through one writer thread that commits them in
        # batches (group commit): one transaction per batch instead of per request, and no
        # SQLite writers colliding in its busy handler (sleeps of up to 100 ms per try).
        self.writer = GroupCommitWriter(store)
        # With AGENTLB_REDIS_URL: this replica's membership of the shared live state.
        self.replica: Replica | None = None
        self.experiments = ExperimentService(
            store,
            balancer,
            self.metrics.registry,
            clock,
            STRATEGY_NAMES,
            self._load_model_version,
            apply_weights=lambda weights: self.configure_weights(weights, "weight-bandit"),
        )
        self.shadow: ShadowScorer | None = None
        if settings.shadow_model_uri:
            self.shadow = ShadowScorer(
                store,
                settings.shadow_model_uri,
                settings.tracking_uri,
                self.metrics.registry,
                clock,
                writer=self.writer.submit_call,
            )

    @property
    def predictor(self) -> PredictorRef:
        return self.balancer.predictor

    # --- lifecycle ------------------------------------------------------------------
    @classmethod
    def open(
        cls, settings: Settings, clock: Clock = time.time, predictor: PredictorRef | None = None
    ) -> AgentLBService:
        """Migrate and open the store, rebuild the tracker from it, load the predictor and
        the last persisted hybrid weights."""
        store = Store.open(settings.db_url)
        try:
            ref = predictor or load_predictor(settings)
            live = open_live_state(settings, store, ref, clock)
        except BaseException:
            store.close()
            raise
        tracker, balancer, replica, report = live.tracker, live.balancer, live.replica, live.report
        service = cls(settings, store, tracker, balancer, clock=clock)
        service.replica = replica
        if settings.weight_bandit:
            service.experiments.ensure_weight_bandit(settings.weight_bandit_candidates)
        service.experiments.resume()
        if service.shadow is not None:
            service.shadow.poll()
        log_event(
            log,
            "service_started",
            restore=_plain(report),
            predictor=ref.current.describe(),
            predictor_fallback=ref.fallback_reason,
        )
        if ref.fallback_reason is None:
            service._record_deployment(ref.current, settings.model_uri or "")
            service.compile_in_background(ref.current)
        return service

    def compile_in_background(self, predictor: Predictor) -> None:
        """Compile a loaded model to native code off the request path (`ModelPredictor.compile`,
        when `model_compile` is on), in the thread kept as `compile_thread`."""
        from agentlb.predictor.model import ModelPredictor

        if not self.settings.model_compile or not isinstance(predictor, ModelPredictor):
            return

        def run() -> None:
            try:
                seconds = predictor.compile(self.settings.compiled_dir)
            except Exception as exc:  # any failure leaves LightGBM serving, visibly
                log_event(
                    log, "model_compile_failed", logging.WARNING, version=predictor.version, reason=str(exc)
                )
                return
            log_event(log, "model_compiled", version=predictor.version, seconds=round(seconds, 3))

        thread = threading.Thread(target=run, name=f"agentlb-compile-{predictor.version}", daemon=True)
        thread.start()
        self.compile_thread = thread

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
        if self.shadow is not None:
            self.shadow.close()
        self.writer.close()
        self.store.close()

    # --- selection ------------------------------------------------------------------
    def select(
        self,
        task: TaskRequest,
        strategy: str | None = None,
        top_k: int = 1,
        client_task_id: bool = False,
    ) -> SelectionResult:
        """Select an agent, count the task in flight and log the dispatch (best effort).

        `client_task_id`: the caller chose the id, so check the store for an older dispatch
        or outcome under it (the tracker forgets expired tasks)."""
        start = time.perf_counter()
        if client_task_id:
            self.check_task_id_unused(task.task_id)
        result = self.choose(task, strategy, top_k)
        self.finish_dispatch(result, start, self.enqueue_dispatch(result).wait())
        return result

    async def select_async(
        self,
        task: TaskRequest,
        strategy: str | None = None,
        top_k: int = 1,
        client_task_id: bool = False,
    ) -> SelectionResult:
        """`select` for callers on an event loop: the selection runs on the loop (CPU only),
        then the request awaits the group commit of its dispatch record while the loop serves
        other requests, whose dispatches join the next batch."""
        start = time.perf_counter()
        if client_task_id:
            self.check_task_id_unused(task.task_id)
        result = self.choose(task, strategy, top_k)
        pending = self.enqueue_dispatch(result, asyncio.get_running_loop())
        self.finish_dispatch(result, start, await pending.wait_async())
        return result

    def check_task_id_unused(self, task_id: str) -> None:
        """DuplicateTaskError when the store already has a dispatch or outcome under the id."""
        if self._task_id_on_record(task_id):
            raise DuplicateTaskError(task_id)

    def choose(self, task: TaskRequest, strategy: str | None = None, top_k: int = 1) -> SelectionResult:
        """The in-memory half of a selection (CPU only, no I/O): the task is now in flight.
        A selection that names no strategy may be routed to a running experiment's arm."""
        routed, arm = self.experiments.router.route(task, strategy)
        if arm is None:
            return self.balancer.select(task, routed, top_k)
        try:
            result = self.balancer.select(task, routed, top_k)
        except UnknownStrategyError:  # the experiment stopped between routing and selecting
            return self.balancer.select(task, None, top_k)
        result = dataclasses.replace(result, experiment=arm)
        self.experiments.observe(result)
        return result

    def record_dispatch(self, result: SelectionResult, started: float) -> None:
        """The I/O half: log the dispatch in the store (waiting for its group commit), then
        metrics and the JSON log line."""
        self.finish_dispatch(result, started, self.enqueue_dispatch(result).wait())

    def enqueue_dispatch(
        self, result: SelectionResult, loop: asyncio.AbstractEventLoop | None = None
    ) -> PendingWrite[AgentLBError | None]:
        """Queue the dispatch record for the next group commit; wait on the handle (with
        `loop`: await it). While writes are paused after a failure the handle is already
        settled with the reason, so a database that hangs does not slow every selection."""
        if self.clock() < self._dispatch_paused_until:
            return PendingWrite.settled(DispatchWriteSkippedError("skipped: database failed recently"))
        try:
            return self.writer.submit_dispatch(result, loop)
        except StoreUnavailableError as exc:
            return PendingWrite.settled(exc)

    def finish_dispatch(self, result: SelectionResult, started: float, error: AgentLBError | None) -> None:
        """After the dispatch write: count a failure (best effort: the selection stands, /health
        shows it), pause writes for DISPATCH_WRITE_PAUSE_S after a database failure, then
        metrics and the JSON log line."""
        if isinstance(error, DuplicateTaskError):
            # Raced with another dispatch of the same client task id: the tracker holds it.
            self._store_failed("record_dispatch", StoreUnavailableError(str(error)))
        elif isinstance(error, StoreUnavailableError):
            if not isinstance(error, DispatchWriteSkippedError):
                self._dispatch_paused_until = self.clock() + DISPATCH_WRITE_PAUSE_S
            self._store_failed("record_dispatch", error)
        elif error is not None:
            self._store_failed("record_dispatch", StoreUnavailableError(f"dispatch not logged: {error}"))
        duration = time.perf_counter() - started
        if self.shadow is not None:
            self.shadow.submit(result)
        self.metrics.observe_selection(result, duration)
        if selection_log.isEnabledFor(logging.INFO):
            selection_log.info(
                "agent_selected", extra={"event": "agent_selected", **selection_log_fields(result, duration)}
            )

    def _task_id_on_record(self, task_id: str) -> bool:
        try:
            return self.store.get_dispatch(task_id) is not None or self.store.get_outcome(task_id) is not None
        except StoreUnavailableError as exc:
            self._store_failed("get_dispatch", exc)
            return False

    # --- outcomes -------------------------------------------------------------------
    def report_outcome(self, outcome: TaskOutcome) -> OutcomeReceipt:
        """Record a finished task. With a task id: idempotent, committed before the tracker
        learns. Without one: the agent's oldest in-flight task (of the type, when given) is
        closed and the outcome is stored under that task's id (or a new id if none was open)."""
        if outcome.task_id is None:
            return self._report_without_task_id(outcome)
        task_id = outcome.task_id
        now = self.clock()
        if self.replica is not None and not self.tracker.is_in_flight(task_id):
            self.replica.catch_up()  # it may have been dispatched at another replica just now
        if self.store.get_outcome(task_id) is not None:
            write = self._record_outcome(outcome, now)  # identical, or ConflictingOutcomeError
            return self._duplicate_or_close(outcome, write.created, now, in_flight=False)
        if not self.tracker.has_agent(outcome.agent_id):
            raise UnknownAgentError(outcome.agent_id)
        owner = self.tracker.in_flight_owner(task_id)
        in_flight = owner is not None
        if owner is None:
            dispatch = self.store.get_dispatch(task_id)
            if dispatch is None:
                raise UnknownTaskError(task_id)
            owner = dispatch.agent_id  # expired from the tracker but on record: still accepted
            if outcome.task_type is None:
                outcome = dataclasses.replace(outcome, task_type=dispatch.task_type)
        if owner != outcome.agent_id:
            raise ConflictingOutcomeError(task_id, ["agent_id"])
        write = self._record_outcome(outcome, now)
        return self._duplicate_or_close(outcome, write.created, now, in_flight=in_flight)

    def _record_outcome(self, outcome: TaskOutcome, now: float) -> OutcomeWrite:
        """Committed (in the writer's next batch) before this returns; raises as
        `Store.record_outcome` does."""
        return self.writer.submit_outcome(outcome, now).wait()

    def _duplicate_or_close(
        self, outcome: TaskOutcome, created: bool, now: float, in_flight: bool
    ) -> OutcomeReceipt:
        assert outcome.task_id is not None
        if not created:
            return OutcomeReceipt(outcome.task_id, outcome.agent_id, True, False, False)
        self.experiments.router.observe_outcome(outcome.task_id, now)
        completed: CompletedTask | None = None
        if in_flight:
            try:
                completed = self.balancer.report(outcome, now)
            except (UnknownTaskError, TaskAlreadyCompletedError):
                # Expired between the check and now; the outcome is committed, so learn from it.
                self.tracker.learn(outcome, now)
        else:
            self.tracker.learn(outcome, now)
        self._observe_outcome(outcome, completed)
        return OutcomeReceipt(
            outcome.task_id,
            outcome.agent_id,
            duplicate=False,
            closed_dispatch=completed is not None,
            ejected=bool(completed and completed.ejected),
        )

    def _report_without_task_id(self, outcome: TaskOutcome) -> OutcomeReceipt:
        now = self.clock()
        completed = self.balancer.report(outcome, now)
        task_id = completed.task_id or uuid.uuid4().hex
        stored = dataclasses.replace(
            outcome, task_id=task_id, task_type=outcome.task_type or completed.task_type
        )
        self._record_outcome(stored, now)
        self.experiments.router.observe_outcome(task_id, now)
        self._observe_outcome(stored, completed)
        return OutcomeReceipt(
            task_id, outcome.agent_id, False, completed.task_id is not None, completed.ejected
        )

    def _observe_outcome(self, outcome: TaskOutcome, completed: CompletedTask | None) -> None:
        predicted = completed.predicted_service_s if completed else None
        ejected = bool(completed and completed.ejected)
        self.metrics.observe_outcome(
            outcome.duration_s, outcome.success, predicted, ejected, self.predictor.current.version
        )
        log_event(
            log,
            "task_outcome",
            component="load_balancer",
            agent_id=outcome.agent_id,
            task_id=outcome.task_id,
            success=outcome.success,
            duration_s=outcome.duration_s,
            ejected=ejected,
        )

    # --- registry -------------------------------------------------------------------
    def register_agent(self, agent: Agent) -> bool:
        """Add an agent to store and tracker; False when an identical one already exists."""
        created = self.store.add_agent(agent)
        self.tracker.register(agent)
        log_event(log, "agent_registered", agent_id=agent.id, new_agent=created)
        return created

    def update_agent(self, agent_id: str, changes: Mapping[str, Any]) -> Agent:
        current = self.store.get_agent(agent_id)
        if current is None:
            raise UnknownAgentError(agent_id)
        updated = dataclasses.replace(current, **dict(changes))
        self.store.upsert_agent(updated)
        self.tracker.register(updated)
        log_event(log, "agent_updated", agent_id=agent_id, fields=sorted(changes))
        return updated

    def delete_agent(self, agent_id: str) -> None:
        if self.store.get_agent(agent_id) is None:
            raise UnknownAgentError(agent_id)
        self.store.delete_agent(agent_id)
        if self.tracker.has_agent(agent_id):
            self.tracker.remove(agent_id)
        log_event(log, "agent_deleted", agent_id=agent_id)

    def heartbeat(
        self,
        agent_id: str,
        cpu_usage: float | None,
        memory_usage: float | None,
        queue_length: int | None,
    ) -> AgentLoadMetrics:
        self.tracker.heartbeat(agent_id, cpu_usage, memory_usage, queue_length)
        return self.agent_load_metrics(agent_id)

    # --- weights and model ----------------------------------------------------------
    def configure_weights(self, weights: Mapping[str, float], changed_by: str) -> dict[str, float]:
        """Validate, persist, then apply at once (a weight change that was not persisted
        would silently vanish at the next restart)."""
        try:
            normalised = normalise_weights(dict(weights))
        except ValueError as exc:
            raise InvalidWeightsError(str(exc)) from exc
        previous = self.balancer.hybrid_weights
        self.store.record_weights(normalised, changed_by)
        applied = self.balancer.set_hybrid_weights(normalised)
        if self.replica is not None:
            self.replica.publish_weights(applied)
        log_event(log, "weights_changed", previous=previous, weights=applied, changed_by=changed_by)
        return applied

    def reload_model(self) -> dict[str, Any]:
        """Load the model at settings.model_uri and swap it in; on failure keep the current
        predictor and raise ModelLoadError."""
        with self._model_lock:
            predictor = load_model(self.settings)
            self.predictor.swap(predictor)
            self._record_deployment(predictor, self.settings.model_uri or "")
        self.compile_in_background(predictor)
        description = predictor.describe()
        log_event(log, "model_reloaded", version=predictor.version, source=predictor.source)
        return description

    def poll_model(self) -> bool:
        """Swap in a new model when the bundle at settings.model_uri changed version (or first
        appeared), or when the registry alias of a `models:/name@alias` URI moved to another
        version; True when a new model was loaded. Runs in a background thread, so MLflow's
        import and the registry call never sit on the request path."""
        if self.shadow is not None:
            self.shadow.poll()
        uri = self.settings.model_uri or ""
        if not uri:
            return False
        if uri.startswith("models:/"):
            return self._poll_registry(uri)
        from agentlb.predictor.model import read_bundle_document

        try:
            document = read_bundle_document(Path(uri).expanduser())
        except ModelLoadError:
            return False  # no bundle (yet): keep what is serving
        version = str(document.get("model_version", "unversioned"))
        current = self.predictor
        if current.fallback_reason is None and current.current.version == version:
            return False
        self.reload_model()
        return True

    def _poll_registry(self, uri: str) -> bool:
        from agentlb.predictor.model import ModelPredictor

        try:
            number = ModelPredictor.registry_version(uri, self.settings.tracking_uri)
        except ModelLoadError as exc:
            log_event(log, "model_poll_failed", logging.WARNING, reason=str(exc))
            return False
        name = uri[len("models:/") :].partition("@")[0]
        current = self.predictor
        if current.fallback_reason is None and current.current.source.startswith(f"models:/{name}/{number} "):
            return False
        self.reload_model()
        return True

    def _load_model_version(self, version: str) -> Predictor:
        """A registered version of the served model (an experiment arm's model)."""
        from agentlb.predictor.model import ModelPredictor

        uri = self.settings.model_uri or ""
        name = (
            uri[len("models:/") :].partition("@")[0].partition("/")[0]
            if uri.startswith("models:/")
            else MODEL_NAME
        )
        return ModelPredictor.from_uri(f"models:/{name}/{version}", self.settings.tracking_uri)

    def model_info(self) -> dict[str, Any]:
        """What serves predictions now: version, source, feature version, loaded_at, training
        metrics, why the heuristic is in use when it is, and the model's drift (its accuracy over
        the drift window against its holdout's)."""
        ref = self.predictor
        info = dict(ref.current.describe())
        info["fallback_reason"] = ref.fallback_reason
        info["model_uri"] = self.settings.model_uri
        info["poll_interval_s"] = self.settings.model_poll_interval_s
        info["shadow"] = None if self.shadow is None else self.shadow.describe()
        try:
            report = assess_serving_model(
                self.store, info, DriftPolicy.from_settings(self.settings), self.clock()
            )
        except StoreUnavailableError as exc:
            self._store_failed("prediction_accuracy", exc)
            info["drift"] = {"error": f"store unavailable: {exc}"}
        else:
            info["drift"] = None if report is None else finite(report.as_dict())
        return info

    def _record_deployment(self, predictor: Predictor, uri: str) -> None:
        try:
            self.store.record_deployment(predictor.version, alias_of(uri), predictor.source)
        except StoreUnavailableError as exc:
            self._store_failed("record_deployment", exc)

    # --- reads ----------------------------------------------------------------------
    def agent_load_metrics(self, agent_id: str) -> AgentLoadMetrics:
        state = self.tracker.state(agent_id)
        return AgentLoadMetrics.from_state(state, self.tracker.snapshot())

    def agent_metrics(self, agent_id: str) -> tuple[AgentLoadMetrics, dict[str, Any]]:
        metrics = self.agent_load_metrics(agent_id)
        return metrics, finite(self.store.agent_history_summary(agent_id))

    def statistics(self) -> dict[str, Any]:
        """The product spec's statistics; selection counts are since this process started."""
        stats = self.balancer.stats
        snapshot = self.tracker.snapshot()
        enabled = [s for s in snapshot.agents if s.agent.enabled]
        loads = [s.load_score for s in enabled]
        total = stats.total_selections
        try:
            accuracy = [finite(_plain(row)) for row in self.store.prediction_accuracy()]
        except StoreUnavailableError as exc:
            self._store_failed("prediction_accuracy", exc)
            accuracy = []
        return {
            "total_selections": total,
            "strategy_distribution": dict(stats.selections_by_strategy),
            "agent_distribution": dict(stats.selections_by_agent),
            "fallback_activation_rate": stats.fallbacks / total if total else 0.0,
            "panic_selections": stats.panics,
            "ejections": stats.ejections,
            "agent_utilisation_rate": (
                sum(1 for s in enabled if s.active_tasks > 0) / len(enabled) if enabled else 0.0
            ),
            "load_distribution_variance": statistics.pvariance(loads) if loads else 0.0,
            "over_utilised_agents": sorted(s.agent.id for s in enabled if s.load_score >= OVER_UTILISED_LOAD),
            "over_utilised_threshold": OVER_UTILISED_LOAD,
            "prediction_accuracy": accuracy,
            "hybrid_weights": self.balancer.hybrid_weights,
            "since": self.started_at if self.replica is None else self.replica.since,
            "agents": [AgentLoadMetrics.from_state(s, snapshot) for s in snapshot.agents],
        }

    def health(self) -> HealthReport:
        """healthy / degraded / unhealthy with the reasons (database, predictor, agents)."""
        reasons: list[str] = []
        unhealthy = False
        try:
            self.store.ping()
            database = "ok"
        except StoreUnavailableError as exc:
            database = f"unavailable: {exc}"
            reasons.append(f"database unavailable ({exc}); selections continue from memory")
        with self._failures_lock:
            failures = self._failures.dispatch_writes
            recent = self.clock() - self._failures.last_failure_at < STORE_FAILURE_WINDOW_S
            last_reason = self._failures.last_reason
        if recent and database == "ok":
            reasons.append(
                f"a database write failed in the last {STORE_FAILURE_WINDOW_S:.0f} s: {last_reason}"
            )
        if self.replica is not None:
            reasons.extend(self.replica.health_reasons())
        ref = self.predictor
        predictor = dict(ref.current.describe())
        predictor["fallback_reason"] = ref.fallback_reason
        if ref.fallback_reason is not None:
            reasons.append(f"model unavailable, heuristic predictor in use: {ref.fallback_reason}")
        snapshot = self.tracker.snapshot()
        enabled, ejected = healthy_counts(snapshot)
        if enabled == 0:
            unhealthy = True
            reasons.append("no enabled agents registered")
        elif ejected == enabled and not self.balancer.config.panic_mode_enabled:
            unhealthy = True
            reasons.append(f"all {enabled} enabled agents are ejected and panic mode is off")
        elif ejected:
            reasons.append(f"{ejected} of {enabled} enabled agents ejected")
        status = "unhealthy" if unhealthy else ("degraded" if reasons else "healthy")
        return HealthReport(status, reasons, database, predictor, enabled, ejected, failures)

    def run_benchmark(
        self,
        scenarios: list[str] | None,
        strategies: list[str],
        seeds: int,
        tasks: int,
        load: float | None = None,
    ) -> dict[str, Any]:
        """The simulator's strategy benchmark, bounded so one request cannot take the server
        down (BenchmarkLimitError beyond the caps)."""
        from agentlb.sim.benchmark import BenchmarkConfig, run_benchmark
        from agentlb.sim.scenarios import SCENARIO_NAMES

        config = BenchmarkConfig(
            scenarios=tuple(scenarios or SCENARIO_NAMES[:1]),
            strategies=tuple(strategies),
            seeds=seeds,
            tasks=tasks,
            load=load,
            predictor="heuristic",
            warmup_tasks=min(tasks, 2000),
            workers=1,
            keep_samples=False,
        )
        config.check_limits(BENCHMARK_MAX_TASKS, BENCHMARK_MAX_SEEDS, BENCHMARK_MAX_RUNS)
        config.validate()
        result: dict[str, Any] = finite(run_benchmark(config))
        return result

    # --- internals ------------------------------------------------------------------
    def _store_failed(self, operation: str, exc: StoreUnavailableError) -> None:
        with self._failures_lock:
            if operation == "record_dispatch":
                self._failures.dispatch_writes += 1
            self._failures.last_failure_at = self.clock()
            self._failures.last_reason = f"{operation}: {exc}"
        self.metrics.store_write_failures.labels(operation).inc()
        log_event(log, "store_write_failed", logging.WARNING, operation=operation, reason=str(exc))


def finite(value: Any) -> Any:
    """NaN and infinities as None, recursively: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A dataclass or named tuple from the store as a plain dict for JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    return value
