"""`agentlb experiment start|list|status|stop`: online experiments, on the store.

A running service (every replica) picks up an experiment started or stopped here at its next
upkeep (AGENTLB_EXPERIMENT_UPKEEP_INTERVAL_S, 5 s by default); the API does the same at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from agentlb.cli.store_cmds import UrlOption, _fail, _opened, parse_duration_s
from agentlb.errors import AgentLBError, ExperimentError, UnknownExperimentError
from agentlb.experiments.design import RUNNING, STOPPED, Arm, Experiment, ExperimentDesign, design
from agentlb.experiments.service import describe, evidence, new_experiment
from agentlb.store.experiments import ExperimentRecords
from agentlb.strategies import STRATEGY_NAMES


def parse_arm(text: str, default_share: float) -> Arm:
    """`NAME=STRATEGY` or `NAME=STRATEGY:SHARE`."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise typer.BadParameter(f"--arm expects NAME=STRATEGY[:SHARE], got {text!r}")
    strategy, _, share_text = rest.partition(":")
    try:
        share = float(share_text) if share_text else default_share
    except ValueError:
        raise typer.BadParameter(f"--arm {text!r}: the share must be a number, got {share_text!r}") from None
    return Arm(name=name, strategy=strategy, share=share)


def design_from_file(path: Path) -> ExperimentDesign:
    """A JSON or YAML file with the body of POST /load-balancing/experiments."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise typer.BadParameter(f"{path}: expected a mapping with 'name' and a list of 'arms'")
    try:
        return ExperimentDesign.from_dict(raw, strategies=STRATEGY_NAMES)
    except ExperimentError as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc


def _experiment(records: ExperimentRecords, experiment_id: str) -> Experiment:
    experiment = records.get(experiment_id)
    if experiment is None:
        raise _fail(str(UnknownExperimentError(experiment_id)))
    return experiment


def render_report(report: dict[str, Any], console: Console) -> None:
    """The per-arm table and the verdict."""
    table = Table(title=f"experiment {report['id']} — {report['name']} ({report['status']})")
    for column in (
        "arm",
        "strategy",
        "tasks",
        "done",
        "success",
        "mean s [95% CI]",
        "p50 s",
        "p99 s",
        "Δ vs control [always-valid 95%]",
    ):
        table.add_column(column, justify="left" if column in ("arm", "strategy") else "right")
    for arm in report["arms"]:
        ci = arm["mean_completion_ci95"]
        diff = arm["diff_to_control_ci95"]
        table.add_row(
            arm["name"],
            arm["strategy"] + (f" v{arm['model_version']}" if arm["model_version"] else ""),
            str(arm["tasks"]),
            str(arm["completed"]),
            _num(arm["success_rate"], "{:.1%}"),
            _num(arm["mean_completion_s"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
            _num(arm["p50_completion_s"]),
            _num(arm["p99_completion_s"]),
            "control"
            if arm is report["arms"][0]
            else (
                f"{arm['diff_to_control_s']:+.3f} [{diff[0]:+.3f}, {diff[1]:+.3f}]"
                if diff
                else "too few tasks"
            ),
        )
    console.print(table)
    verdict = report["verdict"]
    said = f"decided: {verdict['winner']} wins" if verdict["decided"] else "not decided"
    console.print(f"verdict: {said} (alpha {verdict['alpha']}; {verdict['method']})")
    if report.get("stop_reason"):
        console.print(f"stopped: {report['stop_reason']}")


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def register(app: typer.Typer) -> None:
    experiment_app = typer.Typer(
        help="Online experiments: strategies and models on live traffic.", no_args_is_help=True
    )
    app.add_typer(experiment_app, name="experiment")

    @experiment_app.command("start")
    def start(
        name: Annotated[str | None, typer.Option(help="what the experiment compares")] = None,
        arm: Annotated[
            list[str] | None,
            typer.Option("--arm", help="NAME=STRATEGY[:SHARE], the first is the control; repeat"),
        ] = None,
        file: Annotated[
            Path | None, typer.Option("--file", help="JSON/YAML with the API's body instead of --arm")
        ] = None,
        task_type: Annotated[
            list[str] | None, typer.Option("--task-type", help="scope: only these task types")
        ] = None,
        max_tasks: Annotated[int | None, typer.Option(min=1, help="complete after this many tasks")] = None,
        max_duration: Annotated[str | None, typer.Option(help="complete after this long, e.g. 2h")] = None,
        stop_when_decided: Annotated[
            bool, typer.Option("--stop-when-decided", help="complete once decided")
        ] = False,
        url: UrlOption = None,
    ) -> None:
        """Start an experiment; selections that name no strategy are split between its arms."""
        if file is not None:
            if arm:
                raise typer.BadParameter("give --file or --arm, not both")
            plan = design_from_file(file)
        else:
            if not arm or name is None:
                raise typer.BadParameter(
                    "give --name and at least two --arm NAME=STRATEGY[:SHARE] (or --file)"
                )
            arms = [parse_arm(text, 1.0 / len(arm)) for text in arm]
            try:
                plan = design(
                    name=name,
                    arms=arms,
                    task_types=task_type or None,
                    max_tasks=max_tasks,
                    max_duration_s=parse_duration_s(max_duration) if max_duration else None,
                    stop_when_decided=stop_when_decided,
                    strategies=STRATEGY_NAMES,
                )
            except AgentLBError as exc:
                raise _fail(str(exc)) from exc
        with _opened(url) as store:
            experiment = new_experiment(plan, "cli", time.time())
            ExperimentRecords(store).create(experiment)
        typer.echo(
            f"started experiment {experiment.id} ({plan.name}): "
            + ", ".join(f"{a.name}={a.strategy}:{a.share:g}" for a in plan.arms)
        )

    @experiment_app.command("list")
    def list_(url: UrlOption = None) -> None:
        """Every experiment with its status."""
        with _opened(url) as store:
            experiments = ExperimentRecords(store).find()
        table = Table(title="experiments")
        for column in ("id", "name", "status", "arms", "started", "stop reason"):
            table.add_column(column)
        for e in experiments:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.created_at))
            table.add_row(
                e.id,
                e.design.name,
                e.status,
                ", ".join(a.name for a in e.design.arms),
                started,
                e.stop_reason or "",
            )
        Console().print(table)

    @experiment_app.command("status")
    def status(
        experiment_id: Annotated[str, typer.Argument(help="the experiment id")],
        as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
        out: Annotated[
            Path | None, typer.Option("--out", help="also write the report to this JSON file")
        ] = None,
        url: UrlOption = None,
    ) -> None:
        """The per-arm report and the verdict (the API's GET /load-balancing/experiments/{id})."""
        with _opened(url) as store:
            records = ExperimentRecords(store)
            experiment = _experiment(records, experiment_id)
            report = {**describe(experiment), **evidence(records, experiment)}
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            render_report(report, Console())

    @experiment_app.command("stop")
    def stop(
        experiment_id: Annotated[str, typer.Argument(help="the experiment id")],
        url: UrlOption = None,
    ) -> None:
        """Stop routing to the experiment (its report stays)."""
        with _opened(url) as store:
            records = ExperimentRecords(store)
            experiment = _experiment(records, experiment_id)
            if experiment.status != RUNNING:
                typer.echo(f"experiment {experiment_id} is already {experiment.status}")
                return
            records.finish(experiment_id, STOPPED, "stopped by cli", time.time())
        typer.echo(f"stopped experiment {experiment_id}")
