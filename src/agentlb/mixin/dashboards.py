"""The product spec's three Grafana dashboards (agent utilisation, strategy effectiveness,
system health), built with grafana-foundation-sdk. Panels read the recording rules of
`rules.py` where one exists, so a panel shows what an alert evaluates. Counters are summed and
state gauges maxed over instances (replicas share one fleet state)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueTextMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agentlb.mixin import rules

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    kind: str  # timeseries | stat | heatmap | table
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = ""
    width: int = 12
    height: int = 8
    names_only: bool = False  # a stat that shows series names (e.g. "host:8000 healthy"), not values


def _q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(expr, legend, instant)


def _quantiles(metric: str, by: str = "") -> tuple[Query, ...]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.9, 0.99)
    )


AGENT_UTILISATION = (
    "agentlb-agent-utilisation",
    "agentlb / Agent utilisation",
    (
        PanelSpec(
            "timeseries",
            "Load distribution (share of slots in use)",
            "Each agent's load score: in-flight tasks over max_concurrency.",
            (_q("max by (agent) (load_balancer_load_score)", "{{agent}}"),),
            "percentunit",
        ),
        PanelSpec(
            "timeseries",
            "In-flight tasks per agent",
            "Tasks dispatched and not yet reported, against each agent's slots.",
            (
                _q("max by (agent) (load_balancer_agent_in_flight_tasks)", "{{agent}}"),
                _q("sum(max by (agent) (load_balancer_agent_capacity_slots))", "fleet slots"),
            ),
        ),
        PanelSpec(
            "heatmap",
            "Capacity utilisation heatmap",
            "One row per agent, colour = share of its slots in use.",
            (_q("max by (agent) (load_balancer_load_score)", "{{agent}}"),),
            "percentunit",
            24,
            10,
        ),
        PanelSpec(
            "timeseries",
            "Load imbalance trend",
            "Normalised load-score variance (alert HighAgentLoadImbalance above "
            f"{rules.LOAD_VARIANCE_RATIO_MAX}) and the raw variance.",
            (
                _q("load_balancer:load_distribution_variance_ratio:max", "normalised variance"),
                _q("load_balancer:load_distribution_variance:max", "variance"),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Selections per agent",
            "Tasks sent to each agent per second, all strategies.",
            (_q(f"sum by (agent) (rate({rules.SELECTIONS}[{RATE}]))", "{{agent}}"),),
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Task duration trend",
            "Reported task durations, fleet-wide quantiles.",
            _quantiles("load_balancer_response_time_seconds"),
            "s",
        ),
        PanelSpec(
            "timeseries",
            "Task success rate",
            "Share of reported outcomes that succeeded.",
            (
                _q(
                    f'sum(rate(load_balancer_task_outcomes_total{{success="true"}}[{RATE}]))'
                    f" / sum(rate(load_balancer_task_outcomes_total[{RATE}]))",
                    "success rate",
                ),
            ),
            "percentunit",
        ),
    ),
)

STRATEGY_EFFECTIVENESS = (
    "agentlb-strategy-effectiveness",
    "agentlb / Strategy effectiveness",
    (
        PanelSpec(
            "timeseries",
            "Selections by strategy",
            "Selection frequency per strategy.",
            (_q("load_balancer:selections_by_strategy:rate5m", "{{strategy}}"),),
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Selections by strategy and agent",
            "Where each strategy sends tasks.",
            (_q("load_balancer:selections:rate5m", "{{strategy}} → {{agent}}"),),
            "reqps",
        ),
        PanelSpec(
            "heatmap",
            "Confidence score distribution",
            "Confidence scores of selections, all strategies.",
            (
                _q(
                    f"sum by (le) (rate(load_balancer_selection_confidence_bucket[{RATE}]))",
                    "{{le}}",
                ),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Median confidence by strategy",
            "p50 of the confidence score per strategy.",
            (
                _q(
                    "histogram_quantile(0.5, sum by (le, strategy) "
                    f"(rate(load_balancer_selection_confidence_bucket[{RATE}])))",
                    "{{strategy}}",
                ),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Predicted vs actual completion time",
            "Mean predicted service time of completed tasks against the mean reported duration.",
            (
                _q(
                    f"sum(rate(load_balancer_predicted_service_time_seconds_sum[{RATE}]))"
                    f" / sum(rate(load_balancer_predicted_service_time_seconds_count[{RATE}]))",
                    "predicted (mean)",
                ),
                _q(
                    f"sum(rate(load_balancer_response_time_seconds_sum[{RATE}]))"
                    f" / sum(rate(load_balancer_response_time_seconds_count[{RATE}]))",
                    "actual (mean)",
                ),
            ),
            "s",
        ),
        PanelSpec(
            "timeseries",
            "Online MAE by model version",
            "Mean absolute error of the serving model over 30 min, with its holdout MAE x "
            "(1 + drift tolerance): above that line for 30 min is AgentLBModelDrift.",
            (
                _q(
                    "load_balancer:model_prediction_error_seconds:mae_rate30m", "online MAE {{model_version}}"
                ),
                _q(
                    "max by (model_version) (load_balancer_model_holdout_mae_seconds)"
                    " * (1 + scalar(max(load_balancer_model_drift_mae_tolerance_ratio)))",
                    "drift limit {{model_version}}",
                ),
            ),
            "s",
        ),
        PanelSpec(
            "table",
            "Champion and challengers",
            "The model version each instance serves (source: registry alias or bundle), its "
            "holdout MAE, and whether the heuristic stands in.",
            (
                _q("max by (instance, model_version, source) (load_balancer_model_info)", instant=True),
                _q("max by (model_version) (load_balancer_model_holdout_mae_seconds)", instant=True),
                _q("max by (instance) (load_balancer_model_fallback)", instant=True),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Fallbacks by strategy",
            "Selections that fell back (strategy failure or model unavailable).",
            (_q("load_balancer:fallbacks_by_strategy:rate5m", "{{strategy}}"),),
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Experiment arms: selections",
            "Selections routed to each arm of the running online experiments "
            "(GET /load-balancing/experiments/{id} has the report and the verdict).",
            (
                _q(
                    f"sum by (experiment, arm) (rate(agentlb_experiment_selections_total[{RATE}]))",
                    "{{experiment}} {{arm}}",
                ),
            ),
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Experiment arms: mean completion time",
            "Mean completion time (outcome report time minus selection time) of each arm, from the "
            "store at each experiment upkeep; agentlb_experiment_decided is 1 once the verdict is in.",
            (
                _q(
                    "max by (experiment, arm) (agentlb_experiment_arm_mean_completion_seconds)",
                    "{{experiment}} {{arm}}",
                ),
                _q("max by (experiment) (agentlb_experiment_decided)", "{{experiment}} decided"),
            ),
            "s",
        ),
    ),
)

SYSTEM_HEALTH = (
    "agentlb-system-health",
    "agentlb / System health",
    (
        PanelSpec(
            "stat",
            "Health",
            "1 = the status each instance reports (healthy / degraded / unhealthy); "
            "not healthy fires LoadBalancingSystemDown.",
            (_q("max by (instance, status) (load_balancer_health_status) == 1", "{{instance}} {{status}}"),),
            width=8,
            names_only=True,
        ),
        PanelSpec(
            "stat",
            "Fallback activation rate",
            f"Alert HighFallbackRate above {rules.FALLBACK_RATIO_MAX:.0%}.",
            (_q("load_balancer:fallback_activation:ratio_rate5m", "fallback rate"),),
            "percentunit",
            width=8,
        ),
        PanelSpec(
            "stat",
            "Agents ejected",
            "Share of the enabled agents ejected now (AgentLBAgentsEjected at half).",
            (_q("load_balancer:agents_ejected:ratio", "ejected"),),
            "percentunit",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Error rates",
            "select-agent requests answered without an agent, by error; failed task outcomes.",
            (
                _q(
                    f"sum by (error) (rate(load_balancer_select_errors_total[{RATE}]))"
                    " / scalar(load_balancer:select_requests:rate5m)",
                    "select {{error}}",
                ),
                _q(
                    f'sum(rate(load_balancer_task_outcomes_total{{success="false"}}[{RATE}]))'
                    f" / sum(rate(load_balancer_task_outcomes_total[{RATE}]))",
                    "failed outcomes",
                ),
            ),
            "percentunit",
        ),
        PanelSpec(
            "timeseries",
            "Fallback activations",
            "Fallback rate over selections, and fallbacks per second by strategy.",
            (
                _q("load_balancer:fallback_activation:ratio_rate5m", "fallback ratio"),
                _q("load_balancer:fallbacks_by_strategy:rate5m", "{{strategy}} /s"),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Ejections",
            "Ejections per second, and which agents are ejected now.",
            (
                _q(f"sum(rate(load_balancer_ejections_total[{RATE}]))", "ejections /s"),
                _q("max by (agent) (load_balancer_agent_ejected) == 1", "ejected {{agent}}"),
            ),
        ),
        PanelSpec(
            "timeseries",
            "Slow-down regimes",
            "The factor on each agent's predictions: above 1 while it runs slower than the model "
            "predicts (a slow-down detected from its outcomes), 1 when it runs as predicted.",
            (_q("max by (agent) (load_balancer_agent_slowdown_factor)", "{{agent}}"),),
        ),
        PanelSpec(
            "timeseries",
            "Store write failures",
            "Failed database writes per second by operation (AgentLBStoreWriteFailures).",
            (
                _q(
                    f"sum by (operation) (rate(load_balancer_store_write_failures_total[{RATE}]))"
                    " or vector(0)",
                    "{{operation}}",
                ),
            ),
            "reqps",
        ),
        PanelSpec(
            "timeseries",
            "Selection latency",
            "select-agent latency quantiles "
            f"(AgentLBSelectLatencyHigh: p99 above {rules.SELECT_P99_MAX_S} s).",
            _quantiles(rules.SELECT_LATENCY),
            "s",
        ),
        PanelSpec(
            "timeseries",
            "Request and selection rate",
            "select-agent requests against selections made: a gap is AgentLBNoSelections.",
            (
                _q("load_balancer:select_requests:rate5m", "requests"),
                _q(f"sum(rate({rules.SELECTIONS}[{RATE}]))", "selections"),
            ),
            "reqps",
        ),
    ),
)

DASHBOARDS = (AGENT_UTILISATION, STRATEGY_EFFECTIVENESS, SYSTEM_HEALTH)


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(query.legend)
    if query.instant:
        target = target.instant().format(PromQueryFormat.TABLE)
    return target


def _panel(spec: PanelSpec) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = timeseries.Panel()
    elif spec.kind == "stat":
        builder = stat.Panel()
        if spec.names_only:
            builder = builder.text_mode(BigValueTextMode.NAME)
    elif spec.kind == "heatmap":
        builder = heatmap.Panel().calculate(False)
    elif spec.kind == "table":
        builder = table.Panel()
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    builder = builder.title(spec.title).description(spec.description).datasource(DATASOURCE)
    builder = builder.span(spec.width).height(spec.height)
    if spec.unit:
        builder = builder.unit(spec.unit)
    for i, query in enumerate(spec.queries):
        builder = builder.with_target(_target(query, chr(ord("A") + i)))
    return builder


def build(uid: str, title: str, panels: tuple[PanelSpec, ...]) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["agentlb"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for spec in panels:
        board = board.with_panel(_panel(spec))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder, sort_keys=True))
    return encoded


def all_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    return {f"{uid}.json": build(uid, title, panels) for uid, title, panels in DASHBOARDS}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expression) of every panel query."""
    return [
        (uid, spec.title, query.expr)
        for uid, _, panels in DASHBOARDS
        for spec in panels
        for query in spec.queries
    ]
