"""Prometheus recording and alert rules for agentlb, as data: one source for the rule files in
deploy/prometheus and the dashboards' queries (deploy/grafana), so a panel and an alert read
the same series.

Aggregation across replicas: counters and histograms are summed over instances; state gauges
(health, ejections, load variance) are the same on replicas sharing one fleet state, so they
are read with `max` (the worst replica) or kept per instance where the instance is the point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JOB = "agentlb"

# Thresholds. The spec's three: load variance > 0.3, health != healthy, fallback rate > 0.1.
LOAD_VARIANCE_RATIO_MAX = 0.3
FALLBACK_RATIO_MAX = 0.1
EJECTED_RATIO_MIN = 0.5
SELECT_P99_MAX_S = 0.1
DRIFT_MIN_SAMPLES = 100

RUNBOOK_CHECK = "GET /load-balancing/health and /load-balancing/statistics"


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str

    def as_dict(self) -> dict[str, Any]:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True)
class Alert:
    """One alert: the summary says what, the description who (agent, strategy or model
    version) and the runbook what to check and which `agentlb` command helps."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str
    spec: bool = False  # one of the product spec's three alerts
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self, for_override: str | None = None) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": for_override or self.for_,
            "labels": {"severity": self.severity, "service": JOB, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook": self.runbook,
            },
        }


SELECTIONS = "load_balancer_agent_selections_total"
FALLBACKS = "load_balancer_fallbacks_total"
MODEL_ERROR = "load_balancer_model_prediction_error_seconds"
SELECT_LATENCY = "load_balancer_selection_duration_seconds"

RECORDING = (
    Recording(
        "load_balancer:selections:rate5m",
        f"sum by (strategy, agent) (rate({SELECTIONS}[5m]))",
    ),
    Recording(
        "load_balancer:selections_by_strategy:rate5m",
        f"sum by (strategy) (rate({SELECTIONS}[5m]))",
    ),
    Recording(
        "load_balancer:fallbacks_by_strategy:rate5m",
        f"sum by (strategy) (rate({FALLBACKS}[5m]))",
    ),
    # No fallback series exist until the first fallback: count that as a rate of 0.
    Recording(
        "load_balancer:fallback_activation:ratio_rate5m",
        f"(sum(rate({FALLBACKS}[5m])) or vector(0)) / sum(rate({SELECTIONS}[5m]))",
    ),
    Recording(
        "load_balancer:load_distribution_variance_ratio:max",
        "max(load_balancer_load_distribution_variance_ratio)",
    ),
    Recording(
        "load_balancer:load_distribution_variance:max",
        "max(load_balancer_load_distribution_variance)",
    ),
    Recording(
        "load_balancer:agents_ejected:ratio",
        "sum(max by (agent) (load_balancer_agent_ejected))"
        " / count(max by (agent) (load_balancer_agent_ejected))",
    ),
    Recording(
        "load_balancer:model_prediction_error_seconds:mae_rate30m",
        f"sum by (model_version) (rate({MODEL_ERROR}_sum[30m]))"
        f" / sum by (model_version) (rate({MODEL_ERROR}_count[30m]))",
    ),
    Recording(
        "load_balancer:selection_duration_seconds:p99_rate5m",
        f"histogram_quantile(0.99, sum by (le) (rate({SELECT_LATENCY}_bucket[5m])))",
    ),
    Recording(
        "load_balancer:select_requests:rate5m",
        "sum(rate(load_balancer_select_requests_total[5m]))",
    ),
)

# Alert templates may query Prometheus: name the agent, strategy or model behind a fleet-wide value.
_MOST_LOADED = (
    '{{ with query "topk(1, max by (agent) (load_balancer_load_score))" }}'
    "{{ with (. | first) }}{{ .Labels.agent }} at {{ .Value | humanizePercentage }} of its slots{{ end }}"
    "{{ end }}"
)
_TOP_FALLBACK_STRATEGY = (
    '{{ with query "topk(1, load_balancer:fallbacks_by_strategy:rate5m)" }}'
    "{{ with (. | first) }}{{ .Labels.strategy }}{{ end }}{{ end }}"
)
_MODEL = (
    '{{ with query "max by (model_version, source) (load_balancer_model_info)" }}'
    "{{ with (. | first) }}{{ .Labels.model_version }} ({{ .Labels.source }}){{ end }}{{ end }}"
)
_EJECTED_AGENTS = (
    '{{ range $i, $s := query "max by (agent) (load_balancer_agent_ejected) == 1" | sortByLabel "agent" }}'
    "{{ if $i }}, {{ end }}{{ $s.Labels.agent }}{{ else }}none{{ end }}"
)

