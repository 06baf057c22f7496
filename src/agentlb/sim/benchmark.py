"""The strategy benchmark: scenarios x strategies x seeds, with CIs and ratios to the baselines.

`run_benchmark(config)` returns exactly what `agentlb benchmark` writes to results.json, and is
what `POST /load-balancing/benchmark` calls. Within one (scenario, seed) every strategy sees
the same fleet and the same tasks (common random numbers), so the ratios compare like with like.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlb.errors import BenchmarkLimitError, SimulationError
from agentlb.predictor.base import Predictor, PredictorRef
from agentlb.sim.fleet import SimAgentSpec, load_fleet
from agentlb.sim.metrics import aggregate, ci95, measured_sojourns, run_metrics
from agentlb.sim.scenarios import SCENARIO_NAMES, get_scenario
from agentlb.sim.simulator import ORACLE, SIM_STRATEGIES, RunConfig, history_frame, simulate
from agentlb.sim.trace import read_trace, tasks_from_trace
from agentlb.sim.workload import SimTask

if TYPE_CHECKING:
    import pandas as pd

PREDICTORS = ("heuristic", "model")
BASELINE = "power_of_two"
# the classical strategies a learned one must beat; "best" is the lowest of them per scenario
CLASSICAL_BASELINES = ("power_of_two", "peak_ewma", "least_connection")
WARMUP_STRATEGY = "least_connection"
WARMUP_SERVED_STRATEGY = "predictive"
SERVED_WARMUP_MIN_TASKS = 200
WARMUP_SEED_OFFSET = 1_000_003
# the tuning seeds (`agentlb tune-weights`, `agentlb benchmark --first-seed 500000`) start here;
# the benchmark's own seeds (from 0) never reach them
TUNING_SEED_OFFSET = 500_000
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run. `tasks` is per run (warm-up share included); `load` overrides each
    scenario's offered load; a trace replaces the scenarios' arrivals and tasks."""

    scenarios: tuple[str, ...] = SCENARIO_NAMES
    strategies: tuple[str, ...] = SIM_STRATEGIES
    seeds: int = 5
    tasks: int = 5000
    first_seed: int = 0  # seeds run: first_seed .. first_seed + seeds - 1
    load: float | None = None
    predictor: str = "heuristic"
    fleet_path: str | None = None
    trace_path: str | None = None
    time_scale: float = 1.0
    warmup_tasks: int = 2000
    workers: int = 1
    keep_samples: bool = True

    @property
    def seed_range(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def validate(self) -> None:
        unknown = sorted(set(self.scenarios) - set(SCENARIO_NAMES))
        if unknown:
            raise SimulationError(f"unknown scenarios {unknown}; valid: {', '.join(SCENARIO_NAMES)}")
        unknown = sorted(set(self.strategies) - set(SIM_STRATEGIES))
        if unknown:
            raise SimulationError(f"unknown strategies {unknown}; valid: {', '.join(SIM_STRATEGIES)}")
        if not self.scenarios or not self.strategies:
            raise SimulationError("at least one scenario and one strategy are needed")
        if self.seeds < 1 or self.tasks < 10:
            raise SimulationError("seeds must be >= 1 and tasks >= 10")
        if self.first_seed < 0:
            raise SimulationError("--first-seed must be >= 0")
        if self.predictor not in PREDICTORS:
            raise SimulationError(
                f"--predictor must be one of {', '.join(PREDICTORS)}, got {self.predictor!r}"
            )
        if self.load is not None and not self.load > 0:
            raise SimulationError("--load must be > 0")
        if self.time_scale <= 0:
            raise SimulationError("--time-scale must be > 0")
        if self.trace_path and self.load is not None:
            raise SimulationError("--load does not apply to trace replay; use --time-scale to compress it")

    def check_limits(self, max_tasks: int, max_seeds: int, max_runs: int | None = None) -> None:
        """For bounded callers (the API): raise BenchmarkLimitError naming the cap exceeded."""
        if self.tasks > max_tasks:
            raise BenchmarkLimitError(f"tasks={self.tasks} exceeds the limit of {max_tasks}")
        if self.seeds > max_seeds:
            raise BenchmarkLimitError(f"seeds={self.seeds} exceeds the limit of {max_seeds}")
        runs = len(self.scenarios) * len(self.strategies) * self.seeds
        if max_runs is not None and runs > max_runs:
            raise BenchmarkLimitError(
                f"{runs} runs (scenarios x strategies x seeds) exceed the limit of {max_runs}"
            )


def load_model_fitter() -> Callable[[Any, int], Predictor]:
    """`agentlb.training.quick.fit_predictor`, or a clear error when it is not available."""
    try:
        module = importlib.import_module("agentlb.training.quick")
    except ImportError as exc:
        raise SimulationError(
            "--predictor model needs agentlb.training.quick.fit_predictor, which cannot be imported "
            f"({exc}); use --predictor heuristic"
        ) from exc
    fitter = getattr(module, "fit_predictor", None)
    if not callable(fitter):
        raise SimulationError("agentlb.training.quick has no fit_predictor(frame, seed)")
    return fitter  # type: ignore[no-any-return]


@dataclass
class _Workload:
    fleet: list[SimAgentSpec]
    tasks: list[SimTask]
    warmup: list[SimTask] = field(default_factory=list)
    offered_load: float | None = None
    warmup_fleet: list[SimAgentSpec] = field(default_factory=list)


def build_workload(config: BenchmarkConfig, scenario_name: str, seed: int) -> _Workload:
    """Fleet, evaluation tasks and (for the model protocol) separate warm-up tasks."""
    scenario = get_scenario(scenario_name)
    fleet_override = load_fleet(config.fleet_path) if config.fleet_path else None
    want_warmup = config.predictor == "model"
    if config.trace_path:
        frame = read_trace(config.trace_path)
        fleet = fleet_override or scenario.fleet(seed, 1.0)
        trace_warmup_fleet = fleet_override or scenario.fleet(seed + WARMUP_SEED_OFFSET, 1.0)
        first = config.warmup_tasks if want_warmup else 0
        all_tasks = tasks_from_trace(
            frame, config.time_scale, seed, scenario.noise_sigma, limit=first + config.tasks
        )
        warmup, tasks = all_tasks[:first], all_tasks[first:]
        if not tasks:
            raise SimulationError("the trace has no tasks left after the warm-up segment")
        # evaluation tasks are renumbered from 0 so their indices address the run's arrays
        offset = tasks[0].arrival_s
        tasks = [_renumber(t, i, t.arrival_s - offset) for i, t in enumerate(tasks)]
        return _Workload(fleet, tasks, warmup, warmup_fleet=trace_warmup_fleet if want_warmup else [])
    fleet, tasks = scenario.build(seed, config.tasks, config.load, fleet_override)
    extra: list[SimTask] = []
    warmup_fleet: list[SimAgentSpec] = []
    if want_warmup:
        # the warm-up's own fleet draw (same scenario, another seed): the model never sees the
        # evaluation fleet's slow-down episodes; agent ids and static traits are the same
        warmup_fleet, extra = scenario.build(
            seed + WARMUP_SEED_OFFSET, config.warmup_tasks, config.load, fleet_override
        )
        extra = [_renumber(t, t.index, t.arrival_s, "w") for t in extra]
    load = config.load if config.load is not None else scenario.load
    return _Workload(fleet, tasks, extra, load, warmup_fleet)


def _renumber(task: SimTask, index: int, arrival_s: float, prefix: str = "") -> SimTask:
    from dataclasses import replace

    return replace(task, index=index, arrival_s=arrival_s, task_id=prefix + task.task_id)


def fit_warmup_predictor(
    fleet: Sequence[SimAgentSpec], warmup: Sequence[SimTask], seed: int
) -> tuple[PredictorRef, int]:
    """The fair protocol (issue 7): a model is fitted on the warm-up segment's history only,
    and that model serves the evaluation segment. Returns it with the number of warm-up tasks.

    The warm-up runs as the service's own life does, a first model and then one retrain on
    served history: `least_connection` serves the warm-up tasks and a first model is fitted on
    that history; the same tasks are served again by `predictive` with that first model; the
    final model is fitted on both histories. A model fitted on a classical strategy's history
    alone never sees the rows its own choices produce (an agent picked on one or two
    lucky-fast samples of a task type); the served history shows it what they cost. Warm-ups
    shorter than `SERVED_WARMUP_MIN_TASKS` are served by `least_connection` alone.
    """
    import pandas as pd

    fitter = load_model_fitter()
    histories = warmup_histories(fleet, warmup, seed, fitter)
    frame = pd.concat(histories, ignore_index=True)
    return PredictorRef(fitter(frame, seed)), len(histories[0])


def warmup_histories(
    fleet: Sequence[SimAgentSpec],
    warmup: Sequence[SimTask],
    seed: int,
    fitter: Callable[[Any, int], Predictor],
) -> list[pd.DataFrame]:
    """The warm-up tasks' histories as `fit_warmup_predictor` runs them: served by
    `least_connection`, then (past `SERVED_WARMUP_MIN_TASKS`) by `predictive` with a model
    fitted on the first; the second history's task ids carry the prefix `served-`."""
    if not warmup:
        raise SimulationError("the model protocol needs warm-up tasks (--warmup-tasks > 0)")
    first = _run_history(fleet, warmup, WARMUP_STRATEGY, seed)
    if len(warmup) < SERVED_WARMUP_MIN_TASKS:
        return [first]
    first_model = PredictorRef(fitter(first, seed))
    again = [_renumber(t, t.index, t.arrival_s, "served-") for t in warmup]
    return [first, _run_history(fleet, again, WARMUP_SERVED_STRATEGY, seed, first_model)]


def _run_history(
    fleet: Sequence[SimAgentSpec],
    tasks: Sequence[SimTask],
    strategy: str,
    seed: int,
    predictor: PredictorRef | None = None,
) -> pd.DataFrame:
    result = simulate(
        fleet, tasks, RunConfig(strategy, seed, warmup_share=0.0, collect_history=True), predictor
    )
    return history_frame(result.history)


def single_threaded() -> contextlib.AbstractContextManager[Any]:
    """Limit OpenMP to one thread while simulating: LightGBM's predict on a few rows otherwise
    spins all cores, and on a busy 2-core machine one model call took ~40 ms instead of ~0.3 ms."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")  # type: ignore[no-any-return]


def _job(config: BenchmarkConfig, scenario_name: str, seed: int) -> list[dict[str, Any]]:
    with single_threaded():
        return _job_body(config, scenario_name, seed)


def _job_body(config: BenchmarkConfig, scenario_name: str, seed: int) -> list[dict[str, Any]]:
    """All strategies on one (scenario, seed): metrics per strategy plus plot data."""
    workload = build_workload(config, scenario_name, seed)
    predictor: PredictorRef | None = None
    warmup_rows = 0
    if config.predictor == "model":
        predictor, warmup_rows = fit_warmup_predictor(workload.warmup_fleet, workload.warmup, seed)
    out = []
    for strategy in config.strategies:
        result = simulate(workload.fleet, workload.tasks, RunConfig(strategy, seed), predictor)
        item: dict[str, Any] = {
            "scenario": scenario_name,
            "strategy": strategy,
            "seed": seed,
            "metrics": run_metrics(result),
            "utilisation_by_agent": result.utilisation_by_agent,
            "model_version": result.model_version,
            "warmup_tasks": warmup_rows,
            "offered_load": workload.offered_load,
            "wall_s": result.wall_s,
            "events": result.events_processed,
        }
        if config.keep_samples and seed == config.first_seed:
            item["sojourns"] = measured_sojourns(result).tolist()
        out.append(item)
    return out


def _paired_ratio_ci(
    values: Sequence[float | None], base: Sequence[float | None] | None
) -> list[float] | None:
    """95% CI of the per-seed ratio (same seed, same tasks): tighter than comparing two CIs."""
    if base is None or len(values) != len(base):
        return None
    ratios = [v / b for v, b in zip(values, base, strict=True) if v is not None and b is not None and b > 0]
    if len(ratios) != len(values):
        return None
    low, high = ci95(ratios)
    return [low, high]


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def best_classical(by_strategy: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """Per metric (mean, p99 sojourn), the classical baseline with the lowest value over the
    seeds, chosen separately for each metric; None when no classical baseline ran."""
    out: dict[str, str | None] = {}
    for metric in ("mean_sojourn_s", "p99_sojourn_s"):
        present = [
            (float(by_strategy[n][metric]), n)
            for n in CLASSICAL_BASELINES
            if n in by_strategy and by_strategy[n].get(metric) is not None
        ]
        out[metric] = min(present, key=lambda p: p[0])[1] if present else None  # ties: first listed
    return out


def summarise(
    config: BenchmarkConfig, items: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """Aggregate per-seed items into the results.json shape, plus the first seed's sojourn samples."""
    runs: list[dict[str, Any]] = []
    samples: dict[str, dict[str, list[float]]] = {}
    for scenario in config.scenarios:
        by_strategy: dict[str, dict[str, Any]] = {}
        for strategy in config.strategies:
            mine = sorted(
                (i for i in items if i["scenario"] == scenario and i["strategy"] == strategy),
                key=lambda i: int(i["seed"]),
            )
            metrics = aggregate([i["metrics"] for i in mine])
            agent_ids = sorted({a for i in mine for a in i["utilisation_by_agent"]})
            utilisation = {
                a: sum(i["utilisation_by_agent"].get(a, 0.0) for i in mine) / len(mine) for a in agent_ids
            }
            versions = sorted({str(i["model_version"]) for i in mine if i["model_version"]})
            run: dict[str, Any] = {
                "scenario": scenario,
                "strategy": strategy,
                "predictor": config.predictor if strategy != ORACLE else "oracle",
                "model_versions": versions,
                "seeds": len(mine),
                "tasks": config.tasks,
                "warmup_share": RunConfig(strategy).warmup_share,
                "workload": f"trace:{config.trace_path}" if config.trace_path else "scenario",
                "offered_load": mine[0]["offered_load"] if mine else None,
                **metrics,
                "utilisation_by_agent": utilisation,
                "per_seed_mean_sojourn_s": [i["metrics"]["mean_sojourn_s"] for i in mine],
                "per_seed_p99_sojourn_s": [i["metrics"]["p99_sojourn_s"] for i in mine],
                "wall_s": sum(float(i["wall_s"]) for i in mine),
            }
            if config.predictor == "model":
                run["warmup_tasks"] = mine[0]["warmup_tasks"] if mine else 0
            by_strategy[strategy] = run
            for i in mine:
                if "sojourns" in i:
                    samples.setdefault(scenario, {})[strategy] = i["sojourns"]
        best = best_classical(by_strategy)
        for run in by_strategy.values():
            run["best_classical_mean"] = best["mean_sojourn_s"]
            run["best_classical_p99"] = best["p99_sojourn_s"]
            for metric, short in (("mean_sojourn_s", "mean"), ("p99_sojourn_s", "p99")):
                base = by_strategy.get(best[metric] or "")
                run[f"ratio_{short}_to_best_classical"] = _ratio(run[metric], base[metric] if base else None)
                run[f"ratio_{short}_to_best_classical_ci95"] = _paired_ratio_ci(
                    run[f"per_seed_{metric}"], base[f"per_seed_{metric}"] if base else None
                )
            for base_name, key in ((BASELINE, "power_of_two"), (ORACLE, "oracle")):
                base = by_strategy.get(base_name)
                base_mean = base["mean_sojourn_s"] if base else None
                base_p99 = base["p99_sojourn_s"] if base else None
                run[f"ratio_mean_to_{key}"] = _ratio(run["mean_sojourn_s"], base_mean)
                run[f"ratio_p99_to_{key}"] = _ratio(run["p99_sojourn_s"], base_p99)
                for metric, short in (("mean_sojourn_s", "mean"), ("p99_sojourn_s", "p99")):
                    run[f"ratio_{short}_to_{key}_ci95"] = _paired_ratio_ci(
                        run[f"per_seed_{metric}"], base[f"per_seed_{metric}"] if base else None
                    )
            runs.append(run)
    settings = asdict(config)
    settings["scenarios"] = list(config.scenarios)
    settings["strategies"] = list(config.strategies)
    results = {
        "generated_by": "agentlb benchmark",
        "engine": "heap-based discrete-event engine (agentlb.sim.engine)",
        "config": settings,
        "runs": runs,
    }
    return results, samples


def _quiet_worker() -> None:
    """Worker processes: ejections are counted in the metrics, not logged one line each."""
    logging.getLogger("agentlb.balancer").setLevel(logging.ERROR)


def run_benchmark(config: BenchmarkConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark and return exactly the results.json dict (what the API returns)."""
    return run_benchmark_with_samples(config, progress)[0]


def run_benchmark_with_samples(
    config: BenchmarkConfig, progress: Progress | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """Run every (scenario, seed) job, in worker processes when `config.workers` > 1; return
    the results.json dict and the first seed's sojourn samples per scenario and strategy (for plots).
    Results do not depend on the number of workers."""
    config.validate()
    if config.predictor == "model":
        load_model_fitter()
    jobs = [(s, seed) for s in config.scenarios for seed in config.seed_range]
    per_job = len(config.strategies)
    total = len(jobs) * per_job
    items: list[dict[str, Any]] = []
    done = 0
    workers = max(1, min(config.workers, len(jobs), os.cpu_count() or 1))
    if workers == 1:
        for scenario, seed in jobs:
            items.extend(_job(config, scenario, seed))
            done += per_job
            if progress:
                progress(done, total, f"{scenario} seed {seed}")
    else:
        # forkserver, not fork: callers (the API, rich's progress bar) run threads, and forking a
        # threaded process can copy a held lock into the child.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_worker) as pool:
            futures = {pool.submit(_job, config, s, seed): (s, seed) for s, seed in jobs}
            for future in as_completed(futures):
                items.extend(future.result())
                done += per_job
                if progress:
                    scenario, seed = futures[future]
                    progress(done, total, f"{scenario} seed {seed}")
    items.sort(key=lambda i: (i["scenario"], i["strategy"], int(i["seed"])))
    return summarise(config, items)


def write_outputs(
    results: dict[str, Any], samples: dict[str, dict[str, list[float]]], out_dir: str | Path
) -> list[Path]:
    """results.json, report.md and the plots in `out_dir`; returns the paths written."""
    import json

    from agentlb.sim.report import render_markdown, render_plots

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "results.json", folder / "report.md"]
    paths[0].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(results), encoding="utf-8")
    paths.extend(render_plots(results, samples, folder))
    return paths
