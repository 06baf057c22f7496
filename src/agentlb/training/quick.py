"""In-memory fit of the served p50/p90 pair, without MLflow.

The simulator's fair benchmark trains on a warm-up segment and evaluates on later tasks; it
needs the same model the pipeline would serve, in seconds, with nothing written to disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentlb.errors import HistoryValidationError
from agentlb.features import FeatureSpec, frame_hash
from agentlb.predictor.model import ModelPredictor
from agentlb.training.candidates import train_boosters
from agentlb.training.config import LightGBMConfig
from agentlb.training.data import encode, training_rows

if TYPE_CHECKING:
    import pandas as pd

MIN_ROWS = 20


def fit_predictor(
    frame: pd.DataFrame,
    seed: int = 0,
    config: LightGBMConfig | None = None,
    p90_alpha: float = 0.9,
    skip_bad_rows: bool = True,
) -> ModelPredictor:
    """Fit the LightGBM p50/p90 pair on a history frame (DESIGN.md contract) and return a
    ModelPredictor serving it. Bad rows are skipped by default: a warm-up segment may end with
    tasks still running. Raises HistoryValidationError when fewer than 20 successful tasks remain."""
    from agentlb.history import validate_history

    validated = validate_history(frame, skip_bad_rows=skip_bad_rows)
    rows, _ = training_rows(validated.frame)
    if len(rows) < MIN_ROWS:
        raise HistoryValidationError(
            f"too little history to fit a model: {len(rows)} successful tasks (need {MIN_ROWS})"
        )
    spec = FeatureSpec.from_frame(rows)
    matrix, target = encode(spec, rows)
    lgb_config = config or LightGBMConfig(num_boost_round=200, learning_rate=0.08)
    pair = train_boosters(spec, matrix, target, lgb_config, p90_alpha, seed)
    data_hash = frame_hash(rows)
    return ModelPredictor(
        pair.p50,
        pair.p90,
        spec,
        version=f"quick-{data_hash[:8]}",
        source="in-memory fit (agentlb.training.quick)",
        metadata={"rows": len(rows), "data_hash": data_hash, "seed": seed},
        p90_log_offset=pair.p90_log_offset,
    )