ALERTS = (
    Alert(
        "HighAgentLoadImbalance",
        f"load_balancer:load_distribution_variance_ratio:max > {LOAD_VARIANCE_RATIO_MAX}",
        "10m",
        "warning",
        'Load across agents is uneven (normalised variance {{ printf "%.2f" $value }} > '
        f"{LOAD_VARIANCE_RATIO_MAX})",
        "The variance of the agents' load scores is {{ $value | humanizePercentage }} of the most "
        f"possible at this mean load; most loaded agent: {_MOST_LOADED}.",
        "Check which agents the tasks' required capabilities leave (few capable agents fill up) "
        f"and the strategy in use: {RUNBOOK_CHECK}; `agentlb agents list` for capabilities and "
        "max_concurrency.",
        spec=True,
    ),
    Alert(
        "LoadBalancingSystemDown",
        f'load_balancer_health_status{{status!="healthy"}} == 1 or up{{job="{JOB}"}} == 0',
        "1m",
        "critical",
        "agentlb on {{ $labels.instance }} is not healthy",
        "{{ $labels.instance }} reports {{ with $labels.status }}{{ . }}{{ else }}no scrape (down){{ end }};"
        f" serving model {_MODEL}; ejected agents: {_EJECTED_AGENTS}.",
        f"{RUNBOOK_CHECK} (the reasons list says which part: database, model, ejected agents); "
        "`agentlb db upgrade` if the schema is behind, `agentlb drift` for the model.",
        spec=True,
    ),
    Alert(
        "HighFallbackRate",
        f"load_balancer:fallback_activation:ratio_rate5m > {FALLBACK_RATIO_MAX}",
        "5m",
        "warning",
        f"{{{{ $value | humanizePercentage }}}} of selections use a fallback (> {FALLBACK_RATIO_MAX:.0%})",
        f"Most fallbacks come from strategy {_TOP_FALLBACK_STRATEGY}; serving model {_MODEL}.",
        "A failing strategy or an unloadable model: GET /load-balancing/model (fallback_reason) "
        "and the service log's `strategy ... failed` lines; `agentlb train` or fix AGENTLB_MODEL_URI.",
        spec=True,
    ),
    Alert(
        "AgentLBModelFallback",
        "load_balancer_model_fallback == 1",
        "5m",
        "warning",
        "{{ $labels.instance }} serves the heuristic predictor: its model could not be loaded",
        f"Serving {_MODEL} instead of a trained model; model-backed strategies fall back.",
        "GET /load-balancing/model for fallback_reason; check AGENTLB_MODEL_URI and the MLflow "
        "store; `agentlb train` then POST /load-balancing/model/reload.",
    ),
    Alert(
        "AgentLBModelDrift",
        "load_balancer:model_prediction_error_seconds:mae_rate30m"
        " > on (model_version) group_left ()"
        " (max by (model_version) (load_balancer_model_holdout_mae_seconds)"
        " * (1 + scalar(max(load_balancer_model_drift_mae_tolerance_ratio))))"
        f" and on (model_version) sum by (model_version) (increase({MODEL_ERROR}_count[30m]))"
        f" >= {DRIFT_MIN_SAMPLES}",
        "30m",
        "warning",
        "Model {{ $labels.model_version }}: online MAE above its holdout's by more than the drift tolerance",
        "Model {{ $labels.model_version }} errs by {{ $value | humanizeDuration }} on average over 30 min, "
        "more than its holdout MAE x (1 + AGENTLB_DRIFT_MAE_TOLERANCE).",
        "`agentlb drift` for the report over the drift window; `agentlb retrain --if-drifted` "
        "to retrain and promote by the gate.",
    ),
    Alert(
        "AgentLBStoreWriteFailures",
        "sum by (operation) (rate(load_balancer_store_write_failures_total[5m])) > 0",
        "5m",
        "warning",
        "Store writes failing ({{ $labels.operation }})",
        '{{ $labels.operation }} writes fail at {{ printf "%.3f" $value }}/s: selections go on '
        "from memory, but dispatch records and history are being lost.",
        f"Check the database (AGENTLB_DATABASE_URL) is up and has space; {RUNBOOK_CHECK}; "
        "`agentlb db upgrade` once it answers.",
    ),
    Alert(
        "AgentLBAgentsEjected",
        f"load_balancer:agents_ejected:ratio >= {EJECTED_RATIO_MIN}",
        "2m",
        "critical",
        "{{ $value | humanizePercentage }} of the enabled agents are ejected",
        f"Ejected agents: {_EJECTED_AGENTS} (max_ejection_percent caps ejection at half by default).",
        "The agents fail their tasks back to back: check them; GET "
        "/load-balancing/agent/{id}/metrics for success rate; `agentlb agents list`.",
    ),
    Alert(
        "AgentLBSelectLatencyHigh",
        f"load_balancer:selection_duration_seconds:p99_rate5m > {SELECT_P99_MAX_S}",
        "10m",
        "warning",
        f"select-agent p99 {{{{ $value | humanizeDuration }}}} above {SELECT_P99_MAX_S * 1000:.0f} ms",
        f"Selections are slow with serving model {_MODEL}.",
        "Check CPU of the service and fleet size; `agentlb bench-select --agents N` to compare "
        "with the expected latency; AGENTLB_MODEL_SHORTLIST bounds the model's rows.",
    ),
    Alert(
        "AgentLBNoSelections",
        f"load_balancer:select_requests:rate5m > 0 and on () (sum(rate({SELECTIONS}[5m])) or vector(0)) == 0",
        "5m",
        "critical",
        "Orchestrators call select-agent but no agent is selected",
        '{{ printf "%.2f" $value }} select requests/s and none answered with an agent; errors: '
        '{{ range $i, $s := query "sum by (error) (rate(load_balancer_select_errors_total[5m]))"'
        ' | sortByLabel "error" }}'
        "{{ if $i }}, {{ end }}{{ $s.Labels.error }}{{ else }}none{{ end }}.",
        f"{RUNBOOK_CHECK}: every capable agent ejected or disabled, or capabilities nobody has; "
        "`agentlb agents list`, `agentlb agents load` to register the fleet.",
    ),
)


def recording_rules() -> dict[str, Any]:
    return {"groups": [{"name": "agentlb.recording", "rules": [r.as_dict() for r in RECORDING]}]}


def alert_rules(for_override: str | None = None) -> dict[str, Any]:
    """The alert rule file; `for_override` shortens every `for:` (the integration test)."""
    return {"groups": [{"name": "agentlb.alerts", "rules": [a.as_dict(for_override) for a in ALERTS]}]}


def prometheus_config(
    target: str = "127.0.0.1:8000",
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    rule_files: tuple[str, ...] = ("recording.yml", "alerts.yml"),
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }
