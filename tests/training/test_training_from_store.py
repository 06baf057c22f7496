"""`--from-db`: training reads the history the store logged, through the same contract."""

from __future__ import annotations

import pandas as pd

from agentlb.settings import Settings
from agentlb.store import Store
from agentlb.training.config import HGBConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.store_history import load_store_history


def test_train_from_the_store(settings: Settings, history: pd.DataFrame, fast_config: TrainingConfig) -> None:
    store = Store.open(settings.db_url)
    try:
        report = store.import_history(history)
    finally:
        store.close()
    assert report is not None
    frame = load_store_history(settings)
    assert len(frame) == len(history)
    recent = load_store_history(settings, since=float(history["arrival_time"].quantile(0.5)))
    assert 0 < len(recent) < len(history)
    summary = run_training(
        settings=settings, config=fast_config.replace(sklearn_hgb=HGBConfig(enabled=False)), from_db=True
    )
    assert summary["promoted"]
    assert summary["rows"]["train"] + summary["rows"]["holdout"] == int(history["success"].sum())
