"""The benchmark runner, its results.json contract and the CLI commands."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.errors import BenchmarkLimitError, SimulationError
from agentlb.history import validate_history
from agentlb.sim.benchmark import (
    CLASSICAL_BASELINES,
    SERVED_WARMUP_MIN_TASKS,
    WARMUP_SERVED_STRATEGY,
    WARMUP_STRATEGY,
    BenchmarkConfig,
    build_workload,
    load_model_fitter,
    run_benchmark,
    warmup_histories,
)
from agentlb.sim.report import render_markdown

SMALL = BenchmarkConfig(
    scenarios=("heterogeneous", "flaky"),
    strategies=("power_of_two", "least_connection", "predictive", "oracle"),
    seeds=2,
    tasks=300,
)


def test_results_have_every_run_with_cis_and_ratios() -> None:
    results = run_benchmark(SMALL)
    runs = results["runs"]
    assert [(r["scenario"], r["strategy"]) for r in runs] == [
        (s, t) for s in SMALL.scenarios for t in SMALL.strategies
    ]
    for run in runs:
        assert run["seeds"] == 2 and run["tasks"] == 300
        low, high = run["mean_sojourn_ci95"]
        assert low <= run["mean_sojourn_s"] <= high
        assert run["p50_sojourn_s"] <= run["p95_sojourn_s"] <= run["p99_sojourn_s"]
        assert run["ratio_mean_to_oracle"] == pytest.approx(
            run["mean_sojourn_s"]
            / next(
                r["mean_sojourn_s"]
                for r in runs
                if r["scenario"] == run["scenario"] and r["strategy"] == "oracle"
            )
        )
        if run["strategy"] == "power_of_two":
            assert run["ratio_mean_to_power_of_two"] == pytest.approx(1.0)
            assert run["ratio_mean_to_power_of_two_ci95"] == pytest.approx([1.0, 1.0])
        low, high = run["ratio_p99_to_oracle_ci95"]
        assert low <= high
    assert {r["predictor"] for r in runs} == {"heuristic", "oracle"}
    flaky = [r for r in runs if r["scenario"] == "flaky" and r["strategy"] != "oracle"]
    assert all(r["success_rate"] < 1.0 for r in flaky)
    json.dumps(results, allow_nan=False)


def test_ratios_to_the_best_classical_baseline_pick_the_lowest_per_metric() -> None:
    results = run_benchmark(SMALL)
    for scenario in SMALL.scenarios:
        mine = {r["strategy"]: r for r in results["runs"] if r["scenario"] == scenario}
        classical = [n for n in CLASSICAL_BASELINES if n in mine]
        for metric, short in (("mean_sojourn_s", "mean"), ("p99_sojourn_s", "p99")):
            best = min(classical, key=lambda n: mine[n][metric])
            for run in mine.values():
                assert run[f"best_classical_{short}"] == best
                assert run[f"ratio_{short}_to_best_classical"] == pytest.approx(
                    run[metric] / mine[best][metric]
                )
                # paired per-seed ratios: a t interval around their mean
                ratios = [
                    v / b
                    for v, b in zip(run[f"per_seed_{metric}"], mine[best][f"per_seed_{metric}"], strict=True)
                ]
                low, high = run[f"ratio_{short}_to_best_classical_ci95"]
                assert low <= sum(ratios) / len(ratios) <= high
            assert mine[best][f"ratio_{short}_to_best_classical"] == pytest.approx(1.0)


def test_the_model_warmup_runs_on_its_own_fleet_draw() -> None:
    """The warm-up never sees the evaluation fleet's slow-down episodes."""
    config = BenchmarkConfig(scenarios=("degradation",), tasks=3000, predictor="model", warmup_tasks=3000)
    workload = build_workload(config, "degradation", 2)
    assert [a.id for a in workload.warmup_fleet] == [a.id for a in workload.fleet]
    assert [a.slowdowns for a in workload.warmup_fleet] != [a.slowdowns for a in workload.fleet]
    assert any(a.slowdowns for a in workload.warmup_fleet)
    again = build_workload(config, "degradation", 2)
    assert [a.slowdowns for a in again.warmup_fleet] == [a.slowdowns for a in workload.warmup_fleet]


def test_results_do_not_depend_on_the_number_of_workers() -> None:
    config = BenchmarkConfig(scenarios=("bursty",), strategies=("random", "peak_ewma"), seeds=2, tasks=200)
    one = run_benchmark(config)
    two = run_benchmark(BenchmarkConfig(**{**config.__dict__, "workers": 2}))
    strip = lambda r: [{k: v for k, v in run.items() if k != "wall_s"} for run in r["runs"]]  # noqa: E731
    assert strip(one) == strip(two)


