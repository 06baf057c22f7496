"""docs/benchmarks.md shows the training-accuracy figures rendered from the committed results file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "training" / "bench_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_shows_the_render_of_the_committed_results() -> None:
    bench = _bench()
    results = json.loads((ROOT / "training" / "results" / "accuracy.json").read_text())
    assert bench.doc_block() == bench.render(results), (
        "docs/benchmarks.md is stale: run `python training/bench_accuracy.py "
        "--render training/results/accuracy.json --write-doc`"
    )


def test_our_lightgbm_is_at_least_as_accurate_as_the_library_defaults() -> None:
    results = json.loads((ROOT / "training" / "results" / "accuracy.json").read_text())["results"]
    for entry in results:
        figures = entry["library_defaults"]
        assert figures["ours_mae"] <= figures["library_defaults_mae"], entry["history"]
