"""`agentlb predict`: score a history file offline with a bundle or a registry model."""

from __future__ import annotations

from pathlib import Path

from agentlb.predictor.model import ModelPredictor
from agentlb.training.data import load_history_frame


def predict_history(
    history: str | Path, out: str | Path, model_uri: str, tracking_uri: str | None = None
) -> int:
    """Write one prediction row per input row (task_id, predicted_p50_s, predicted_p90_s).

    Rows are scored as they are (no validation drops): the output lines up with the input. A
    row without a task_id gets its 1-based row number as task_id.
    """
    import pandas as pd

    frame = load_history_frame(history)
    predictor = ModelPredictor.from_uri(model_uri, tracking_uri)
    prediction = predictor.predict_frame(frame)
    if "task_id" in frame.columns:
        task_ids = frame["task_id"].astype(str).to_numpy()
    else:
        task_ids = [str(i + 1) for i in range(len(frame))]
    pd.DataFrame(
        {"task_id": task_ids, "predicted_p50_s": prediction.p50_s, "predicted_p90_s": prediction.p90_s}
    ).to_csv(out, index=False)
    return len(frame)
