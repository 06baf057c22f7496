"""Training configuration: candidates' hyper-parameters, holdout, seed and the promotion gate.

Defaults here equal `training/configs/default.yaml`; `load_config` reads such a file and
refuses unknown keys, so a typo in a config fails loudly instead of being ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from agentlb.errors import SettingsError


@dataclass(frozen=True)
class GateConfig:
    """Promote the challenger only if its holdout MAE is `min_mae_improvement` better than the
    champion's on the same holdout and its p90 coverage is within [coverage_low, coverage_high]."""

    min_mae_improvement: float = 0.02
    coverage_low: float = 0.85
    coverage_high: float = 0.95


@dataclass(frozen=True)
class GroupMeanConfig:
    min_samples: int = 5


@dataclass(frozen=True)
class HGBConfig:
    enabled: bool = True
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    num_threads: int = 1  # OpenMP threads; more than 1 spins badly on a busy 2-core machine


@dataclass(frozen=True)
class LightGBMConfig:
    objective: str = "regression"  # on log(duration): L2 on logs estimates the median of a lognormal
    num_boost_round: int = 150  # 300 rounds at 0.05 gave <1% lower MAE and twice the predict time
    # 0.07 and no feature sampling: lower holdout MAE than 0.1 / 0.9 and than LightGBM's own
    # defaults on the tuning histories (docs/benchmarks.md, training accuracy)
    learning_rate: float = 0.07
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    feature_fraction: float = 1.0
    lambda_l2: float = 1.0
    cat_smooth: float = 10.0
    max_bin: int = 255
    bagging_fraction: float = 1.0  # < 1 with bagging_freq > 0: each round sees a (seeded) sample of rows
    bagging_freq: int = 0
    num_threads: int = 1  # 2 is faster on an idle machine; OpenMP spins badly when the cores are busy
    # split-conformal p90: fit the quantile model on the first (1 - frac) of the training rows and
    # shift it so that `p90_alpha` of the most recent `frac` rows fall below it (0 disables)
    p90_calibration_frac: float = 0.15

    def params(self, seed: int, **extra: Any) -> dict[str, Any]:
        """LightGBM parameters; deterministic (NOTES-ML: deterministic, force_row_wise, seed)."""
        params: dict[str, Any] = {
            "objective": self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "cat_smooth": self.cat_smooth,
            "max_bin": self.max_bin,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "num_threads": self.num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "seed": seed,
            "verbosity": -1,
        }
        params.update(extra)
        return params


@dataclass(frozen=True)
class TrainingConfig:
    holdout_frac: float = 0.2
    seed: int = 0
    experiment: str = "agentlb-completion-time"
    min_train_rows: int = 100
    min_holdout_rows: int = 20
    p90_alpha: float = 0.9
    gate: GateConfig = field(default_factory=GateConfig)
    group_mean: GroupMeanConfig = field(default_factory=GroupMeanConfig)
    sklearn_hgb: HGBConfig = field(default_factory=HGBConfig)
    lightgbm: LightGBMConfig = field(default_factory=LightGBMConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_frac < 1.0:
            raise SettingsError(f"holdout_frac must be between 0 and 1, got {self.holdout_frac}")
        if not 0.0 <= self.lightgbm.p90_calibration_frac < 0.5:
            raise SettingsError(
                f"lightgbm.p90_calibration_frac must be in [0, 0.5), got {self.lightgbm.p90_calibration_frac}"
            )
        if not 0.0 < self.p90_alpha < 1.0:
            raise SettingsError(f"p90_alpha must be between 0 and 1, got {self.p90_alpha}")
        gate = self.gate
        if not 0.0 <= gate.coverage_low <= gate.coverage_high <= 1.0:
            raise SettingsError("gate coverage bounds must satisfy 0 <= coverage_low <= coverage_high <= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> TrainingConfig:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update({k: v for k, v in changes.items() if v is not None})
        return TrainingConfig(**data)


_SECTIONS: dict[str, type[Any]] = {
    "gate": GateConfig,
    "group_mean": GroupMeanConfig,
    "sklearn_hgb": HGBConfig,
    "lightgbm": LightGBMConfig,
}


def _build(kind: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return kind(**data)
    except TypeError as exc:
        raise SettingsError(f"{where}: {exc}") from exc


def config_from_dict(data: dict[str, Any], where: str = "training config") -> TrainingConfig:
    top = {k: v for k, v in data.items() if k not in _SECTIONS}
    sections = {k: _build(kind, data[k], f"{where}: {k}") for k, kind in _SECTIONS.items() if k in data}
    built: TrainingConfig = _build(TrainingConfig, {**top, **sections}, where)
    return built


def load_config(path: str | Path | None) -> TrainingConfig:
    """A YAML training config (see training/configs/default.yaml); the defaults when `path` is None."""
    if path is None:
        return TrainingConfig()
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read training config {source}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"training config {source}: expected a mapping at the top level")
    return config_from_dict(data, where=str(source))
