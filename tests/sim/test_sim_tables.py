"""The README's and docs' decision-quality tables, rendered from `agentlb benchmark` results
(tests/core/test_generated_docs.py holds the committed copies equal to their render)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentlb.doc_sections import DocSectionError, load_json
from agentlb.generated_docs import MODEL_RESULTS
from agentlb.sim.benchmark import BenchmarkConfig, run_benchmark
from agentlb.sim.tables import render_docs_table, render_readme_table

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_RESULTS, TRACE_RESULTS = MODEL_RESULTS


def load_results(path: Path) -> dict[str, Any]:
    return load_json(path, "agentlb benchmark")


def test_the_committed_results_cover_every_scenario_and_the_azure_replay() -> None:
    results = load_results(ROOT / SCENARIO_RESULTS)
    assert {r["scenario"] for r in results["runs"]} == {
        "homogeneous",
        "heterogeneous",
        "specialists",
        "degradation",
        "flaky",
        "bursty",
        "surveillance",
    }
    assert results["config"]["predictor"] == "model"
    trace = load_results(ROOT / TRACE_RESULTS)
    assert "azure_llm_2023" in trace["config"]["trace_path"]


def test_a_fresh_run_renders_its_ratios_and_a_malformed_file_is_a_clear_error() -> None:
    config = BenchmarkConfig(
        scenarios=("heterogeneous",),
        strategies=("power_of_two", "least_connection", "predictive", "hybrid", "oracle"),
        seeds=2,
        tasks=200,
    )
    results = json.loads(json.dumps(run_benchmark(config)))
    readme = render_readme_table(results, None)
    hybrid = next(r for r in results["runs"] if r["strategy"] == "hybrid")
    assert f"{hybrid['ratio_mean_to_best_classical']:.3f}" in readme
    assert "heterogeneous" in render_docs_table(results, None)
    with pytest.raises(DocSectionError, match="no runs/config"):
        render_readme_table({"runs": []}, None)
    without_hybrid = {**results, "runs": [r for r in results["runs"] if r["strategy"] != "hybrid"]}
    with pytest.raises(DocSectionError, match="no 'hybrid' run"):
        render_readme_table(without_hybrid, None)
