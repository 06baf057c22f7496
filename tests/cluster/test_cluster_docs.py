"""The replicated-serving figures of docs/benchmarks.md are what benchmarks/replicas.py renders
from its committed results file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmarks_doc_shows_the_rendered_replica_results() -> None:
    spec = importlib.util.spec_from_file_location("replicas_benchmark", ROOT / "benchmarks" / "replicas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = json.loads((ROOT / "benchmarks" / "results" / "replicas.json").read_text())
    rendered = module.render(document)
    assert rendered in (ROOT / "docs" / "benchmarks.md").read_text(), (
        "docs/benchmarks.md is out of date: paste `.venv/bin/python benchmarks/replicas.py --render`"
    )
