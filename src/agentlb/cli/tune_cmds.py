"""`agentlb tune-weights`: search the hybrid strategy's weights in the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agentlb.errors import SimulationError
from agentlb.sim.tune import DEFAULT_TUNING_SCENARIOS, TuneConfig, tune_weights


def register(app: typer.Typer) -> None:
    @app.command("tune-weights")
    def tune(
        scenarios: Annotated[str, typer.Option(help="comma-separated scenarios")] = ",".join(
            DEFAULT_TUNING_SCENARIOS
        ),
        seeds: Annotated[int, typer.Option(help="tuning seeds (offset from the benchmark's)")] = 2,
        tasks: Annotated[int, typer.Option(help="tasks per run")] = 2000,
        predictor: Annotated[str, typer.Option(help="heuristic or model")] = "heuristic",
        warmup_tasks: Annotated[int, typer.Option(help="warm-up tasks for --predictor model")] = 2000,
        step: Annotated[float, typer.Option(help="grid step on the weight simplex")] = 0.25,
        top: Annotated[int, typer.Option(help="rows to show")] = 10,
        out: Annotated[Path | None, typer.Option(help="write the full ranking as JSON")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
    ) -> None:
        """Rank hybrid weight vectors by mean and p99 sojourn relative to power_of_two (lower is better)."""
        config = TuneConfig(
            tuple(s.strip() for s in scenarios.split(",") if s.strip()),
            seeds,
            tasks,
            predictor,
            warmup_tasks,
            step,
        )
        try:
            if as_json:
                result = tune_weights(config)
            else:
                with Progress(console=Console(stderr=True)) as bar:
                    job = bar.add_task("tuning", total=None)

                    def advance(done: int, total: int, label: str) -> None:
                        bar.update(job, completed=done, total=total, description=label)

                    result = tune_weights(config, advance)
        except SimulationError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
        if as_json:
            typer.echo(json.dumps({k: v for k, v in result.items() if k != "ranked"}, indent=2))
            return
        table = Table(title="hybrid weights, ratios to power_of_two (geometric means; lower is better)")
        for column in (
            "wrr",
            "lc",
            "predictive",
            "ra",
            "objective",
            "mean ratio",
            "p99 ratio",
            *config.scenarios,
        ):
            table.add_column(column, justify="right")
        rows = [*result["ranked"][:top], result["product_spec_weights"]]
        for i, row in enumerate(rows):
            w = row["weights"]
            label = [
                f"{w['weighted_round_robin']:.2f}",
                f"{w['least_connection']:.2f}",
                f"{w['predictive']:.2f}",
                f"{w['resource_aware']:.2f}",
            ]
            if i == len(rows) - 1:
                label[0] = "spec " + label[0]
            table.add_row(
                *label,
                f"{row['objective']:.3f}",
                f"{row['mean_ratio_to_power_of_two']:.3f}",
                f"{row['p99_ratio_to_power_of_two']:.3f}",
                *(f"{row['by_scenario'][s]:.3f}" for s in config.scenarios),
            )
        Console().print(table)