def test_first_seed_runs_other_seeds_the_same_way() -> None:
    base = BenchmarkConfig(scenarios=("bursty",), strategies=("random",), seeds=2, tasks=200)
    shifted = run_benchmark(BenchmarkConfig(**{**base.__dict__, "first_seed": 1, "seeds": 1}))
    both = run_benchmark(base)
    # seed 1 alone equals seed 1 of the 0..1 run; the 0..1 run's mean differs from it
    assert shifted["runs"][0]["per_seed_mean_sojourn_s"] == both["runs"][0]["per_seed_mean_sojourn_s"][1:]
    assert shifted["config"]["first_seed"] == 1
    with pytest.raises(SimulationError, match="--first-seed"):
        run_benchmark(BenchmarkConfig(**{**base.__dict__, "first_seed": -1}))


def test_limits_and_bad_names_are_clear_errors() -> None:
    with pytest.raises(BenchmarkLimitError, match="tasks=300 exceeds the limit of 100"):
        SMALL.check_limits(max_tasks=100, max_seeds=5)
    with pytest.raises(BenchmarkLimitError, match="runs"):
        SMALL.check_limits(max_tasks=1000, max_seeds=5, max_runs=4)
    with pytest.raises(SimulationError, match="unknown strategies"):
        run_benchmark(BenchmarkConfig(strategies=("fastest",)))


def test_benchmark_command_writes_results_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "--scenarios",
            "specialists",
            "--strategies",
            "power_of_two,hybrid,oracle",
            "--seeds",
            "2",
            "--tasks",
            "200",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {r["strategy"] for r in results["runs"]} == {"power_of_two", "hybrid", "oracle"}
    report = (out / "report.md").read_text()
    assert "Mean sojourn / power_of_two" in report and "specialists" in report
    for name in ("cdf_specialists.png", "p99_specialists.png", "utilisation_specialists.png"):
        assert (out / name).stat().st_size > 1000


def test_simulate_command_writes_a_trainable_history(tmp_path: Path) -> None:
    history = tmp_path / "history.parquet"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--scenario",
            "surveillance",
            "--strategy",
            "least_connection",
            "--tasks",
            "300",
            "--seed",
            "3",
            "--history-out",
            str(history),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["history_rows"] == 300 and record["mean_sojourn_s"] > 0
    frame = pd.read_parquet(history)
    assert len(validate_history(frame).frame) == 300
    assert set(frame["strategy"]) == {"least_connection"}


def test_simulate_command_rejects_an_unknown_scenario() -> None:
    result = CliRunner().invoke(app, ["simulate", "--scenario", "moon", "--tasks", "50"])
    assert result.exit_code == 2
    assert "unknown scenario" in result.output


@pytest.mark.skipif(
    importlib.util.find_spec("agentlb.training.quick") is None,
    reason="agentlb.training.quick (fit_predictor) is not available",
)
def test_model_predictor_is_fitted_on_a_separate_warmup_segment() -> None:
    config = BenchmarkConfig(
        scenarios=("heterogeneous",),
        strategies=("predictive", "power_of_two"),
        seeds=1,
        tasks=300,
        predictor="model",
        warmup_tasks=400,
    )
    results = run_benchmark(config)
    runs = results["runs"]
    predictive = next(r for r in runs if r["strategy"] == "predictive")
    assert predictive["predictor"] == "model"
    assert predictive["warmup_tasks"] == 400
    assert "400 warm-up tasks served by least_connection, then again by predictive" in render_markdown(
        results
    )
    assert predictive["model_versions"] and predictive["model_versions"] != ["heuristic"]


@pytest.mark.skipif(
    importlib.util.find_spec("agentlb.training.quick") is None,
    reason="agentlb.training.quick (fit_predictor) is not available",
)
def test_the_warmup_is_served_by_least_connection_then_again_by_a_first_model() -> None:
    config = BenchmarkConfig(scenarios=("specialists",), tasks=100, predictor="model", warmup_tasks=400)
    workload = build_workload(config, "specialists", 3)
    first, served = warmup_histories(workload.warmup_fleet, workload.warmup, 3, load_model_fitter())
    assert len(first) == len(served) == 400
    assert set(first["strategy"]) == {WARMUP_STRATEGY}
    assert set(first["model_version"].fillna("")) <= {"", "heuristic"}
    assert set(served["strategy"]) == {WARMUP_SERVED_STRATEGY}
    versions = set(served["model_version"])
    assert len(versions) == 1 and versions.pop().startswith("quick-")
    assert sorted("served-" + first["task_id"]) == sorted(served["task_id"])
    # the same tasks placed by the first model: most run on an agent at home with their type
    specs = {spec.id: spec for spec in workload.fleet}

    def home_share(frame: pd.DataFrame) -> float:
        pairs = zip(frame["agent_id"], frame["task_type"], strict=True)
        return sum(specs[a].speed_for(t) > 1.0 for a, t in pairs) / len(frame)

    assert home_share(served) > max(0.6, home_share(first) + 0.2)

    short = warmup_histories(
        workload.warmup_fleet, workload.warmup[: SERVED_WARMUP_MIN_TASKS - 1], 3, load_model_fitter()
    )
    assert len(short) == 1 and set(short[0]["strategy"]) == {WARMUP_STRATEGY}
