"""Trace replay: tasks from a history file (DESIGN.md contract) or the Azure LLM trace.

A history file's `duration_s` is taken as the task's size (seconds of work on a speed-1
agent); its other attribute columns pass through to the balancer unchanged. `time_scale`
is a speed-up: arrivals are replayed at (t - t0) / time_scale, so 10 makes them 10x denser.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlb.domain import AttributeValue
from agentlb.errors import HistoryValidationError, SimulationError
from agentlb.features import attribute_columns
from agentlb.sim.workload import SimTask, lognormal_mean_one

if TYPE_CHECKING:
    import pandas as pd

AZURE_FILES = {"code": "AzureLLMInferenceTrace_code.csv", "conversation": "AzureLLMInferenceTrace_conv.csv"}


@dataclass(frozen=True)
class TokenCostModel:
    """Service size from token counts: size_s = a + b x context_tokens + c x generated_tokens.

    The linear prefill + decode form of the Splitwise paper (Patel et al., ISCA 2024) and the
    trace's README. Defaults describe a speed-1 agent that prefills ~5,000 tokens/s and decodes
    ~50 tokens/s with 50 ms overhead; per-agent speeds in the fleet scale it.
    """

    a_s: float = 0.05
    b_s_per_token: float = 0.0002
    c_s_per_token: float = 0.02

    def size_s(self, context_tokens: float, generated_tokens: float) -> float:
        return self.a_s + self.b_s_per_token * context_tokens + self.c_s_per_token * generated_tokens


def load_azure_trace(
    directory: str | Path,
    kinds: tuple[str, ...] = ("code", "conversation"),
    limit: int | None = None,
    cost: TokenCostModel | None = None,
) -> pd.DataFrame:
    """The Azure LLM inference trace 2023 as a history frame: task_type code/conversation,
    duration_s from the token cost model, attributes context_tokens and generated_tokens.

    Both files are merged in arrival order; `limit` keeps the first rows after merging.
    """
    import pandas as pd

    cost = cost or TokenCostModel()
    folder = Path(directory)
    frames = []
    for kind in kinds:
        if kind not in AZURE_FILES:
            raise SimulationError(f"unknown Azure trace kind {kind!r}; valid: {', '.join(AZURE_FILES)}")
        path = folder / AZURE_FILES[kind]
        if not path.is_file():
            raise SimulationError(f"Azure trace file not found: {path}")
        raw = pd.read_csv(path)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(raw.columns)
        if missing:
            raise SimulationError(f"{path}: missing columns {sorted(missing)}")
        stamps = pd.to_datetime(raw["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f", utc=True)
        epoch = (stamps - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
        context = raw["ContextTokens"].astype("int64")
        generated = raw["GeneratedTokens"].astype("int64")
        frames.append(
            pd.DataFrame(
                {
                    "arrival_time": epoch.astype("float64"),
                    "task_type": kind,
                    "duration_s": cost.size_s(context.astype("float64"), generated.astype("float64")),
                    "context_tokens": context,
                    "generated_tokens": generated,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True).sort_values("arrival_time", kind="stable")
    if limit is not None:
        frame = frame.head(limit)
    frame = frame.reset_index(drop=True)
    frame.insert(0, "task_id", [f"az{i:07d}" for i in range(len(frame))])
    return frame


def read_trace(path: str | Path, limit: int | None = None) -> pd.DataFrame:
    """A trace as a clean history frame: the Azure trace when `path` is its folder, else a
    history file read and validated by `agentlb.history` (bad rows are an error)."""
    source = Path(path)
    if source.is_dir():
        return load_azure_trace(source, limit=limit)
    from agentlb.history import read_history, validate_history

    frame = validate_history(read_history(source)).frame
    return frame.head(limit).reset_index(drop=True) if limit is not None else frame


def _value(raw: Any) -> AttributeValue:
    if raw is None:
        return None
    if isinstance(raw, float) and raw != raw:
        return None
    if isinstance(raw, (bool, int, float, str)):
        return raw
    item = getattr(raw, "item", None)
    if callable(item):
        value = item()
        if isinstance(value, (bool, int, float, str)):
            return value
    return str(raw)


def tasks_from_trace(
    frame: pd.DataFrame,
    time_scale: float = 1.0,
    seed: int = 0,
    noise_sigma: float = 0.3,
    limit: int | None = None,
) -> list[SimTask]:
    """Replay a history frame: arrivals (t - t0) / time_scale, size = duration_s.

    Rows marked `success = False` are left out: their duration is not the task's size.
    """
    if time_scale <= 0:
        raise SimulationError("--time-scale must be > 0")
    for column in ("arrival_time", "task_type", "duration_s"):
        if column not in frame.columns:
            raise HistoryValidationError(f"trace replay needs the column {column!r}")
    rows = frame if limit is None else frame.head(limit)
    if "success" in rows.columns:
        rows = rows[rows["success"].astype(bool)]
    if rows.empty:
        raise SimulationError("the trace has no completed tasks to replay")
    rows = rows.sort_values("arrival_time", kind="stable")
    attributes = attribute_columns(rows.columns)
    arrivals = rows["arrival_time"].astype("float64").tolist()
    start = arrivals[0]
    rng = random.Random(seed)
    ids = rows["task_id"].astype(str).tolist() if "task_id" in rows.columns else None
    if ids is not None and len(set(ids)) != len(ids):
        ids = None  # duplicated ids in the file: number the tasks instead
    types = rows["task_type"].astype(str).tolist()
    sizes = rows["duration_s"].astype("float64").tolist()
    # A true/false attribute some rows lack is pandas' nullable boolean: its missing value is NA.
    columns = {c: rows[c].astype(object).where(rows[c].notna(), None).tolist() for c in attributes}
    tasks = []
    for i in range(len(rows)):
        size = sizes[i]
        if not size > 0:
            raise HistoryValidationError(f"trace row {i + 1}: duration_s must be > 0, got {size}")
        tasks.append(
            SimTask(
                index=i,
                task_id=ids[i] if ids else f"tr{i:07d}",
                arrival_s=(arrivals[i] - start) / time_scale,
                task_type=types[i],
                size_s=size,
                noise=lognormal_mean_one(rng, noise_sigma),
                failure_draw=rng.random(),
                attributes={c: _value(columns[c][i]) for c in attributes},
            )
        )
    return tasks
