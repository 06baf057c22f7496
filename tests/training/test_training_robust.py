"""Histories as users bring them: any valid file trains and predicts, or fails naming a column.

Property-based (Hypothesis): each example writes a history file of a generated shape (no agent
columns, one task type, one agent, empty / constant / high-cardinality attributes, durations
from 1 ms to a day, arrival-time ties, heavy-tailed outliers), trains the full pipeline on it
(real LightGBM, real MLflow store, tiny budgets) and scores a file with unseen categories.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from agentlb.errors import HistoryValidationError
from agentlb.features import AGENT_STATE_FEATURES
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.training.config import GroupMeanConfig, HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.offline import predict_history
from agentlb.training.pipeline import run_training

TINY = TrainingConfig(
    min_train_rows=20,
    min_holdout_rows=5,
    group_mean=GroupMeanConfig(min_samples=2),
    sklearn_hgb=HGBConfig(max_iter=5),
    lightgbm=LightGBMConfig(num_boost_round=5, num_leaves=4, min_data_in_leaf=3),
)

ATTRIBUTE_KINDS = ("empty", "constant_number", "constant_text", "number", "category", "tenant", "identifier")


@st.composite
def histories(draw: st.DrawFn) -> pd.DataFrame:
    """A history frame of a random shape the contract allows."""
    n = draw(st.integers(60, 160))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    frame: dict[str, Any] = {"task_type": rng.choice([f"type{i}" for i in range(draw(st.integers(1, 3)))], n)}
    # durations from 1 ms to a day, log-uniform, with a few heavy-tailed outliers
    log_low, log_high = draw(st.sampled_from([(-3.0, 0.0), (0.0, 2.0), (-3.0, math.log10(86400))]))
    duration = 10 ** rng.uniform(log_low, log_high, n)
    if draw(st.booleans()):
        outliers = rng.choice(n, size=max(1, n // 30), replace=False)
        duration[outliers] = np.minimum(duration[outliers] * 10 ** rng.uniform(2, 4, len(outliers)), 86400.0)
    frame["duration_s"] = duration
    agents = draw(st.sampled_from(["none", "one", "several", "with_state"]))
    if agents != "none":
        frame["agent_id"] = "solo" if agents == "one" else rng.choice(["a1", "a2", "a3"], n)
    if agents == "with_state":
        for name in draw(st.sets(st.sampled_from(AGENT_STATE_FEATURES), min_size=1, max_size=4)):
            frame[name] = np.nan if draw(st.booleans()) else rng.uniform(0, 5, n)
    timing = draw(st.sampled_from(["none", "distinct", "ties"]))
    if timing != "none":
        times = np.sort(rng.uniform(1.7e9, 1.7e9 + 86400, n))
        frame["arrival_time"] = np.round(times / 3600) * 3600 if timing == "ties" else times
    for i, kind in enumerate(draw(st.lists(st.sampled_from(ATTRIBUTE_KINDS), max_size=4))):
        name = f"attr{i}_{kind}"
        if kind == "empty":
            frame[name] = np.nan
        elif kind == "constant_number":
            frame[name] = 7
        elif kind == "constant_text":
            frame[name] = "same"
        elif kind == "number":
            frame[name] = rng.lognormal(5, 1, n)
        elif kind == "category":
            frame[name] = rng.choice(["small", "medium", "large"], n)
        elif kind == "tenant":
            frame[name] = [f"tenant-{k}" for k in rng.integers(0, 10_000, n)]
        else:
            frame[name] = [f"req-{k}" for k in range(n)]
    return pd.DataFrame(frame)


def _fresh_home(root: Path, template: Path) -> Settings:
    home = root / uuid.uuid4().hex[:10]
    (home / "var").mkdir(parents=True)
    shutil.copy(template, home / "var" / "mlflow.db")
    return load_settings(home=home, mlflow_tracking_uri=None, model_uri=None)


def _unseen(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows with every text value replaced by one training never saw."""
    out = frame.copy()
    for column in out.columns:
        if column != "duration_s" and not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = "never-seen"
    return out


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=histories(), as_parquet=st.booleans())
def test_any_valid_history_trains_and_predicts(
    frame: pd.DataFrame, as_parquet: bool, home: Path, mlflow_template: Path
) -> None:
    settings_ = _fresh_home(home, mlflow_template)
    path = settings_.home / ("history.parquet" if as_parquet else "history.csv")
    if as_parquet:
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    try:
        summary = run_training(path, settings=settings_, config=TINY, export=False)
    except HistoryValidationError as exc:  # allowed only with a message naming a column
        assert any(column in str(exc) for column in frame.columns), str(exc)
        return
    assert summary["winner"] == "lightgbm"
    assert not summary["failed_candidates"], summary["failed_candidates"]
    for name, why in summary["dropped_features"].items():
        assert name in frame.columns or name in AGENT_STATE_FEATURES or name == "agent_id", name
        assert why
    out = settings_.home / "predictions.csv"
    model = f"models:/{MODEL_NAME}/{summary['registered_version']}"
    assert predict_history(_write(_unseen(frame), settings_.home), out, model, settings_.tracking_uri) == len(
        frame
    )
    scored = pd.read_csv(out)
    assert np.isfinite(scored[["predicted_p50_s", "predicted_p90_s"]].to_numpy()).all()
    assert (scored["predicted_p50_s"] > 0).all()
    assert (scored["predicted_p90_s"] >= scored["predicted_p50_s"]).all()


