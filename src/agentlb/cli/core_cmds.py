"""`agentlb bench-select`: in-process selection latency per strategy and fleet size."""

from __future__ import annotations

import json
import random
import statistics
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.strategies import STRATEGY_NAMES
from agentlb.tracker import AgentLoadTracker

TASK_TYPES = ("video_analysis", "object_detection", "prompt_generation", "text_analysis")


def warmed_balancer(n_agents: int, predictor: PredictorRef, seed: int = 0) -> Balancer:
    """A fleet of unequal agents with learned history and some tasks in flight."""
    clock_now = [1_000_000.0]
    tracker = AgentLoadTracker(clock=lambda: clock_now[0])
    rng = random.Random(seed)
    for i in range(n_agents):
        tracker.register(
            Agent(
                id=f"agent-{i}",
                name=f"Agent {i}",
                capabilities=frozenset({"work"}),
                max_concurrency=rng.choice((2, 4, 8)),
            ),
            registered_at=0.0,
        )
    balancer = Balancer(tracker, predictor, BalancerConfig(slow_start_window_s=0), seed=seed)
    for i in range(n_agents * 20):
        task = TaskRequest(
            task_type=TASK_TYPES[i % 4], requirements={"complexity": "medium", "tokens": 100 + i % 900}
        )
        result = balancer.select(task, "least_connection")
        clock_now[0] += 0.01
        balancer.report(
            TaskOutcome(result.selected_agent.id, rng.uniform(0.5, 5.0), True, task.task_id, task.task_type)
        )
    for i in range(n_agents):  # leave about one task in flight per agent
        balancer.select(TaskRequest(task_type=TASK_TYPES[i % 4]), "least_connection")
    return balancer


def measure(balancer: Balancer, strategy: str, iterations: int) -> tuple[float, float]:
    """p50 and p99 microseconds of one selection (dispatch included, completion excluded)."""
    samples = []
    for i in range(iterations):
        task = TaskRequest(task_type=TASK_TYPES[i % 4], requirements={"complexity": "high", "tokens": 512})
        start = time.perf_counter_ns()
        result = balancer.select(task, strategy)
        samples.append((time.perf_counter_ns() - start) / 1000.0)
        balancer.report(TaskOutcome(result.selected_agent.id, 1.0, True, task.task_id, task.task_type))
    samples.sort()
    return statistics.median(samples), samples[min(int(len(samples) * 0.99), len(samples) - 1)]


def load_predictor(kind: str) -> PredictorRef:
    if kind == "heuristic":
        return PredictorRef(HeuristicPredictor())
    if kind == "model":
        from agentlb.predictor.model import load_champion_for_bench

        return PredictorRef(load_champion_for_bench())
    raise typer.BadParameter(f"--predictor must be heuristic or model, got {kind!r}")


def register(app: typer.Typer) -> None:
    @app.command("bench-select")
    def bench_select(
        agents: Annotated[str, typer.Option(help="comma-separated fleet sizes")] = "10,100,1000",
        strategies: Annotated[str, typer.Option(help="comma-separated strategies, or all")] = "all",
        predictor: Annotated[str, typer.Option(help="heuristic or model")] = "heuristic",
        iterations: Annotated[int, typer.Option(min=10)] = 2000,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON records only")] = False,
    ) -> None:
        """In-process selection latency per strategy: p50 and p99 microseconds."""
        try:
            sizes = [int(x) for x in agents.split(",") if x.strip()]
        except ValueError as exc:
            raise typer.BadParameter(f"--agents must be integers: {agents!r}") from exc
        if not sizes or min(sizes) < 1:
            raise typer.BadParameter("--agents needs at least one fleet size >= 1")
        names = list(STRATEGY_NAMES) if strategies == "all" else [s.strip() for s in strategies.split(",")]
        unknown = sorted(set(names) - set(STRATEGY_NAMES))
        if unknown:
            raise typer.BadParameter(f"unknown strategies {unknown}; valid: {', '.join(STRATEGY_NAMES)}")
        ref = load_predictor(predictor)
        records: list[dict[str, Any]] = []
        for size in sizes:
            balancer = warmed_balancer(size, ref)
            runs = iterations if size <= 100 else max(iterations // 4, 10)
            for name in names:
                p50, p99 = measure(balancer, name, runs)
                records.append(
                    {
                        "strategy": name,
                        "agents": size,
                        "predictor": predictor,
                        "p50_us": round(p50, 1),
                        "p99_us": round(p99, 1),
                    }
                )
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        table = Table(title=f"selection latency (µs), predictor={predictor}")
        for column in ("strategy", "agents", "p50_us", "p99_us"):
            table.add_column(column, justify="right")
        for r in records:
            table.add_row(r["strategy"], str(r["agents"]), f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}")
        Console().print(table)
