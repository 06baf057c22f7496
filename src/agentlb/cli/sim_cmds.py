"""`agentlb simulate`, `agentlb benchmark` and `agentlb bench-sim` (simulator speed)."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentlb.errors import AgentLBError
from agentlb.sim.benchmark import TUNING_SEED_OFFSET
from agentlb.sim.scenarios import SCENARIO_NAMES
from agentlb.sim.simulator import SIM_STRATEGIES


def _names(raw: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    if raw.strip() == "all":
        return valid
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = sorted(set(names) - set(valid))
    if unknown or not names:
        raise typer.BadParameter(f"unknown {what} {unknown or raw!r}; valid: {', '.join(valid)} or all")
    return names


def _quiet_balancer() -> None:
    """Ejections are counted in the metrics; one warning line per ejection would bury the output."""
    logging.getLogger("agentlb.balancer").setLevel(logging.ERROR)


def _write_history(rows: list[dict[str, Any]], path: Path) -> None:
    from agentlb.sim.simulator import history_frame

    frame = history_frame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix.lower() == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise typer.BadParameter("--history-out must end in .parquet or .csv")


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        scenario: Annotated[str, typer.Option(help=f"one of {', '.join(SCENARIO_NAMES)}")] = "surveillance",
        strategy: Annotated[str, typer.Option(help=f"one of {', '.join(SIM_STRATEGIES)}")] = "hybrid",
        tasks: Annotated[int, typer.Option(min=10, help="tasks in the run (first 10% are warm-up)")] = 5000,
        seed: Annotated[int, typer.Option()] = 0,
        load: Annotated[float | None, typer.Option(help="offered load; default the scenario's 0.75")] = None,
        fleet: Annotated[Path | None, typer.Option(help="fleet YAML replacing the scenario's fleet")] = None,
        trace: Annotated[
            Path | None, typer.Option(help="history file, or the Azure LLM trace folder, to replay")
        ] = None,
        time_scale: Annotated[float, typer.Option(help="trace speed-up: arrivals at (t - t0) / X")] = 1.0,
        predictor: Annotated[str, typer.Option(help="heuristic, or model (warm-up protocol)")] = "heuristic",
        warmup_tasks: Annotated[int, typer.Option(min=0, help="warm-up tasks for --predictor model")] = 2000,
        history_out: Annotated[
            Path | None, typer.Option(help="write the task history (.parquet or .csv) with dispatch features")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
    ) -> None:
        """One simulated run with the real balancer; prints its metrics."""
        from agentlb.sim.benchmark import (
            BenchmarkConfig,
            build_workload,
            fit_warmup_predictor,
            single_threaded,
        )
        from agentlb.sim.metrics import run_metrics
        from agentlb.sim.simulator import RunConfig, simulate

        if strategy not in SIM_STRATEGIES:
            raise typer.BadParameter(f"unknown strategy {strategy!r}; valid: {', '.join(SIM_STRATEGIES)}")
        _quiet_balancer()
        config = BenchmarkConfig(
            scenarios=(scenario,),
            strategies=(strategy,),
            seeds=1,
            tasks=tasks,
            load=load,
            predictor=predictor,
            fleet_path=str(fleet) if fleet else None,
            trace_path=str(trace) if trace else None,
            time_scale=time_scale,
            warmup_tasks=warmup_tasks,
        )
        try:
            with single_threaded():
                config.validate()
                workload = build_workload(config, scenario, seed)
                ref = None
                warmup_rows = 0
                if predictor == "model":
                    ref, warmup_rows = fit_warmup_predictor(workload.warmup_fleet, workload.warmup, seed)
                result = simulate(
                    workload.fleet,
                    workload.tasks,
                    RunConfig(strategy, seed, collect_history=history_out is not None),
                    ref,
                )
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        metrics = run_metrics(result)
        record: dict[str, Any] = {
            "scenario": scenario,
            "strategy": strategy,
            "seed": seed,
            "tasks": len(workload.tasks),
            "predictor": predictor if strategy != "oracle" else "oracle",
            "model_version": result.model_version,
            "offered_load": workload.offered_load,
            **metrics,
            "utilisation_by_agent": result.utilisation_by_agent,
            "wall_s": result.wall_s,
            "simulated_tasks_per_s": len(workload.tasks) / result.wall_s,
        }
        if predictor == "model":
            record["warmup_tasks"] = warmup_rows
        if history_out is not None:
            _write_history(result.history, history_out)
            record["history_out"] = str(history_out)
            record["history_rows"] = len(result.history)
        if as_json:
            typer.echo(json.dumps(record, indent=2))
            return
        table = Table(title=f"{scenario} / {strategy} / seed {seed} ({record['predictor']} predictor)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in record.items():
            if key in ("utilisation_by_agent", "scenario", "strategy", "seed"):
                continue
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        Console().print(table)

    @app.command("benchmark")
    def benchmark_cmd(
        out: Annotated[Path, typer.Option(help="folder for results.json, report.md and plots")],
        scenarios: Annotated[str, typer.Option(help="comma-separated scenarios, or all")] = "all",
        strategies: Annotated[
            str, typer.Option(help="comma-separated strategies (oracle too), or all")
        ] = "all",
        seeds: Annotated[int, typer.Option(min=1)] = 5,
        first_seed: Annotated[
            int,
            typer.Option(
                min=0, help=f"first seed; {TUNING_SEED_OFFSET} for the tuning seeds the benchmark never uses"
            ),
        ] = 0,
        tasks: Annotated[int, typer.Option(min=10, help="tasks per run")] = 5000,
        load: Annotated[float | None, typer.Option(help="offered load for every scenario")] = None,
        fleet: Annotated[Path | None, typer.Option(help="fleet YAML replacing the scenarios' fleets")] = None,
        trace: Annotated[
            Path | None, typer.Option(help="history file or Azure trace folder to replay")
        ] = None,
        time_scale: Annotated[float, typer.Option(help="trace speed-up")] = 1.0,
        predictor: Annotated[str, typer.Option(help="heuristic, or model (warm-up protocol)")] = "heuristic",
        warmup_tasks: Annotated[int, typer.Option(min=0)] = 2000,
        workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 2,
        as_json: Annotated[bool, typer.Option("--json", help="print results.json to stdout too")] = False,
    ) -> None:
        """Every scenario x strategy x seed; writes results.json, report.md and plots to --out."""
        from agentlb.sim.benchmark import BenchmarkConfig, run_benchmark_with_samples, write_outputs

        config = BenchmarkConfig(
            scenarios=_names(scenarios, SCENARIO_NAMES, "scenarios"),
            strategies=_names(strategies, SIM_STRATEGIES, "strategies"),
            seeds=seeds,
            first_seed=first_seed,
            tasks=tasks,
            load=load,
            predictor=predictor,
            fleet_path=str(fleet) if fleet else None,
            trace_path=str(trace) if trace else None,
            time_scale=time_scale,
            warmup_tasks=warmup_tasks,
            workers=workers,
        )
        console = Console(stderr=True)
        _quiet_balancer()
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=as_json,
            ) as bar:
                task_id = bar.add_task("benchmark", total=None)

                def report(done: int, total: int, label: str) -> None:
                    bar.update(task_id, completed=done, total=total, description=label)

                results, samples = run_benchmark_with_samples(config, report)
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        paths = write_outputs(results, samples, out)
        if as_json:
            typer.echo(json.dumps(results, indent=2))
            return
        table = Table(title="mean / p99 sojourn ratio to power_of_two and to oracle")
        for column in ("scenario", "strategy", "mean s", "p99 s", "mean/p2c", "p99/p2c", "mean/oracle"):
            table.add_column(column, justify="right")
        for r in results["runs"]:
            table.add_row(
                r["scenario"],
                r["strategy"],
                _fmt(r["mean_sojourn_s"]),
                _fmt(r["p99_sojourn_s"]),
                _fmt(r["ratio_mean_to_power_of_two"]),
                _fmt(r["ratio_p99_to_power_of_two"]),
                _fmt(r["ratio_mean_to_oracle"]),
            )
        Console().print(table)
        typer.echo(f"wrote {len(paths)} files to {out}")

    @app.command("render-tables")
    def render_tables_cmd(
        root: Annotated[Path, typer.Option(help="the checkout holding README.md and docs/")] = Path("."),
        only: Annotated[
            str | None, typer.Option(help="comma-separated section names (default: every generated section)")
        ] = None,
        check: Annotated[bool, typer.Option("--check", help="fail if a committed section is stale")] = False,
    ) -> None:
        """Render every generated section of README.md and docs/benchmarks.md (the list is
        `agentlb.generated_docs.SECTIONS`) from the committed results files."""
        from agentlb.doc_sections import write_section
        from agentlb.generated_docs import stale

        names = [n.strip() for n in only.split(",") if n.strip()] if only is not None else None
        try:
            found = stale(root, names)
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        if check:
            for section in found:
                typer.echo(f"stale: {section.path} section {section.name}", err=True)
            raise typer.Exit(1 if found else 0)
        for section in found:
            write_section(section)
            typer.echo(f"wrote {section.path} section {section.name}")

    @app.command("bench-sim")
    def bench_sim_cmd(
        agents: Annotated[int, typer.Option(min=1, help="agents in the fleet (4 slots, speed 1)")] = 50,
        tasks: Annotated[int, typer.Option(min=100)] = 20000,
        strategy: Annotated[str, typer.Option()] = "least_connection",
        repeats: Annotated[int, typer.Option(min=1)] = 3,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Simulator speed: simulated tasks/s in total, and of the engine alone (the time spent
        in Balancer.select/report subtracted)."""
        from agentlb.sim.fleet import fleet_from_dicts
        from agentlb.sim.scenarios import GENERIC_MIX, GENERIC_TYPES, Scenario
        from agentlb.sim.simulator import RunConfig, simulate

        if strategy not in SIM_STRATEGIES:
            raise typer.BadParameter(f"unknown strategy {strategy!r}")
        fleet = fleet_from_dicts(
            [
                {
                    "id": f"agent-{i:03d}",
                    "name": f"Agent {i}",
                    "capabilities": list(GENERIC_TYPES),
                    "max_concurrency": 4,
                    "speed": 1.0,
                }
                for i in range(agents)
            ]
        )
        scenario = Scenario("bench", "speed benchmark", lambda seed, horizon: fleet, GENERIC_MIX)
        rows = []
        for rep in range(repeats):
            specs, work = scenario.build(rep, tasks)
            result = simulate(specs, work, RunConfig(strategy, rep))
            engine_s = max(result.wall_s - result.balancer_s, 1e-9)
            rows.append(
                {
                    "tasks_per_s": tasks / result.wall_s,
                    "engine_tasks_per_s": tasks / engine_s,
                    "balancer_us_per_task": 1e6 * result.balancer_s / tasks,
                    "events_per_s": result.events_processed / result.wall_s,
                }
            )
        summary = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        record = {"agents": agents, "tasks": tasks, "strategy": strategy, "repeats": repeats, **summary}
        if as_json:
            typer.echo(json.dumps(record, indent=2))
            return
        typer.echo(
            f"{strategy} on {agents} agents, {tasks} tasks, median of {repeats}: "
            f"{summary['tasks_per_s']:,.0f} simulated tasks/s in total; "
            f"engine alone {summary['engine_tasks_per_s']:,.0f} tasks/s; "
            f"balancer select+report {summary['balancer_us_per_task']:.1f} µs/task"
        )


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{float(value):.3g}"