def _write(frame: pd.DataFrame, where: Path) -> Path:
    path = where / "to-score.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_bad_value_fails_naming_its_column(settings: Settings) -> None:
    frame = pd.DataFrame(
        {"task_type": ["a"] * 60, "duration_s": [1.0] * 60, "tokens": [1.0] * 59 + [math.inf]}
    )
    with pytest.raises(HistoryValidationError, match="tokens"):
        run_training(frame, settings=settings, config=TINY, export=False)


def exported_history(n: int = 1500, seed: int = 0, tenants: int = 300) -> pd.DataFrame:
    """A history as another system exports it: task attributes and durations, no agent columns."""
    rng = np.random.default_rng(seed)
    size = rng.lognormal(7, 0.8, n)
    model = rng.choice(["m1", "m2"], n)
    return pd.DataFrame(
        {
            "task_id": [f"x{i}" for i in range(n)],
            "arrival_time": np.sort(rng.uniform(0, 1e5, n)),
            "task_type": rng.choice(["a", "b", "c"], n),
            "input_tokens": size.astype(int),
            "n_files": rng.integers(1, 9, n),
            "model": model,
            "customer": [f"c{k}" for k in rng.integers(0, tenants, n)],
            "duration_s": size / 500 * np.where(model == "m1", 1.0, 2.0) * rng.lognormal(0, 0.3, n),
        }
    )


def test_history_without_agent_state_trains_every_candidate(settings: Settings) -> None:
    """The reported crash: task attributes, no agent_* columns and no agent_id."""
    summary = run_training(
        exported_history(), settings=settings, config=TINY.replace(min_train_rows=100), export=False
    )
    by_name = {c["name"]: c for c in summary["candidates"]}
    assert set(by_name) == {"heuristic", "group_mean", "sklearn_hgb", "lightgbm"}
    assert by_name["heuristic"]["p90_coverage"] >= 0.6  # the type EWMA, not a constant 1 s
    assert summary["dropped_features"]["agent_id"] == "no values in the training rows"
    assert "agent_in_flight" in summary["dropped_features"]
    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(by_name["sklearn_hgb"]["run_id"])
    assert "agent_in_flight" in run.data.params["dropped_features"]


def test_ten_thousand_tenants(settings: Settings) -> None:
    frame = exported_history(n=12_000, seed=3, tenants=10_000)
    summary = run_training(frame, settings=settings, config=TINY, export=False)
    assert summary["winner"] == "lightgbm" and not summary["failed_candidates"]
    assert "customer" not in summary["dropped_features"]
