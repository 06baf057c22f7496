"""The shipped configs load, and the default one says what the code does."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlb.errors import SettingsError
from agentlb.training.config import TrainingConfig, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_default_yaml_is_the_code_default() -> None:
    assert load_config(CONFIGS / "default.yaml") == TrainingConfig()


def test_every_shipped_config_loads() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        assert isinstance(load_config(path), TrainingConfig), path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"holdout_frac": 1.5}, "holdout_frac"),
        ({"gate": {"coverage_low": 0.96, "coverage_high": 0.9}}, "coverage"),
        ({"lightgbm": {"p90_calibration_frac": 0.7}}, "p90_calibration_frac"),
        ({"lightgbm": {"leaves": 3}}, "unknown keys"),
        ({"candidates": []}, "unknown keys"),
        ({"gate": 3}, "expected a mapping"),
    ],
)
def test_bad_config_is_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        config_from_dict(data)
