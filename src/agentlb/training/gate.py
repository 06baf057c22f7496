"""The promotion gate: may the challenger replace the champion?

An outage must not look like "no champion": the champion is looked up in the registry first,
and only a champion that is truly absent (no `champion` alias) or of an older feature version
is replaced without a comparison. A champion that exists but cannot be loaded (tracking
server down, unreadable artifact) blocks the promotion, with the reason. The p90 coverage
band applies in every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agentlb.errors import ModelLoadError
from agentlb.features import FEATURE_VERSION
from agentlb.predictor.model import ModelPredictor
from agentlb.settings import MODEL_NAME
from agentlb.training.candidates import holdout_metrics
from agentlb.training.config import GateConfig

if TYPE_CHECKING:
    import pandas as pd

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

ChampionState = Literal["absent", "older_features", "loaded", "unloadable"]


@dataclass(frozen=True)
class ChampionCheck:
    """What the gate knows about the current champion."""

    state: ChampionState
    version: str | None = None
    metrics: dict[str, float] | None = None
    note: str = ""

    @classmethod
    def absent(cls) -> ChampionCheck:
        return cls("absent")

    @classmethod
    def loaded(cls, metrics: dict[str, float], version: str | None = None) -> ChampionCheck:
        return cls("loaded", version, metrics)


def _older(champion_features: str | None) -> bool | None:
    """True when the champion's feature version is older than the code's, None when it is not
    comparable (then the versions are only known to differ)."""
    if champion_features is None:
        return None
    try:
        return int(champion_features) < int(FEATURE_VERSION)
    except ValueError:
        return None


def check_champion(tracking_uri: str, holdout: pd.DataFrame, alpha: float) -> ChampionCheck:
    """The champion's state, and its metrics on this holdout when it loads."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        aliases = dict(client.get_registered_model(MODEL_NAME).aliases)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return ChampionCheck.absent()
        return ChampionCheck("unloadable", note=f"the registry does not answer: {_first_line(exc)}")
    except OSError as exc:
        return ChampionCheck("unloadable", note=f"the registry does not answer: {_first_line(exc)}")
    if CHAMPION_ALIAS not in aliases:
        return ChampionCheck.absent()
    version = str(aliases[CHAMPION_ALIAS])
    label = f"v{version}"
    try:
        tags = dict(client.get_model_version(MODEL_NAME, version).tags)
    except (MlflowException, OSError) as exc:
        return ChampionCheck("unloadable", label, note=f"cannot read champion {label}: {_first_line(exc)}")
    features = tags.get("feature_version")
    if features is not None and features != FEATURE_VERSION:
        if _older(features):
            return ChampionCheck(
                "older_features",
                label,
                note=f"champion {label} has feature version {features}, older than {FEATURE_VERSION}",
            )
        return ChampionCheck(
            "unloadable",
            label,
            note=f"champion {label} has feature version {features}, not older than this code's "
            f"{FEATURE_VERSION}",
        )
    try:
        champion = ModelPredictor.from_uri(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}", tracking_uri)
    except ModelLoadError as exc:
        return ChampionCheck(
            "unloadable", label, note=f"champion {label} cannot be loaded: {_first_line(exc)}"
        )
    prediction = champion.predict_frame(holdout)
    actual = holdout["duration_s"].to_numpy(dtype=np.float64)
    return ChampionCheck.loaded(holdout_metrics(actual, prediction.p50_s, prediction.p90_s, alpha), label)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def gate_decision(challenger: dict[str, float], champion: ChampionCheck, gate: GateConfig) -> dict[str, Any]:
    """Promote when the p90 coverage is within the band and either there is no champion, its
    feature version is older, or the challenger's MAE beats it by `min_mae_improvement` on the
    same holdout. A champion that exists but cannot be loaded is never replaced blindly."""
    coverage = challenger["p90_coverage"]
    metrics = champion.metrics
    decision: dict[str, Any] = {
        "challenger_mae": challenger["mae"],
        "challenger_p90_coverage": coverage,
        "champion_state": champion.state,
        "champion_mae": metrics["mae"] if metrics else None,
        "champion_p90_coverage": metrics["p90_coverage"] if metrics else None,
        "min_mae_improvement": gate.min_mae_improvement,
        "coverage_band": [gate.coverage_low, gate.coverage_high],
    }
    band = f"[{gate.coverage_low}, {gate.coverage_high}]"
    if not gate.coverage_low <= coverage <= gate.coverage_high:
        decision["promoted"] = False
        decision["reason"] = f"p90 coverage {coverage:.3f} outside {band}"
        return decision
    if champion.state == "unloadable":
        decision["promoted"] = False
        decision["reason"] = (
            f"a champion exists but cannot be compared ({champion.note}); not promoted without a "
            "comparison — restore the tracking server or the champion's artifacts and retrain"
        )
        return decision
    if champion.state in ("absent", "older_features"):
        why = "no champion yet" if champion.state == "absent" else champion.note
        decision["promoted"] = True
        decision["reason"] = f"{why}; p90 coverage {coverage:.3f} is within {band}"
        return decision
    assert metrics is not None
    needed = metrics["mae"] * (1.0 - gate.min_mae_improvement)
    improvement = 1.0 - challenger["mae"] / metrics["mae"] if metrics["mae"] > 0 else 0.0
    decision["mae_improvement"] = improvement
    if challenger["mae"] > needed:
        decision["promoted"] = False
        decision["reason"] = (
            f"MAE {challenger['mae']:.4f} vs champion {metrics['mae']:.4f} ({100 * improvement:+.1f}%) "
            f"does not beat it by {100 * gate.min_mae_improvement:.0f}%"
        )
    else:
        decision["promoted"] = True
        decision["reason"] = (
            f"MAE {challenger['mae']:.4f} beats champion {metrics['mae']:.4f} by {100 * improvement:.1f}% "
            f"and p90 coverage {coverage:.3f} is within {band}"
        )
    return decision
