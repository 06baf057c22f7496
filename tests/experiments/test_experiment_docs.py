"""The experiments' sections of docs/benchmarks.md are what their generators render from the
committed results files (benchmarks/experiments.py, benchmarks/shadow_overhead.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlb.experiments.docs import render_markdown, render_shadow_overhead

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("results", "render"),
    [("experiments.json", render_markdown), ("shadow_overhead.json", render_shadow_overhead)],
)
def test_the_committed_section_is_what_the_results_file_renders(results: str, render: object) -> None:
    summary = json.loads((DOCS / "results" / results).read_text())
    assert callable(render)
    assert render(summary) in (DOCS / "benchmarks.md").read_text()
