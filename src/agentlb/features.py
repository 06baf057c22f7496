"""THE feature definition, shared by serving and training.

Serving builds rows from live `AgentState`s (`agent_state_features`, `FeatureSpec.encode_candidates`);
what it computed for the selected agent is logged with the dispatch as `agent_*` columns;
training reads those logged values back (`FeatureSpec.encode_frame`). Both paths encode
through the same functions, so a row means the same thing in both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agentlb.domain import (
    COL_CPU,
    COL_EWMA_S,
    COL_MEMORY,
    COL_PEAK_STAMP,
    COL_SUCCESS_RATE,
    COL_TREND_SLOPE,
    AgentState,
    AttributeValue,
    CandidateView,
    FleetSnapshot,
    FleetStatic,
    TaskRequest,
    candidate_view,
)

if TYPE_CHECKING:
    import pandas as pd

FEATURE_VERSION = "2"
NAN = float("nan")

# Agent state at dispatch, in this order. Missing knowledge is NaN (LightGBM's "missing").
# `agent_since_completion_s` is how old the agent's EWMAs are: the time since its last
# successful completion (NaN before the first). An agent that slowed down and has since
# recovered keeps its high EWMAs until it completes work again; their age lets the model tell
# stale evidence from fresh (version 2).
AGENT_STATE_FEATURES: tuple[str, ...] = (
    "agent_in_flight",
    "agent_max_concurrency",
    "agent_load_score",
    "agent_ewma_type_s",
    "agent_ewma_s",
    "agent_type_samples",
    "agent_success_rate",
    "agent_cpu_usage",
    "agent_memory_usage",
    "agent_trend_slope",
    "agent_fleet_ewma_type_s",
    "agent_specialization",
    "agent_since_completion_s",
)

# History-file columns that are not task attributes (DESIGN.md contract plus dispatch
# metadata), in the order `Store.history_frame` writes them.
RESERVED_COLUMN_ORDER: tuple[str, ...] = (
    "task_id",
    "arrival_time",
    "agent_id",
    "success",
    "task_type",
    "duration_s",
    "finished_at",
    "strategy",
    "model_version",
    "predicted_p50_s",
    "predicted_p90_s",
    "confidence",
    "fallback_used",
    "error",
)
RESERVED_COLUMNS: frozenset[str] = frozenset(RESERVED_COLUMN_ORDER)
CATEGORICAL_BASE = ("task_type", "agent_id")


def _opt(value: float | None) -> float:
    return NAN if value is None else float(value)


def agent_state_features(state: AgentState, task_type: str, snapshot: FleetSnapshot) -> dict[str, float]:
    """The agent's state as the predictor sees it at dispatch time."""
    own_type = state.ewma_duration_by_type.get(task_type)
    fleet_type = snapshot.fleet_ewma_by_type.get(task_type)
    specialization = fleet_type / own_type if own_type and fleet_type else NAN
    return {
        "agent_in_flight": float(state.active_tasks),
        "agent_max_concurrency": float(state.agent.max_concurrency),
        "agent_load_score": state.load_score,
        "agent_ewma_type_s": _opt(own_type),
        "agent_ewma_s": _opt(state.ewma_duration_s),
        "agent_type_samples": float(state.samples_by_type.get(task_type, 0)),
        "agent_success_rate": state.success_rate,
        "agent_cpu_usage": state.cpu_usage,
        "agent_memory_usage": state.memory_usage,
        "agent_trend_slope": state.trend_slope,
        "agent_fleet_ewma_type_s": _opt(fleet_type),
        "agent_specialization": specialization,
        "agent_since_completion_s": (
            NAN if state.ewma_duration_s is None else max(snapshot.now - state.peak_ewma_stamp, 0.0)
        ),
    }


def attribute_columns(columns: Iterable[str]) -> list[str]:
    """Task-attribute columns of a history frame: everything neither reserved nor `agent_*`."""
    return [c for c in columns if c not in RESERVED_COLUMNS and not c.startswith("agent_")]


def _numeric(value: Any) -> float:
    if value is None or isinstance(value, str):
        try:
            return float(value) if value is not None and value.strip() else NAN
        except ValueError:
            return NAN
    try:
        result = float(value)
    except (TypeError, ValueError):
        return NAN
    return result if math.isfinite(result) else NAN


def _category_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


