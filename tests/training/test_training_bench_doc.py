"""The committed training-accuracy results (their docs section: tests/core/test_generated_docs.py)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_our_lightgbm_is_at_least_as_accurate_as_the_library_defaults() -> None:
    results = json.loads((ROOT / "training" / "results" / "accuracy.json").read_text())["results"]
    for entry in results:
        figures = entry["library_defaults"]
        assert figures["ours_mae"] <= figures["library_defaults_mae"], entry["history"]
