"""Fixtures for the training tests: a tmp AGENTLB_HOME with a pre-migrated MLflow DB, and
simulated histories (made by the real Balancer on a simulated clock)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from agentlb.settings import Settings, load_settings
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.synthetic import synthetic_history


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow sqlite DB; copying it (~0.03 s) beats migrating per test (~2 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def home(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in (
        "AGENTLB_MLFLOW_TRACKING_URI",
        "AGENTLB_MODEL_URI",
        "AGENTLB_DATABASE_URL",
        "MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTLB_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    (tmp_path / "var").mkdir()
    shutil.copy(mlflow_template, tmp_path / "var" / "mlflow.db")
    yield tmp_path


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def history() -> pd.DataFrame:
    """3,000 simulated tasks on six unequal agents (a fresh copy per use is the caller's job)."""
    return synthetic_history(n_tasks=3000, seed=1)


@pytest.fixture
def fast_config() -> TrainingConfig:
    """Small boosting budgets: the tests check behaviour, not the last digit of accuracy."""
    return TrainingConfig(
        lightgbm=LightGBMConfig(num_boost_round=80, learning_rate=0.1),
        sklearn_hgb=HGBConfig(max_iter=60, learning_rate=0.15),
    )


@pytest.fixture
def history_csv(tmp_path: Path, history: pd.DataFrame) -> Path:
    path = tmp_path / "history.csv"
    history.to_csv(path, index=False)
    return path