@dataclass
class FeatureSpec:
    """Which columns a model uses, their order, and the category vocabularies it learned.

    Saved inside a model bundle; serving refuses a bundle whose `version` differs.
    """

    numeric_attributes: list[str] = field(default_factory=list)
    categorical_attributes: list[str] = field(default_factory=list)
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    version: str = FEATURE_VERSION

    @property
    def categorical_columns(self) -> list[str]:
        return [*CATEGORICAL_BASE, *self.categorical_attributes]

    @property
    def feature_names(self) -> list[str]:
        return [
            *CATEGORICAL_BASE,
            *AGENT_STATE_FEATURES,
            *self.numeric_attributes,
            *self.categorical_attributes,
        ]

    @property
    def categorical_indices(self) -> list[int]:
        names = self.feature_names
        return [names.index(c) for c in self.categorical_columns]

    def _codes(self) -> dict[str, dict[str, int]]:
        cache: dict[str, dict[str, int]] | None = getattr(self, "_code_cache", None)
        if cache is None:
            cache = {c: {v: i for i, v in enumerate(vs)} for c, vs in self.vocabularies.items()}
            self._code_cache = cache
        return cache

    def encode_category(self, column: str, value: Any) -> float:
        key = _category_key(value)
        if key is None:
            return NAN
        code = self._codes().get(column, {}).get(key)
        return NAN if code is None else float(code)

    # --- building a spec from a history frame (training) ----------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame, max_categories: int = 200) -> FeatureSpec:
        numeric, categorical = cls.attribute_kinds(frame)
        counts = {
            column: frame[column].dropna().astype(str).value_counts()
            for column in [*CATEGORICAL_BASE, *categorical]
            if column in frame.columns
        }
        return cls.from_counts(numeric, categorical, counts, max_categories)

    @staticmethod
    def attribute_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
        """The task attributes of a history frame (or of its empty schema) by kind: numeric and
        boolean columns are numeric features (true 1, false 0; a nullable boolean's missing value
        NaN, as a task without the attribute is served), every other one is categorical."""
        import pandas as pd

        numeric: list[str] = []
        categorical: list[str] = []
        for column in attribute_columns(frame.columns):
            series = frame[column]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                numeric.append(column)
            else:
                categorical.append(column)
        return numeric, categorical

    @classmethod
    def from_counts(
        cls,
        numeric: list[str],
        categorical: list[str],
        counts: Mapping[str, pd.Series],
        max_categories: int = 200,
    ) -> FeatureSpec:
        """The spec from each categorical column's value counts (text value -> rows), however they
        were counted (one frame, or partitions on a cluster): the `max_categories` most frequent
        values (ties by value), sorted; a column without counts has an empty vocabulary."""
        vocabularies: dict[str, list[str]] = {}
        for column in [*CATEGORICAL_BASE, *categorical]:
            found = counts.get(column)
            if found is None or len(found) == 0:
                vocabularies[column] = []
                continue
            values = [str(v) for v in found.index]
            if len(values) > max_categories:
                ranked = sorted(zip(values, found.to_numpy(), strict=True), key=lambda kv: (-kv[1], kv[0]))
                values = [value for value, _ in ranked[:max_categories]]
            vocabularies[column] = sorted(values)
        return cls(list(numeric), list(categorical), vocabularies)

    # --- training path ----------------------------------------------------------------
    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """A float64 matrix in `feature_names` order from a history frame."""
        n = len(frame)
        matrix = np.full((n, len(self.feature_names)), np.nan, dtype=np.float64)
        for j, name in enumerate(self.feature_names):
            if name not in frame.columns:
                continue
            values = frame[name].tolist()
            if name in self.categorical_columns:
                matrix[:, j] = [self.encode_category(name, v) for v in values]
            else:
                matrix[:, j] = [_numeric(v) for v in values]
        return matrix

    # --- serving path -----------------------------------------------------------------
    def encode_candidates(
        self,
        task: TaskRequest,
        candidates: Sequence[AgentState],
        snapshot: FleetSnapshot,
        state_rows: Sequence[Mapping[str, float]] | None = None,
    ) -> np.ndarray:
        """One row per candidate agent for this task, in `feature_names` order.

        Built column by column from the snapshot's arrays: the same values `agent_state_features`
        gives row by row (tests/core pins the two together), without a Python row per agent.
        """
        if state_rows is not None or not candidates:
            return self._encode_rows(task, candidates, snapshot, state_rows)
        view = candidate_view(task.task_type, candidates, snapshot)
        layout = self._layout()
        matrix = np.empty((view.n, layout.width), dtype=np.float64)
        matrix[:, 0] = self.encode_category("task_type", task.task_type)
        matrix[:, 1] = self._agent_codes(view)
        for j, column in enumerate(self._state_columns(view, task.task_type, snapshot), start=2):
            matrix[:, j] = column
        attrs = task.requirements
        j = 2 + len(AGENT_STATE_FEATURES)
        for name in self.numeric_attributes:
            matrix[:, j] = _numeric(attrs.get(name))
            j += 1
        for name in self.categorical_attributes:
            matrix[:, j] = self.encode_category(name, attrs.get(name))
            j += 1
        return matrix

    @staticmethod
    def _state_columns(
        view: CandidateView, task_type: str, snapshot: FleetSnapshot
    ) -> tuple[np.ndarray | float, ...]:
        """`agent_state_features` as columns, in AGENT_STATE_FEATURES order."""
        own = view.own_ewma
        ewma = view.row(COL_EWMA_S)
        fleet_type = snapshot.fleet_ewma_by_type.get(task_type)
        if fleet_type:  # fleet / own where both are truthy (own: known and non-zero), else NaN
            specialization = np.full(view.n, NAN)
            np.divide(fleet_type, own, out=specialization, where=(own != 0.0) & ~np.isnan(own))
        else:
            specialization = np.full(view.n, NAN)
        return (
            view.active,
            view.max_concurrency,
            view.load_score(),
            own,
            ewma,
            view.samples,
            view.row(COL_SUCCESS_RATE),
            view.row(COL_CPU),
            view.row(COL_MEMORY),
            view.row(COL_TREND_SLOPE),
            _opt(fleet_type),
            specialization,
            np.where(np.isnan(ewma), NAN, np.maximum(snapshot.now - view.row(COL_PEAK_STAMP), 0.0)),
        )

    def _agent_codes(self, view: CandidateView) -> np.ndarray:
        """Vocabulary codes of the candidates' agent ids (cached per fleet definition)."""
        static = view.columns.static
        cached: tuple[FleetStatic, np.ndarray] | None = getattr(self, "_agent_code_cache", None)
        if cached is None or cached[0] is not static:
            codes = self._codes().get("agent_id", {})
            every = np.array([float(codes.get(a, NAN)) for a in static.ids], dtype=np.float64)
            cached = (static, every)
            self._agent_code_cache = cached
        every = cached[1]
        return every if view.positions is None else every[view.positions]

    def _layout(self) -> _Layout:
        cached: _Layout | None = getattr(self, "_layout_cache", None)
        if cached is None or cached.key != (len(self.numeric_attributes), len(self.categorical_attributes)):
            cached = _Layout(
                (len(self.numeric_attributes), len(self.categorical_attributes)), len(self.feature_names)
            )
            self._layout_cache = cached
        return cached

    def _encode_rows(
        self,
        task: TaskRequest,
        candidates: Sequence[AgentState],
        snapshot: FleetSnapshot,
        state_rows: Sequence[Mapping[str, float]] | None = None,
    ) -> np.ndarray:
        """Row-by-row encoding (given state rows, or no candidates)."""
        task_part = [self.encode_category("task_type", task.task_type)]
        attrs = task.requirements
        numeric_part = [_numeric(attrs.get(c)) for c in self.numeric_attributes]
        categorical_part = [self.encode_category(c, attrs.get(c)) for c in self.categorical_attributes]
        rows = []
        for i, state in enumerate(candidates):
            features = (
                state_rows[i]
                if state_rows is not None
                else agent_state_features(state, task.task_type, snapshot)
            )
            rows.append(
                [
                    *task_part,
                    self.encode_category("agent_id", state.agent.id),
                    *(features[name] for name in AGENT_STATE_FEATURES),
                    *numeric_part,
                    *categorical_part,
                ]
            )
        return np.asarray(rows, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "numeric_attributes": self.numeric_attributes,
            "categorical_attributes": self.categorical_attributes,
            "vocabularies": self.vocabularies,
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric_attributes=list(data["numeric_attributes"]),
            categorical_attributes=list(data["categorical_attributes"]),
            vocabularies={k: list(v) for k, v in data["vocabularies"].items()},
            version=str(data["version"]),
        )


@dataclass(frozen=True)
class _Layout:
    key: tuple[int, int]
    width: int


def dispatch_row(task: TaskRequest, state_features: Mapping[str, float]) -> dict[str, AttributeValue]:
    """The row logged with a dispatch: task type, attributes and the agent's state features."""
    row: dict[str, AttributeValue] = {"task_type": task.task_type}
    row.update({k: v for k, v in task.requirements.items()})
    row.update({k: (None if math.isnan(v) else v) for k, v in state_features.items()})
    return row


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One uint64 content hash per row of a history frame."""
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
    return np.asarray(hashed.to_numpy(), dtype=np.uint64)


def hash_row_blocks(blocks: Iterable[np.ndarray]) -> str:
    """The lineage hash of row hashes given block by block in row order: the same for a frame
    hashed whole and for its partitions hashed one by one."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()[:16]


def frame_hash(frame: pd.DataFrame) -> str:
    """A stable content hash of a history frame (data lineage)."""
    return hash_row_blocks([row_hashes(frame)])
