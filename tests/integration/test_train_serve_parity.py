"""Train/serve parity: the features serving computes at dispatch equal, column by column, the
features training rebuilds from the exported history."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlb.features import FeatureSpec
from parity_support import assert_serving_equals_training, record_dispatches


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_serving_features_equal_training_features(tmp_path: Path, suffix: str) -> None:
    frame, served = record_dispatches(tmp_path, suffix)
    assert len(frame) == 120

    spec = FeatureSpec.from_frame(frame)
    assert set(spec.numeric_attributes) == {"input_tokens"}
    assert set(spec.categorical_attributes) == {"complexity", "priority"}
    assert_serving_equals_training(spec, frame, served)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_true_false_attribute_some_tasks_lack_is_one_feature_in_both(tmp_path: Path, suffix: str) -> None:
    frame, served = record_dispatches(tmp_path, suffix, cached_on_some=True)
    assert frame["cached"].dtype == "boolean" and frame["cached"].count() == 80

    spec = FeatureSpec.from_frame(frame)
    assert set(spec.numeric_attributes) == {"input_tokens", "cached"}
    assert_serving_equals_training(spec, frame, served)
