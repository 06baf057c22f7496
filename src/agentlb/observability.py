"""Prometheus metrics (product spec names, Prometheus units) and one-line JSON logs.

Each service owns its own `CollectorRegistry`, so two apps in one process (tests) never share
counters. `agentlb serve --workers N` (replicas sharing the live state through Redis) runs
prometheus-client's multiprocess mode: every worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR and a scrape, answered by any one worker, merges them (counters and
histograms summed; gauges, set from the shared state, the most recent value), so the metric
names and labels stay those of one process.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic_core import to_json

from agentlb.domain import AgentState, SelectionResult

SERVICE_NAME = "agentlb"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Task durations of AI agents range from sub-second calls to many-minute video jobs.
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
SELECTION_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

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
            multiprocess_mode="mostrecent",
        )
        self._selection_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.strategy_confidence = Gauge(
            "load_balancer_strategy_confidence",
            "Confidence score of the strategy's latest selection (0-1).",
            ("strategy",),
            registry=r,
            multiprocess_mode="mostrecent",
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

    def observe_selection(self, result: SelectionResult, duration_s: float) -> None:
        # labelled children cached: `labels()` takes a lock and builds the key on every call
        key = (result.strategy_used, result.selected_agent.id)
        children = self._selection_children.get(key)
        if children is None:
            children = self._selection_children[key] = (
                self.selections.labels(*key),
                self.strategy_confidence.labels(key[0]),
            )
        children[0].inc()
        children[1].set(result.confidence_score)
        self.selection_latency.observe(duration_s)
        # load_score is not set here: `refresh_load_scores` sets every agent's from live state
        # at scrape time, which also sees completions.
        if result.fallback_used:
            self.fallbacks.labels(result.strategy_used).inc()

    def observe_outcome(
        self, duration_s: float, success: bool, predicted_service_s: float | None, ejected: bool
    ) -> None:
        self.response_time.observe(duration_s)
        self.outcomes.labels("true" if success else "false").inc()
        if predicted_service_s is not None and success:
            self.prediction_error.observe(abs(duration_s - predicted_service_s))
        if ejected:
            self.ejections.inc()

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
        if os.environ.get(MULTIPROC_ENV):  # several workers: merge every worker's samples
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def prepare_multiprocess_metrics() -> Path:
    """An empty PROMETHEUS_MULTIPROC_DIR for the workers about to start (the caller's, emptied,
    or a new temporary one): files of an earlier run would add their counts to this one's."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        directory = Path(configured)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="agentlb-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


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
