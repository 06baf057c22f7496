"""The model-comparison notebook runs headless on a small trained home."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from agentlb.settings import Settings
from agentlb.training.config import HGBConfig, TrainingConfig
from agentlb.training.pipeline import run_training

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01-model-comparison.ipynb"


def test_model_comparison_notebook_executes(
    settings: Settings,
    history_csv: Path,
    history: pd.DataFrame,
    fast_config: TrainingConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_training(history, settings=settings, config=fast_config.replace(sklearn_hgb=HGBConfig(enabled=False)))
    monkeypatch.setenv("AGENTLB_NOTEBOOK_HISTORY", str(history_csv))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(settings.home)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "lightgbm" in text and "group_mean" in text
    assert "model / per-(agent, type) mean MAE ratio" in text
