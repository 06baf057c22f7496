"""The README's and docs' decision-quality tables: one generator, and the committed copies match it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.sim.benchmark import BenchmarkConfig, run_benchmark
from agentlb.sim.tables import (
    DOCS_SECTION,
    README_SECTION,
    SCENARIO_RESULTS,
    TRACE_RESULTS,
    TableError,
    load_results,
    read_section,
    render_readme_table,
    sections,
    stale_sections,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_tables_match_what_the_committed_results_render() -> None:
    found = sections(ROOT, load_results(ROOT / SCENARIO_RESULTS), load_results(ROOT / TRACE_RESULTS))
    assert {s.name for s in found} == {README_SECTION, DOCS_SECTION}
    for section in found:
        assert read_section(section.path, section.name) == section.body, (
            f"{section.path.name} is stale: run `agentlb render-tables`"
        )


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


def test_render_tables_rewrites_a_stale_section_and_check_tells(tmp_path: Path) -> None:
    config = BenchmarkConfig(
        scenarios=("heterogeneous",),
        strategies=("power_of_two", "least_connection", "predictive", "hybrid", "oracle"),
        seeds=2,
        tasks=200,
    )
    results_path = tmp_path / "results.json"
    import json

    results = run_benchmark(config)
    results_path.write_text(json.dumps(results), encoding="utf-8")
    (tmp_path / "docs").mkdir()
    for name, section in (("README.md", README_SECTION), ("docs/benchmarks.md", DOCS_SECTION)):
        (tmp_path / name).write_text(
            f"intro\n<!-- generated:{section}:begin -->\nold\n<!-- generated:{section}:end -->\nend\n",
            encoding="utf-8",
        )
    runner = CliRunner()
    args = ["render-tables", "--results", str(results_path), "--root", str(tmp_path), "--trace-results", ""]
    assert runner.invoke(app, [*args, "--check"]).exit_code == 1
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--check"]).exit_code == 0
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("intro\n") and readme.endswith("end\n")
    assert read_section(tmp_path / "README.md", README_SECTION) == render_readme_table(results, None)
    hybrid = next(r for r in results["runs"] if r["strategy"] == "hybrid")
    assert f"{hybrid['ratio_mean_to_best_classical']:.3f}" in readme
    assert not stale_sections(sections(tmp_path, results, None))


def test_missing_results_and_markers_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="does not exist"):
        load_results(tmp_path / "none.json")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "README.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(TableError, match="exactly one"):
        read_section(tmp_path / "README.md", README_SECTION)
