"""The history-file contract of DESIGN.md: reading and validating task history.

One module decides what a valid history row is, so `history import`, `train --history` and
trace replay accept and reject exactly the same rows, with the same row numbers and reasons.
Row numbers are 1-based data rows (row 1 is the first row under a CSV header).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agentlb.errors import HistoryValidationError
from agentlb.features import AGENT_STATE_FEATURES, RESERVED_COLUMNS, attribute_columns

REQUIRED_COLUMNS: tuple[str, ...] = ("task_type", "duration_s")
TEXT_COLUMNS: tuple[str, ...] = ("task_id", "agent_id", "task_type", "strategy", "model_version", "error")
TIME_COLUMNS: tuple[str, ...] = ("arrival_time", "finished_at")
NUMERIC_RESERVED: tuple[str, ...] = ("predicted_p50_s", "predicted_p90_s", "confidence")
BOOL_COLUMNS: tuple[str, ...] = ("success", "fallback_used")
MAX_REASONS_IN_MESSAGE = 5

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class RejectedRow:
    """A history row that breaks the contract: `row` is the 1-based data row number."""

    row: int
    reason: str


class NoValidRowsError(HistoryValidationError):
    """Every row of a frame was rejected (with `skip_bad_rows`); `rejected` lists them."""

    def __init__(self, message: str, rejected: list[RejectedRow]) -> None:
        super().__init__(message)
        self.rejected = rejected


@dataclass
class ValidatedHistory:
    """A clean history frame plus the rows that were skipped (only with `skip_bad_rows`)."""

    frame: pd.DataFrame
    rejected: list[RejectedRow] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)  # source row of each clean row, in order


def read_history(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet history file (by suffix), without validating its rows."""
    path = Path(path)
    if not path.exists():
        raise HistoryValidationError(f"history file not found: {path}")
    if not path.is_file():
        raise HistoryValidationError(f"history path is not a file: {path}")
    if path.stat().st_size == 0:
        raise HistoryValidationError(f"history file is empty: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Identifiers stay text: "007" must not become the integer 7.
            frame = pd.read_csv(path, dtype={c: "string" for c in ("task_id", "agent_id", "task_type")})
        elif suffix in (".parquet", ".pq"):
            frame = _bools_stay_bools(pd.read_parquet(path), path)
        else:
            raise HistoryValidationError(
                f"history file must end in .csv or .parquet, got {path.name!r}"
            )
    except HistoryValidationError:
        raise
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HistoryValidationError(f"cannot read history file {path}: {exc}") from exc
    except ImportError as exc:  # pyarrow missing or broken
        raise HistoryValidationError(f"cannot read history file {path}: {exc}") from exc
    if len(frame.columns) == 0 or len(frame) == 0:
        raise HistoryValidationError(f"history file has no data rows: {path}")
    return frame


def _bools_stay_bools(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A Parquet true/false attribute with no value in a file reads as objects (all None), which
    say nothing of its type: it is read as the nullable boolean its Arrow type is, the dtype
    `validate_history` gives one with some values missing."""
    empty: list[tuple[int, str]] = []
    for i, (name, dtype) in enumerate(frame.dtypes.items()):
        attribute = isinstance(name, str) and dtype == np.dtype(object) and bool(attribute_columns([name]))
        if attribute and bool(frame.iloc[:, i].isna().all()):
            empty.append((i, str(name)))
    if not empty:
        return frame
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    for i, name in empty:
        if schema.get_field_index(name) >= 0 and pa.types.is_boolean(schema.field(name).type):
            frame.isetitem(i, frame.iloc[:, i].astype("boolean"))
    return frame


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _to_text(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _to_float(value: Any, column: str) -> float:
    """A finite-or-NaN float; text that is not a number raises ValueError naming the column."""
    if _is_missing(value):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{column}: not a number ({value!r})") from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column}: not a number ({value!r})") from None


def _to_bool(value: Any, column: str) -> bool | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{column}: not a boolean ({value!r}); use true/false")


def _to_epoch(value: Any, column: str) -> float:
    """Epoch seconds from a number or an ISO 8601 string (naive times are UTC)."""
    if _is_missing(value):
        raise ValueError(f"{column}: missing")
    if isinstance(value, pd.Timestamp | datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return float(stamp.timestamp())
    if isinstance(value, bool):
        raise ValueError(f"{column}: not a time ({value!r})")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"{column}: not epoch seconds or ISO 8601 ({value!r})"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            number = parsed.timestamp()
    if not math.isfinite(number):
        raise ValueError(f"{column}: not a finite time ({value!r})")
    return number


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise HistoryValidationError(
            f"history is missing required column(s): {', '.join(missing)} "
            f"(columns present: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    non_text = [c for c in frame.columns if not isinstance(c, str)]
    if non_text:
        raise HistoryValidationError(f"history column names must be text, got {non_text!r}")
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if duplicated:
        raise HistoryValidationError(f"history has duplicated column(s): {', '.join(duplicated)}")
    unknown_state = [
        c
        for c in frame.columns
        if c.startswith("agent_") and c != "agent_id" and c not in AGENT_STATE_FEATURES
    ]
    if unknown_state:
        raise HistoryValidationError(
            f"unknown agent state column(s) {', '.join(unknown_state)}; agent_* columns must be one of "
            f"{', '.join(AGENT_STATE_FEATURES)}"
        )
    for column in attribute_columns(frame.columns):
        series = frame[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            continue
        if pd.api.types.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype):
            if isinstance(series.dtype, pd.CategoricalDtype) or series.dtype != object:
                continue
            bad = series.map(lambda v: not (_is_missing(v) or isinstance(v, (str, int, float, bool))))
            if not bad.any():
                continue
            first = int(bad.to_numpy().nonzero()[0][0])
            raise HistoryValidationError(
                f"attribute column {column!r} has an unsupported value type "
                f"{type(series.iloc[first]).__name__} at row {first + 1}; attributes are numbers or text"
            )
        if series.dtype == object and _object_attribute_ok(series, column):
            continue
        raise HistoryValidationError(
            f"attribute column {column!r} has unsupported type {series.dtype}; attributes are numbers or text"
        )


def validate_history(frame: pd.DataFrame, *, skip_bad_rows: bool = False) -> ValidatedHistory:
    """Check every row against the contract and return a clean frame.

    Clean means: text identifiers as str, `arrival_time`/`finished_at` as float epoch seconds,
    `success` as bool (every row a success when the column is absent), `agent_*` and predictions
    as float (NaN = unknown), a true/false attribute some rows lack as pandas' nullable boolean
    (NA = unknown), sorted by `arrival_time` when present. Durations must be finite;
    > 0 for a successful task, >= 0 for a failed one. A bad row raises HistoryValidationError
    naming its row and field, or is skipped and listed in `rejected` with `skip_bad_rows`.
    """
    if len(frame) == 0:
        raise HistoryValidationError("history has no data rows")
    _check_columns(frame)
    columns = list(frame.columns)
    records = frame.to_dict(orient="records")
    clean_rows: list[dict[str, Any]] = []
    clean_numbers: list[int] = []
    rejected: list[RejectedRow] = []
    seen_ids: dict[str, int] = {}
    state_columns = [c for c in columns if c in AGENT_STATE_FEATURES]
    plan, infinite_rows = _plan(frame)
    for index, raw in enumerate(records):
        row_number = index + 1
        try:
            if index in infinite_rows:
                raise ValueError(infinite_rows[index])
            row = _clean_row(raw, plan)
            task_id = row.get("task_id")
            if task_id is not None:
                if task_id in seen_ids:
                    raise ValueError(f"task_id: {task_id!r} repeats row {seen_ids[task_id]}")
                seen_ids[task_id] = row_number
        except ValueError as exc:
            if not skip_bad_rows:
                raise HistoryValidationError(f"row {row_number}: {exc}") from None
            rejected.append(RejectedRow(row_number, str(exc)))
            continue
        clean_rows.append(row)
        clean_numbers.append(row_number)
    if not clean_rows:
        raise NoValidRowsError(
            f"history has no valid rows ({len(rejected)} rejected; first: "
            f"row {rejected[0].row}: {rejected[0].reason})",
            rejected,
        )
    out_columns = columns if "success" in columns else [*columns, "success"]
    clean = pd.DataFrame(clean_rows, columns=out_columns)
    clean["__row__"] = clean_numbers
    clean["success"] = clean["success"].astype(bool)
    for column in [*state_columns, *[c for c in NUMERIC_RESERVED if c in columns]]:
        clean[column] = clean[column].astype("float64")
    clean["duration_s"] = clean["duration_s"].astype("float64")
    for column in TIME_COLUMNS:
        if column in columns:
            clean[column] = clean[column].astype("float64")
    for column in attribute_columns(columns):
        dtype = _attribute_dtype(frame[column])
        if dtype is not None:
            clean[column] = clean[column].astype(dtype)
    if "arrival_time" in columns:
        clean = clean.sort_values("arrival_time", kind="stable")
    numbers = [int(n) for n in clean.pop("__row__")]
    return ValidatedHistory(clean.reset_index(drop=True), rejected, numbers)


def _object_attribute_ok(series: pd.Series, column: str) -> bool:
    """Whether an object-typed attribute column is accepted: true/false values only, some missing
    (as pandas reads a true/false column with gaps from CSV or Parquet), or no value at all (a
    Parquet file's column of nulls, such as a day on which no task had the attribute). One mixing
    true/false with other values is refused, naming the row of its first other value."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("boolean", "empty"):
        return True
    flags = series.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    if not flags.any():
        return False
    other = np.flatnonzero(~flags & series.notna().to_numpy(dtype=bool))
    first = int(other[0])
    raise HistoryValidationError(
        f"attribute column {column!r} mixes true/false with other values: row {first + 1} holds "
        f"{series.iloc[first]!r}; a true/false attribute holds true, false or nothing"
    )


def _attribute_dtype(series: pd.Series) -> Any:
    """The dtype an attribute column keeps in the clean frame (None: the one its cleaned values
    give). Numeric and bool columns keep theirs (NaN-free ones only, for ints/bools); a true/false
    column with missing values (bool, nullable boolean or objects) becomes pandas' nullable
    boolean, and one of objects without, bool: features encode either as the bool column it is
    (missing = NaN), not as a category."""
    if pd.api.types.is_float_dtype(series):
        return series.dtype
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        if not bool(series.isna().any()):
            return series.dtype
        return pd.BooleanDtype() if pd.api.types.is_bool_dtype(series) else None
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "boolean":
        return pd.BooleanDtype() if bool(series.isna().any()) else np.dtype(bool)
    return None


@dataclass(frozen=True)
class _Plan:
    """Which per-row conversions a frame needs, decided once from its columns and dtypes."""

    text_columns: tuple[str, ...]
    has_success: bool
    has_fallback: bool
    time_columns: tuple[str, ...]
    float_columns: tuple[str, ...]  # numeric contract columns not already stored as floats
    loose_attributes: tuple[str, ...]  # object-typed attributes that may hide an inf


def _plan(frame: pd.DataFrame) -> tuple[_Plan, dict[int, str]]:
    """The conversion plan, and the rows whose float columns hold an infinity (found at once)."""
    columns = list(frame.columns)
    numeric = [c for c in columns if c in AGENT_STATE_FEATURES or c in NUMERIC_RESERVED]
    attributes = attribute_columns(columns)
    fast = [c for c in numeric if pd.api.types.is_float_dtype(frame[c])]
    fast += [c for c in attributes if pd.api.types.is_float_dtype(frame[c])]
    bad_rows: dict[int, str] = {}
    for column in fast:
        values = frame[column].to_numpy(dtype="float64", na_value=math.nan)
        for index in np.flatnonzero(np.isinf(values)):
            bad_rows.setdefault(int(index), f"{column}: must be finite (got {values[index]})")
    plan = _Plan(
        text_columns=tuple(c for c in TEXT_COLUMNS if c in columns and c != "task_type"),
        has_success="success" in columns,
        has_fallback="fallback_used" in columns,
        time_columns=tuple(c for c in TIME_COLUMNS if c in columns),
        float_columns=tuple(c for c in numeric if c not in fast),
        loose_attributes=tuple(c for c in attributes if frame[c].dtype == object),
    )
    return plan, bad_rows


def _clean_row(raw: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    row: dict[str, Any] = dict(raw)
    task_type = _to_text(raw.get("task_type"))
    if task_type is None:
        raise ValueError("task_type: missing")
    row["task_type"] = task_type
    for column in plan.text_columns:
        row[column] = _to_text(raw.get(column))
    success = True
    if plan.has_success:
        parsed = _to_bool(raw.get("success"), "success")
        if parsed is None:
            raise ValueError("success: missing")
        success = parsed
    row["success"] = success
    if plan.has_fallback:
        row["fallback_used"] = _to_bool(raw.get("fallback_used"), "fallback_used")
    duration = _to_float(raw.get("duration_s"), "duration_s")
    if math.isnan(duration):
        raise ValueError("duration_s: missing or NaN")
    if math.isinf(duration):
        raise ValueError(f"duration_s: must be finite (got {duration})")
    if success and duration <= 0:
        raise ValueError(f"duration_s: must be > 0 for a successful task (got {duration})")
    if duration < 0:
        raise ValueError(f"duration_s: must be >= 0 (got {duration})")
    row["duration_s"] = duration
    for column in plan.time_columns:
        row[column] = _to_epoch(raw.get(column), column)
    for column in plan.float_columns:
        value = _to_float(raw.get(column), column)
        if math.isinf(value):
            raise ValueError(f"{column}: must be finite (got {value})")
        row[column] = value
    for column in plan.loose_attributes:
        attribute = raw.get(column)
        if isinstance(attribute, float) and math.isinf(attribute):
            raise ValueError(f"{column}: must be finite (got {attribute})")
    return row


def summarise_rejections(rejected: list[RejectedRow]) -> str:
    """The first few rejections as one line, for error messages and CLI output."""
    shown = "; ".join(f"row {r.row}: {r.reason}" for r in rejected[:MAX_REASONS_IN_MESSAGE])
    more = len(rejected) - MAX_REASONS_IN_MESSAGE
    return shown + (f"; and {more} more" if more > 0 else "")


__all__ = [
    "BOOL_COLUMNS",
    "NUMERIC_RESERVED",
    "REQUIRED_COLUMNS",
    "RESERVED_COLUMNS",
    "TEXT_COLUMNS",
    "TIME_COLUMNS",
    "NoValidRowsError",
    "RejectedRow",
    "ValidatedHistory",
    "read_history",
    "summarise_rejections",
    "validate_history",
]
