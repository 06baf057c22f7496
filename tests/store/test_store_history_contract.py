"""The history-file contract (agentlb.history): what is accepted, what is rejected and how."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentlb.errors import HistoryValidationError
from agentlb.features import AGENT_STATE_FEATURES, FeatureSpec
from agentlb.history import NUMERIC_RESERVED, TIME_COLUMNS, read_history, validate_history
from agentlb.store.history_reader import FLOAT_COLUMNS

GOOD_CSV = """task_id,arrival_time,agent_id,success,task_type,duration_s,complexity,tokens,agent_in_flight
007,2024-01-01T00:00:10Z,a1,true,video,3.5,high,100,1
008,1704067200,a2,False,text,0,low,200,
009,2024-01-01 00:00:05,a1,1,text,1.25,,300,2
"""


def write(tmp_path: Path, text: str, name: str = "history.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_is_cleaned_and_sorted_by_arrival(tmp_path: Path) -> None:
    clean = validate_history(read_history(write(tmp_path, GOOD_CSV))).frame
    assert clean["task_id"].tolist() == ["008", "009", "007"]  # ids stay text, rows sorted by arrival
    assert clean["arrival_time"].tolist() == [1704067200.0, 1704067205.0, 1704067210.0]
    assert clean["success"].tolist() == [False, True, True]
    assert clean["success"].dtype == bool
    assert clean["tokens"].tolist() == [200, 300, 100]
    assert clean["complexity"][0] == "low" and pd.isna(clean["complexity"][1])
    assert math.isnan(clean["agent_in_flight"][0])


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    from_csv = validate_history(read_history(write(tmp_path, GOOD_CSV))).frame
    parquet = tmp_path / "history.parquet"
    read_history(write(tmp_path, GOOD_CSV)).to_parquet(parquet)
    from_parquet = validate_history(read_history(parquet)).frame
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)


def test_success_column_is_optional(tmp_path: Path) -> None:
    clean = validate_history(pd.DataFrame({"task_type": ["a"], "duration_s": [2.0]})).frame
    assert clean["success"].tolist() == [True]


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("", "empty.csv", "empty"),
        ("task_type,duration_s\n", "header.csv", "no data rows"),
        ("task_type,duration_s\na,1\n", "history.json", ".csv or .parquet"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, text: str, name: str, message: str) -> None:
    with pytest.raises(HistoryValidationError, match=message):
        read_history(write(tmp_path, text, name))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HistoryValidationError, match="not found"):
        read_history(tmp_path / "nope.csv")


@pytest.mark.parametrize("missing", ["task_type", "duration_s"])
def test_missing_required_column_is_named(missing: str) -> None:
    frame = pd.DataFrame({"task_type": ["a"], "duration_s": [1.0]}).drop(columns=[missing])
    with pytest.raises(HistoryValidationError, match=f"missing required column.*{missing}"):
        validate_history(frame)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"duration_s": "nan"}, "row 2: duration_s: missing or NaN"),
        ({"duration_s": "-1"}, r"row 2: duration_s: must be > 0"),
        ({"duration_s": "inf"}, "row 2: duration_s: must be finite"),
        ({"duration_s": "abc"}, "row 2: duration_s: not a number"),
        ({"duration_s": "0"}, "row 2: duration_s: must be > 0 for a successful task"),
        ({"success": "maybe"}, "row 2: success: not a boolean"),
        ({"arrival_time": "yesterday"}, "row 2: arrival_time: not epoch seconds or ISO 8601"),
        ({"task_type": ""}, "row 2: task_type: missing"),
        ({"task_id": "t1"}, "row 2: task_id: 't1' repeats row 1"),
        ({"agent_in_flight": "many"}, "row 2: agent_in_flight: not a number"),
    ],
)
def test_bad_row_is_named_with_row_and_field(row: dict[str, str], message: str) -> None:
    good = {"task_id": "t1", "arrival_time": "10", "success": "true", "task_type": "a", "duration_s": "1.5",
            "agent_in_flight": "1"}
    bad = {**good, "task_id": "t2", **row}
    frame = pd.DataFrame([good, bad, {**good, "task_id": "t3"}], dtype=object)
    with pytest.raises(HistoryValidationError, match=message):
        validate_history(frame)
    skipped = validate_history(frame, skip_bad_rows=True)
    assert [r.row for r in skipped.rejected] == [2]
    assert skipped.frame["task_id"].tolist() == ["t1", "t3"]
    assert skipped.row_numbers == [1, 3]


def test_a_failed_task_may_take_zero_seconds() -> None:
    frame = pd.DataFrame({"task_type": ["a"], "duration_s": [0.0], "success": [False]})
    assert validate_history(frame).frame["duration_s"].tolist() == [0.0]


def test_every_row_bad_is_an_error_even_when_skipping() -> None:
    frame = pd.DataFrame({"task_type": ["a", "b"], "duration_s": [-1.0, float("nan")]})
    with pytest.raises(HistoryValidationError, match="no valid rows"):
        validate_history(frame, skip_bad_rows=True)


def test_unknown_agent_state_column_is_refused() -> None:
    frame = pd.DataFrame({"task_type": ["a"], "duration_s": [1.0], "agent_mood": [3.0]})
    with pytest.raises(HistoryValidationError, match=r"unknown agent state column.*agent_mood"):
        validate_history(frame)


def test_attribute_of_unsupported_type_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"task_type": ["a"], "duration_s": [1.0], "tags": [["x", "y"]]})
    path = tmp_path / "nested.parquet"
    frame.to_parquet(path)
    with pytest.raises(HistoryValidationError, match="attribute column 'tags'"):
        validate_history(read_history(path))


TRUE_FALSE_CSV = """task_id,arrival_time,task_type,duration_s,cached
t1,1,text,1.0,true
t2,2,text,2.0,
t3,3,text,3.0,False
t4,4,text,4.0,
"""


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_true_false_attribute_some_rows_lack_is_a_bool_feature(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, TRUE_FALSE_CSV)
    if suffix == ".parquet":
        raw = read_history(path)
        assert raw["cached"].dtype == object  # True, False and missing: what pandas reads
        path = tmp_path / "history.parquet"
        raw.to_parquet(path, index=False)

    clean = validate_history(read_history(path)).frame

    assert clean["cached"].dtype == "boolean"
    assert clean["cached"].tolist() == [True, pd.NA, False, pd.NA]
    spec = FeatureSpec.from_frame(clean)
    assert spec.numeric_attributes == ["cached"] and spec.categorical_attributes == []
    encoded = spec.encode_frame(clean)[:, spec.feature_names.index("cached")]
    np.testing.assert_array_equal(encoded, [1.0, np.nan, 0.0, np.nan])


@pytest.mark.parametrize(
    ("values", "row"),
    [([True, 3, None], "row 2 holds 3"), ([None, False, "yes"], "row 3 holds 'yes'"), ([1.5, True], "row 1")],
)
def test_true_false_mixed_with_other_values_is_refused(values: list[object], row: str) -> None:
    frame = pd.DataFrame(
        {
            "task_type": ["a"] * len(values),
            "duration_s": [1.0] * len(values),
            "cached": pd.Series(values, dtype=object),
        }
    )
    with pytest.raises(HistoryValidationError, match=f"attribute column 'cached' mixes true/false.*{row}"):
        validate_history(frame)


def test_a_parquet_true_false_column_without_values_stays_true_false(tmp_path: Path) -> None:
    """A file of a dataset whose day had no value in a true/false attribute, written by Arrow."""
    path = tmp_path / "day.parquet"
    table = pa.table(
        {
            "task_type": ["a", "b"],
            "duration_s": [1.0, 2.0],
            "cached": pa.array([None, None], type=pa.bool_()),
            "unknown": pa.nulls(2),
        }
    )
    pq.write_table(table, path)

    clean = validate_history(read_history(path)).frame

    assert clean["cached"].dtype == "boolean" and clean["cached"].isna().all()
    assert clean["unknown"].isna().all()


def test_the_float_columns_are_those_validation_makes_float() -> None:
    clean = validate_history(pd.DataFrame({"task_type": ["a"], **{c: ["2"] for c in FLOAT_COLUMNS}})).frame
    assert set(FLOAT_COLUMNS) == {*TIME_COLUMNS, "duration_s", *NUMERIC_RESERVED, *AGENT_STATE_FEATURES}
    assert all(clean[column].dtype == "float64" for column in FLOAT_COLUMNS)


@pytest.mark.parametrize("column", ["agent_ewma_s", "predicted_p50_s", "tokens"])
def test_infinite_numbers_in_float_columns_are_named(column: str) -> None:
    frame = pd.DataFrame({"task_type": ["a", "b"], "duration_s": [1.0, 2.0], column: [1.5, float("inf")]})
    with pytest.raises(HistoryValidationError, match=f"row 2: {column}: must be finite"):
        validate_history(frame)
