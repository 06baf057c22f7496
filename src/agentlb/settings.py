"""Settings from the environment (prefix `AGENTLB_`), built by `load_settings()`, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentlb.errors import SettingsError
from agentlb.regimes import RegimeConfig

# The product spec's hybrid weights.
SPEC_HYBRID_WEIGHTS: dict[str, float] = {
    "weighted_round_robin": 0.25,
    "least_connection": 0.25,
    "predictive": 0.30,
    "resource_aware": 0.20,
}
HYBRID_COMPONENTS = tuple(SPEC_HYBRID_WEIGHTS)
# The default: the best of `agentlb tune-weights --predictor model --seeds 3 --tasks 2000
# --step 0.25` over homogeneous, heterogeneous, specialists, degradation and surveillance, on
# tuning seeds the benchmark never uses (docs/benchmarks.md, "Hybrid weights"). The spec's
# weights ranked 9th of 36: the resource-aware and least-connection terms pull work towards
# free but slow agents.
DEFAULT_HYBRID_WEIGHTS: dict[str, float] = {
    "weighted_round_robin": 0.25,
    "least_connection": 0.0,
    "predictive": 0.75,
    "resource_aware": 0.0,
}
MODEL_NAME = "agentlb-completion-time"


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Validate hybrid weights (known names, finite, non-negative, not all zero); sum to 1."""
    unknown = sorted(set(weights) - set(HYBRID_COMPONENTS))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; hybrid combines {', '.join(HYBRID_COMPONENTS)}")
    for name, value in weights.items():
        if (
            not isinstance(value, (int, float))
            or value != value
            or value
            in (
                float("inf"),
                float("-inf"),
            )
        ):
            raise ValueError(f"weight for {name} must be a finite number")
        if value < 0:
            raise ValueError(f"weight for {name} must be >= 0, got {value}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("weights must not all be zero")
    return {name: float(weights.get(name, 0.0)) / total for name in HYBRID_COMPONENTS}


# The live bandit's default candidates: the shipped default and the vectors `agentlb
# tune-weights` ranked closest to it (docs/benchmarks.md).
WEIGHT_BANDIT_CANDIDATES: tuple[dict[str, float], ...] = (
    {"weighted_round_robin": 0.25, "predictive": 0.75},
    {"predictive": 1.0},
    {"least_connection": 0.25, "predictive": 0.75},
    {"predictive": 0.75, "resource_aware": 0.25},
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTLB_", extra="ignore")

    home: Path = Field(default_factory=Path.cwd)
    database_url: str | None = None
    mlflow_tracking_uri: str | None = None
    model_uri: str | None = None
    api_key: SecretStr | None = None
    admin_key: SecretStr | None = None

    default_strategy: str = "hybrid"
    hybrid_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_HYBRID_WEIGHTS))

    ejection_consecutive_failures: int = Field(default=5, ge=1)
    ejection_base_time_s: float = Field(default=30.0, gt=0)
    max_ejection_percent: float = Field(default=50.0, ge=0, le=100)
    panic_threshold_percent: float = Field(default=50.0, ge=0, le=100)
    panic_mode_enabled: bool = True
    slow_start_window_s: float = Field(default=30.0, ge=0)
    in_flight_expiry_s: float = Field(default=3600.0, gt=0)
    ewma_alpha: float = Field(default=0.2, gt=0, le=1)
    peak_ewma_decay_s: float = Field(default=10.0, gt=0)
    regime_detection: bool = Field(
        default=RegimeConfig.enabled,
        description="Detect agents running slower than the model predicts (Page-Hinkley on each "
        "agent's log residuals) and scale the model's predictions for them while it lasts.",
    )
    regime_memory_s: float = Field(
        default=RegimeConfig.memory_s,
        gt=0,
        description="How long a detected slow-down's evidence speaks: the factor fades towards 1 "
        "with this time constant from the start of the latest work that showed it.",
    )
    model_shortlist: int = Field(
        default=16,
        ge=0,
        description="Candidates a trained model scores per selection in a large fleet (those with "
        "the earliest heuristic completion); 0 scores every candidate.",
    )

    model_poll_interval_s: float = Field(default=30.0, ge=0)
    shadow_model_uri: str | None = Field(
        default=None,
        description="A challenger model (e.g. models:/agentlb-completion-time@challenger) that predicts "
        "every live selection without deciding any; its live error is compared with the serving "
        "model's on the same tasks. Polled like the champion. Unset: no shadow scoring.",
    )
    promotion_min_live_tasks: int = Field(
        default=0,
        ge=0,
        description="With N > 0, `agentlb retrain` promotes a challenger only after its shadow error is "
        "no worse than the champion's on at least N live tasks (0: the offline gate alone decides).",
    )
    promotion_live_margin: float = Field(
        default=0.0,
        ge=0,
        description="How much worse (as a share of the champion's live MAE) the challenger may be and "
        "still pass the live gate.",
    )
    model_compile: bool = Field(
        default=True,
        description="Compile a loaded model's trees to native code (lleaves) in a background thread "
        "and serve from it once checked against LightGBM; LightGBM answers until then.",
    )
    drift_window_s: float = Field(default=86_400.0, gt=0)
    drift_min_samples: int = Field(default=200, ge=1)
    drift_mae_tolerance: float = Field(default=0.25, ge=0)
    weight_bandit: bool = Field(
        default=False,
        description="Tune the hybrid weights on live traffic: a Thompson-sampling experiment over "
        "`weight_bandit_candidates` that applies the winner once it is the fastest with probability "
        ">= 0.95.",
    )
    weight_bandit_candidates: list[dict[str, float]] = Field(
        default_factory=lambda: [dict(w) for w in WEIGHT_BANDIT_CANDIDATES],
        description="The weight vectors the live bandit chooses between (pick them offline with "
        "`agentlb tune-weights`).",
    )
    experiment_upkeep_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often running experiments' stop conditions are checked and their per-arm "
        "metrics refreshed (and experiments started at other replicas picked up); 0 turns it off.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    seed: int | None = None

    redis_url: str | None = Field(
        default=None,
        description="Share the live fleet state between replicas through this Redis "
        "(redis://host:port/db); unset: one process keeps it in memory (the embedded default).",
    )
    redis_prefix: str = Field(
        default="agentlb",
        min_length=1,
        description="Prefix of every Redis key of this fleet; replicas of one fleet share it.",
    )
    redis_checkpoint_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="How often one replica checkpoints the shared state and trims the event stream.",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Train on this Dask cluster (`agentlb train --dask` overrides it): a scheduler "
        "address (tcp://host:8786) or local[:N], a LocalCluster of N worker processes started for "
        "the run; unset: training runs in process.",
    )

    @field_validator("default_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from agentlb.domain import LoadBalancingStrategy

        valid = {s.value for s in LoadBalancingStrategy}
        if value not in valid:
            raise ValueError(f"unknown strategy {value!r}; valid: {', '.join(sorted(valid))}")
        return value

    @field_validator("hybrid_weights")
    @classmethod
    def _valid_weights(cls, value: dict[str, float]) -> dict[str, float]:
        return normalise_weights(value)

    @field_validator("weight_bandit_candidates")
    @classmethod
    def _valid_candidates(cls, value: list[dict[str, float]]) -> list[dict[str, float]]:
        if not 2 <= len(value) <= 8:
            raise ValueError("give 2 to 8 weight vectors")
        return [normalise_weights(v) for v in value]

    @field_validator("log_level")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.var_dir / 'agentlb.db'}"
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"sqlite:///{self.var_dir / 'mlflow.db'}"
        if self.model_uri is None:
            self.model_uri = str(self.models_dir / "champion")
        return self

    @property
    def var_dir(self) -> Path:
        return self.home / "var"

    @property
    def compiled_dir(self) -> Path:
        """Cache of compiled models (object code keyed by model, CPU and compiler)."""
        return self.var_dir / "compiled"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.var_dir / "mlartifacts"

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def tracking_uri(self) -> str:
        assert self.mlflow_tracking_uri is not None
        return self.mlflow_tracking_uri


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus overrides; a bad value raises `SettingsError`
    naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "AGENTLB_" + "_".join(str(p) for p in error["loc"][:1]).upper()
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
