"""`agentlb bench-select`: in-process selection latency per strategy and fleet size."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.strategies import STRATEGY_NAMES
from agentlb.tracker import AgentLoadTracker

if TYPE_CHECKING:
    from agentlb.predictor.model import ModelPredictor

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
        from agentlb.predictor.model import load_champion

        model = load_champion()
        compile_as_served(model)
        return PredictorRef(model)
    raise typer.BadParameter(f"--predictor must be heuristic or model, got {kind!r}")


def compile_as_served(model: ModelPredictor) -> None:
    """Compile the model as the service does once it has loaded it (`model_compile`), so the
    bench measures the evaluator that serves; a failure is reported and LightGBM measured."""
    from agentlb.errors import ModelLoadError
    from agentlb.settings import load_settings

    settings = load_settings()
    if not settings.model_compile:
        return
    try:
        model.compile(settings.compiled_dir)
    except (ModelLoadError, OSError) as exc:
        typer.echo(f"model not compiled, LightGBM measured: {exc}", err=True)


def evaluator_of(ref: PredictorRef) -> str:
    """`lightgbm` or `compiled` for a trained model, `heuristic` otherwise."""
    return str(getattr(ref.current, "evaluator", "heuristic"))


def register(app: typer.Typer) -> None:
    register_model_bench(app)

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
                        "evaluator": evaluator_of(ref),
                        "p50_us": round(p50, 1),
                        "p99_us": round(p99, 1),
                    }
                )
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        table = Table(title=f"selection latency (µs), predictor={predictor} ({evaluator_of(ref)})")
        for column in ("strategy", "agents", "p50_us", "p99_us"):
            table.add_column(column, justify="right")
        for r in records:
            table.add_row(r["strategy"], str(r["agents"]), f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}")
        Console().print(table)


def _median_us(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return statistics.median(samples)


def model_overhead(n_agents: int, iterations: int, seed: int = 0) -> dict[str, Any]:
    """Hybrid selection with a LightGBM predictor fitted in memory on the bench fleet's own
    dispatches (compiled as the service serves it), against the raw `Booster.predict` of the
    rows the model scores (the shortlist in a large fleet) and of every candidate row, and
    against the serving evaluator's own prediction of the scored rows."""
    import pandas as pd

    from agentlb.training.quick import fit_predictor

    ref = PredictorRef(HeuristicPredictor())
    balancer = warmed_balancer(n_agents, ref, seed)
    rng = random.Random(seed + 1)
    rows: list[dict[str, Any]] = []
    for i in range(max(30 * n_agents, 1000)):
        task = TaskRequest(
            task_type=TASK_TYPES[i % 4],
            requirements={"complexity": rng.choice(("low", "high")), "tokens": rng.randint(10, 900)},
        )
        result = balancer.select(task, "least_connection")
        duration = rng.uniform(0.5, 5.0)
        balancer.report(TaskOutcome(result.selected_agent.id, duration, True, task.task_id, task.task_type))
        row: dict[str, Any] = dict(result.dispatch_features)
        row.update(task_id=task.task_id, agent_id=result.selected_agent.id, duration_s=duration, success=True)
        row["arrival_time"] = 1_000_000.0 + i
        rows.append(row)
    model = fit_predictor(pd.DataFrame(rows), seed)
    compile_as_served(model)
    ref.swap(model)
    snapshot = balancer.tracker.snapshot()
    task = TaskRequest(task_type=TASK_TYPES[0], requirements={"complexity": "high", "tokens": 512})
    candidates = list(snapshot.agents)
    matrix = model.spec.encode_candidates(task, candidates, snapshot)

    scored = balancer.model_rows(len(candidates), top_k=1)  # top_k as in `measure`

    def raw_predict(rows: np.ndarray) -> None:
        model.p50_booster.predict(rows, num_threads=1)
        model.p90_booster.predict(rows, num_threads=1)

    def served_predict(rows: np.ndarray) -> None:
        model.predict_matrix(rows)

    raw_all_us = _median_us(lambda: raw_predict(matrix), 300)
    raw_us = _median_us(lambda: raw_predict(matrix[:scored]), 300)
    shortlist = np.ascontiguousarray(matrix[:scored])
    served_us = _median_us(lambda: served_predict(shortlist), 300)
    encode_us = _median_us(lambda: model.spec.encode_candidates(task, candidates, snapshot), 300)
    p50, p99 = measure(balancer, "hybrid", iterations)
    return {
        "agents": n_agents,
        "rows_scored_by_model": scored,
        "raw_booster_predict_all_candidates_us": round(raw_all_us, 1),
        "raw_booster_predict_us": round(raw_us, 1),
        "encode_candidates_us": round(encode_us, 1),
        "hybrid_p50_us": round(p50, 1),
        "hybrid_p99_us": round(p99, 1),
        "beyond_raw_predict_pct": round(100.0 * (p50 - raw_us) / raw_us, 1),
        "evaluator": model.evaluator,
        "served_predict_us": round(served_us, 1),
        "beyond_served_predict_pct": round(100.0 * (p50 - served_us) / served_us, 1),
    }


def register_model_bench(app: typer.Typer) -> None:
    @app.command("bench-model-overhead")
    def bench_model_overhead(
        agents: Annotated[int, typer.Option(min=1)] = 100,
        iterations: Annotated[int, typer.Option(min=10)] = 1000,
    ) -> None:
        """Hybrid selection with an in-memory LightGBM model vs its raw Booster.predict (JSON)."""
        typer.echo(json.dumps(model_overhead(agents, iterations), indent=2))
