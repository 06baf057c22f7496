"""The training pipeline: history -> validated, time-split frame -> candidates as MLflow runs ->
registered challenger -> promotion gate -> champion bundle in `models/`.

MLflow is imported here, never on the request path. The tracking URI and the artifact root
come from settings (NOTES-ML: a sqlite tracking URI otherwise drops artifacts into ./mlruns).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.errors import TrainingInProgressError
from agentlb.features import frame_hash
from agentlb.settings import Settings, load_settings
from agentlb.training import tracking
from agentlb.training.config import TrainingConfig
from agentlb.training.data import describe_rejections, encode, prepare_history
from agentlb.training.feature_select import select_features
from agentlb.training.fitting import fit_candidates, tune_if_asked
from agentlb.training.gate import gate_decision
from agentlb.training.publish import Fitted, lineage_tags, publish

__all__ = ["gate_decision", "run_training", "training_lock"]

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("agentlb.training")

ProgressCallback = Callable[[str, float], None]
LOCK_FILE = "training.lock"


def _noop(message: str, fraction: float) -> None:
    log.info("[%3.0f%%] %s", 100 * fraction, message)


@contextmanager
def training_lock(var_dir: Path) -> Iterator[None]:
    """One training at a time per home: a second concurrent run is refused, not interleaved."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TrainingInProgressError(
                f"a training run is already in progress ({holder}); refusing to start"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def run_training(
    history: pd.DataFrame | str | Path | None = None,
    *,
    settings: Settings | None = None,
    config: TrainingConfig | None = None,
    from_db: bool = False,
    since: float | None = None,
    holdout_frac: float | None = None,
    seed: int | None = None,
    skip_bad_rows: bool = False,
    export: bool = True,
    tune_trials: int = 0,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Train every candidate, register the best servable pair as challenger, gate it to
    champion and export the champion bundle. Returns the `agentlb train --json` summary.

    `history` is a frame or a CSV/Parquet path; `from_db` reads the store's history instead.
    `tune_trials` > 0 first searches the LightGBM parameters (`agentlb.training.tune`).
    `progress(message, fraction_done)` is called at each stage (the bootstrap's progress bar).
    Raises HistoryValidationError for a bad or too short history, TrainingInProgressError when
    another training holds the lock, TrainingFailedError when no servable candidate fits.
    """
    settings = settings or load_settings()
    config = (config or TrainingConfig()).replace(holdout_frac=holdout_frac, seed=seed)
    report = progress or _noop
    with training_lock(settings.var_dir):
        return _run(history, settings, config, from_db, since, skip_bad_rows, export, tune_trials, report)


def _load_source(
    history: pd.DataFrame | str | Path | None, settings: Settings, from_db: bool, since: float | None
) -> pd.DataFrame | str | Path:
    if from_db:
        from agentlb.training.store_history import load_store_history

        return load_store_history(settings, since)
    if history is None:
        raise ValueError("run_training needs a history frame or file, or from_db=True")
    return history


def _run(
    history: pd.DataFrame | str | Path | None,
    settings: Settings,
    config: TrainingConfig,
    from_db: bool,
    since: float | None,
    skip_bad_rows: bool,
    export: bool,
    tune_trials: int,
    report: ProgressCallback,
) -> dict[str, Any]:
    started = time.perf_counter()
    report("loading and validating history", 0.0)
    prepared = prepare_history(
        _load_source(history, settings, from_db, since),
        config.holdout_frac,
        skip_bad_rows=skip_bad_rows,
        min_train_rows=config.min_train_rows,
        min_holdout_rows=config.min_holdout_rows,
    )
    load_validate_s = time.perf_counter() - started
    report(
        f"{len(prepared.train)} training rows, {len(prepared.holdout)} holdout rows; building features", 0.1
    )
    encode_started = time.perf_counter()
    selection, x_train = select_features(prepared.train)
    spec = selection.spec
    log_y = np.log(prepared.train["duration_s"].to_numpy(dtype=np.float64))
    x_holdout, _ = encode(spec, prepared.holdout)
    encode_s = time.perf_counter() - encode_started
    for name, why in selection.dropped.items():
        log.info("feature %s left out: %s", name, why)

    config, tuning = tune_if_asked(config, selection, x_train, log_y, tune_trials, report)
    results, failures = fit_candidates(prepared, selection, x_train, log_y, x_holdout, config, report)
    fit_s = time.perf_counter() - started

    train, holdout = prepared.train, prepared.holdout
    fitted = Fitted(
        results,
        failures,
        selection,
        holdout,
        x_holdout[:5],
        lineage_tags(
            spec,
            data_hash=frame_hash(prepared.frame),
            rows=len(prepared.frame),
            train_rows=len(train),
            holdout_rows=len(holdout),
            time_range=prepared.time_range,
            holdout_start=float(holdout["arrival_time"].min()) if "arrival_time" in holdout.columns else None,
        ),
        tracking.dataset_inputs(train, holdout),
        tuning,
    )
    summary = publish(fitted, settings, config, export, report)
    report("done", 1.0)
    return {
        **summary,
        "rows": {
            "train": len(train),
            "holdout": len(holdout),
            "rejected": len(prepared.rejected),
            "dropped": prepared.dropped,
        },
        "rejected_rows": describe_rejections(prepared.rejected),
        "fit_s": fit_s,
        "load_validate_s": load_validate_s,
        "encode_s": encode_s,
        "total_s": time.perf_counter() - started,
    }
