"""Prometheus metrics (product spec names, Prometheus units) and one-line JSON logs.

Each service owns its own `CollectorRegistry`, so two apps in one process (tests) never share
counters. The service runs one worker per process: the tracker's in-flight counts live in
memory, so several workers would each see part of the fleet; the metrics follow the same rule
and need no multiprocess mode.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic_core import to_json

from agentlb.domain import AgentState, SelectionResult

SERVICE_NAME = "agentlb"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Task durations of AI agents range from sub-second calls to many-minute video jobs.
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SELECTION_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

HEALTH_STATUSES = ("healthy", "degraded", "unhealthy")
# The store operations whose failures are counted, exported at 0 from the start so a rate over
# them has a series before the first failure (tests/core checks service.py names no other).
STORE_OPERATIONS = ("record_dispatch", "get_dispatch", "prediction_accuracy", "record_deployment")

# Attributes of a LogRecord that are not caller-supplied fields.
_RESERVED_LOG_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class Metrics:
    """The service's Prometheus metrics in one private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.selections = Counter(
            "load_balancer_agent_selections",
            "Agent selections by strategy and selected agent.",
            ("strategy", "agent"),
            registry=r,
        )
        self.response_time = Histogram(
            "load_balancer_response_time_seconds",
            "Reported task durations (agent response times).",
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.load_score = Gauge(
            "load_balancer_load_score",
            "Share of the agent's concurrency slots in use (0-1).",
            ("agent",),
            registry=r,
        )
        self._selection_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self.confidence = Histogram(
            "load_balancer_selection_confidence",
            "Confidence scores of selections (0-1), by strategy.",
            ("strategy",),
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.predicted_service = Histogram(
            "load_balancer_predicted_service_time_seconds",
            "Predicted service times of completed tasks (compare with response_time).",
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.strategy_confidence = Gauge(
            "load_balancer_strategy_confidence",
            "Confidence score of the strategy's latest selection (0-1).",
            ("strategy",),
            registry=r,
        )
        self.selection_latency = Histogram(
            "load_balancer_selection_duration_seconds",
            "Time to select an agent, dispatch record included.",
            buckets=SELECTION_BUCKETS_S,
            registry=r,
        )
        self.fallbacks = Counter(
            "load_balancer_fallbacks",
            "Selections that used a fallback (strategy failure or model unavailable).",
            ("strategy",),
            registry=r,
        )
        self.ejections = Counter(
            "load_balancer_ejections",
            "Agents ejected by consecutive-failure outlier detection.",
            registry=r,
        )
        self.prediction_error = Histogram(
            "load_balancer_prediction_error_seconds",
            "Absolute error of the predicted service time against the reported duration.",
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.outcomes = Counter(
            "load_balancer_task_outcomes",
            "Task outcomes recorded, by success.",
            ("success",),
            registry=r,
        )
        self.store_write_failures = Counter(
            "load_balancer_store_write_failures",
            "Store writes that failed (the database was unavailable).",
            ("operation",),
            registry=r,
        )
        for operation in STORE_OPERATIONS:
            self.store_write_failures.labels(operation)

        self.state = StateMetrics(r)

    def observe_selection(self, result: SelectionResult, duration_s: float) -> None:
        # labelled children cached: `labels()` takes a lock and builds the key on every call
        key = (result.strategy_used, result.selected_agent.id)
        children = self._selection_children.get(key)
        if children is None:
            children = self._selection_children[key] = (
                self.selections.labels(*key),
                self.strategy_confidence.labels(key[0]),
                self.confidence.labels(key[0]),
            )
        children[0].inc()
        children[1].set(result.confidence_score)
        children[2].observe(result.confidence_score)
        self.selection_latency.observe(duration_s)
        # load_score is not set here: `refresh_load_scores` sets every agent's from live state
        # at scrape time, which also sees completions.
        if result.fallback_used:
            self.fallbacks.labels(result.strategy_used).inc()

    def observe_outcome(
        self,
        duration_s: float,
        success: bool,
        predicted_service_s: float | None,
        ejected: bool,
        model_version: str | None = None,
    ) -> None:
        """`model_version`: the predictor serving when the outcome arrives (a dispatch made by
        the previous version just before a swap is counted under the new one)."""
        self.response_time.observe(duration_s)
        self.outcomes.labels("true" if success else "false").inc()
        if predicted_service_s is not None and success:
            self.predicted_service.observe(predicted_service_s)
            error_s = abs(duration_s - predicted_service_s)
            self.prediction_error.observe(error_s)
            if model_version is not None:
                self.observe_model_error(model_version, error_s)
        if ejected:
            self.ejections.inc()

    def observe_model_error(self, model_version: str, abs_error_s: float) -> None:
        """The serving model's absolute error on one completed task, by model version (online
        MAE per version = rate of _sum / rate of _count)."""
        self.state.model_prediction_error.labels(model_version).observe(abs_error_s)

    def refresh_load_scores(self, states: Iterable[AgentState]) -> None:
        """Set every agent's load gauge from live state (called at scrape time), dropping
        agents that are gone."""
        seen = set()
        for state in states:
            seen.add(state.agent.id)
            self.load_score.labels(state.agent.id).set(state.load_score)
        for labels in list(self._gauge_agents()):
            if labels not in seen:
                self.load_score.remove(labels)

    def _gauge_agents(self) -> list[str]:
        return [sample.labels["agent"] for metric in self.load_score.collect() for sample in metric.samples]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class ServiceState:
    """What the scrape-time gauges show: the service's health and its serving model."""

    health_status: str
    model_version: str
    model_source: str
    model_fallback: bool
    holdout_mae_s: float | None
    drift_mae_tolerance: float


class StateMetrics:
    """Gauges set at scrape time from live state (`refresh`), plus the per-model-version error
    histogram and the select-request counters. With several replicas sharing one fleet state
    each reports the same state gauges: dashboards and rules take `max` over instances for
    them and `sum` for the counters."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.health_status = Gauge(
            "load_balancer_health_status",
            "1 for the service's current health status (healthy, degraded, unhealthy), else 0.",
            ("status",),
            registry=r,
        )
        self.load_distribution_variance = Gauge(
            "load_balancer_load_distribution_variance",
            "Population variance of the enabled agents' load scores (as /statistics; at most 0.25).",
            registry=r,
        )
        self.load_distribution_variance_ratio = Gauge(
            "load_balancer_load_distribution_variance_ratio",
            "Load-score variance over the largest possible at the fleet's mean load, mean x (1 - mean): "
            "0 even, 1 as uneven as it can be.",
            registry=r,
        )
        self.in_flight = Gauge(
            "load_balancer_agent_in_flight_tasks",
            "Tasks dispatched to the agent and not yet reported.",
            ("agent",),
            registry=r,
        )
        self.capacity = Gauge(
            "load_balancer_agent_capacity_slots",
            "The agent's concurrency slots (max_concurrency).",
            ("agent",),
            registry=r,
        )
        self.ejected = Gauge(
            "load_balancer_agent_ejected",
            "1 while the enabled agent is ejected by outlier detection, else 0.",
            ("agent",),
            registry=r,
        )
        self.model_info = Gauge(
            "load_balancer_model_info",
            "1 for the predictor serving now (model_version, source).",
            ("model_version", "source"),
            registry=r,
        )
        self.model_fallback = Gauge(
            "load_balancer_model_fallback",
            "1 while the heuristic predictor stands in for a model that could not be loaded.",
            registry=r,
        )
        self.holdout_mae = Gauge(
            "load_balancer_model_holdout_mae_seconds",
            "The serving model's MAE on its training holdout.",
            ("model_version",),
            registry=r,
        )
        self.drift_tolerance = Gauge(
            "load_balancer_model_drift_mae_tolerance_ratio",
            "Online MAE above holdout MAE x (1 + this) counts as drift (AGENTLB_DRIFT_MAE_TOLERANCE).",
            registry=r,
        )
        self.model_prediction_error = Histogram(
            "load_balancer_model_prediction_error_seconds",
            "Absolute error of the predicted service time on completed tasks, by serving model version.",
            ("model_version",),
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.select_requests = Counter(
            "load_balancer_select_requests",
            "select-agent requests received, answered or not.",
            registry=r,
        )
        self.select_errors = Counter(
            "load_balancer_select_errors",
            "select-agent requests answered without a selection, by error type.",
            ("error",),
            registry=r,
        )
        self._agents: set[str] = set()
        self._model: tuple[str, str] | None = None

    def refresh(self, agents: Iterable[AgentState], now: float, state: ServiceState) -> None:
        """Set the state gauges from live state; agents and models that are gone are dropped."""
        for status in HEALTH_STATUSES:
            self.health_status.labels(status).set(1.0 if status == state.health_status else 0.0)
        seen: set[str] = set()
        loads: list[float] = []
        for agent_state in agents:
            agent_id = agent_state.agent.id
            seen.add(agent_id)
            self.in_flight.labels(agent_id).set(agent_state.active_tasks)
            self.capacity.labels(agent_id).set(agent_state.agent.max_concurrency)
            if agent_state.agent.enabled:
                loads.append(agent_state.load_score)
                self.ejected.labels(agent_id).set(1.0 if agent_state.is_ejected(now) else 0.0)
            else:
                _remove(self.ejected, agent_id)
        for gone in self._agents - seen:
            for gauge in (self.in_flight, self.capacity, self.ejected):
                _remove(gauge, gone)
        self._agents = seen
        variance = statistics.pvariance(loads) if loads else 0.0
        self.load_distribution_variance.set(variance)
        self.load_distribution_variance_ratio.set(variance_ratio(loads, variance))
        model = (state.model_version, state.model_source)
        if self._model is not None and self._model != model:
            _remove(self.model_info, *self._model)
            _remove(self.holdout_mae, self._model[0])
        self._model = model
        self.model_info.labels(*model).set(1.0)
        self.model_fallback.set(1.0 if state.model_fallback else 0.0)
        if state.holdout_mae_s is not None:
            self.holdout_mae.labels(state.model_version).set(state.holdout_mae_s)
        self.drift_tolerance.set(state.drift_mae_tolerance)

    def count_select(self, error: BaseException | None) -> None:
        self.select_requests.inc()
        if error is not None:
            self.select_errors.labels(type(error).__name__).inc()


def variance_ratio(loads: list[float], variance: float) -> float:
    """`variance` over its bound for values in [0, 1] with this mean (Bhatia-Davis):
    the raw variance of load shares never exceeds 0.25, so the spec's 0.3 threshold applies
    to this normalised form."""
    if not loads:
        return 0.0
    mean = statistics.fmean(loads)
    bound = mean * (1.0 - mean)
    return min(variance / bound, 1.0) if bound > 1e-12 else 0.0


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the product spec's log format plus any `extra=` fields."""

    def __init__(self, service: str = SERVICE_NAME) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once per second, not once per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": self._timestamp(record),
            "level": record.levelname,
            "service": self.service,
            "component": getattr(record, "component", record.name.removeprefix("agentlb.")),
            "event": getattr(record, "event", "log"),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED_LOG_ATTRS and key not in line:
                line[key] = value
        message = record.getMessage()
        if message and message != line["event"]:
            line["message"] = message
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # pydantic-core writes JSON at a sixth of the cost of json.dumps (a selection logs a line)
        return to_json(line, fallback=str, inf_nan_mode="strings").decode()


def configure_logging(level: str = "INFO") -> None:
    """Send the `agentlb` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("agentlb")
    logger.setLevel(level)
    # The JSON lines carry no caller, thread or process: records need not look them up
    # (the logging docs' "Optimization" section); a selection logs one line per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for handler in logger.handlers:
        if getattr(handler, "_agentlb_json", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._agentlb_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; `fields` become top-level JSON keys."""
    if logger.isEnabledFor(level):
        safe = {(f"{k}_" if k in _RESERVED_LOG_ATTRS else k): v for k, v in fields.items()}
        logger.log(level, event, extra={"event": event, **safe})


def selection_log_fields(result: SelectionResult, duration_s: float) -> Mapping[str, Any]:
    return {
        "component": "load_balancer",
        "agent_id": result.selected_agent.id,
        "strategy": result.strategy_used,
        "confidence": round(result.confidence_score, 4),
        "duration_ms": round(duration_s * 1000.0, 3),
        "task_id": result.task_id,
        "model_version": result.model_version,
        "fallback_used": result.fallback_used,
    }
