"""The promotion gate's live half: a challenger that passed the offline gate becomes champion
only once its shadow error on live tasks is no worse than the champion's on the same tasks.

With `AGENTLB_PROMOTION_MIN_LIVE_TASKS` = N > 0 a training run that beats an existing champion
offline registers its model as `challenger` and stops there (`defer_for_live_evidence`); the
serving replicas shadow-score it (`AGENTLB_SHADOW_MODEL_URI=models:/…@challenger`); the next
`agentlb retrain` (or `agentlb promote-challenger`) promotes it when the evidence holds.
"""

from __future__ import annotations

from typing import Any

from agentlb.errors import ModelLoadError
from agentlb.settings import MODEL_NAME, Settings
from agentlb.store import Store
from agentlb.store.shadow import ShadowEvidence, ShadowRecords
from agentlb.training.gate import CHALLENGER_ALIAS, CHAMPION_ALIAS


def defer_for_live_evidence(
    decision: dict[str, Any], settings: Settings, has_champion: bool
) -> dict[str, Any]:
    """An offline promotion over an existing champion waits for live evidence when the settings
    ask for it; a first model (no champion) is promoted at once."""
    needed = settings.promotion_min_live_tasks
    if not decision.get("promoted") or needed <= 0 or not has_champion:
        return decision
    return {
        **decision,
        "promoted": False,
        "awaiting_live_evidence": True,
        "reason": f"{decision['reason']}; registered as challenger, promoted once its shadow error "
        f"is no worse than the champion's on {needed} live tasks",
    }


def live_decision(evidence: ShadowEvidence, min_tasks: int, margin: float) -> dict[str, Any]:
    """Promote when the challenger's live MAE ≤ champion's × (1 + margin) on ≥ min_tasks tasks."""
    decision: dict[str, Any] = {
        **evidence.as_dict(),
        "min_live_tasks": min_tasks,
        "live_margin": margin,
    }
    if evidence.tasks < min_tasks or evidence.challenger_mae_s is None or evidence.champion_mae_s is None:
        decision["promoted"] = False
        decision["reason"] = f"live evidence on {evidence.tasks} of the {min_tasks} tasks required"
        return decision
    allowed = evidence.champion_mae_s * (1.0 + margin)
    better = evidence.challenger_mae_s <= allowed
    decision["promoted"] = better
    decision["reason"] = (
        f"live MAE {evidence.challenger_mae_s:.4f} s vs champion {evidence.champion_mae_s:.4f} s on "
        f"{evidence.tasks} tasks: " + ("no worse" if better else f"worse than the allowed {allowed:.4f} s")
    )
    return decision


def promote_challenger(
    settings: Settings, min_tasks: int | None = None, margin: float | None = None
) -> dict[str, Any]:
    """Check the registered challenger's live evidence and move the champion alias to it when it
    passes (exporting its bundle as the embedded default's champion). Nothing to do when there is
    no challenger, or it already is the champion."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from agentlb.predictor.model import ModelPredictor
    from agentlb.training.bundle import export_bundle

    needed = settings.promotion_min_live_tasks if min_tasks is None else min_tasks
    allowed = settings.promotion_live_margin if margin is None else margin
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        challenger = client.get_model_version_by_alias(MODEL_NAME, CHALLENGER_ALIAS)
    except MlflowException:
        return {"promoted": False, "reason": "no registered challenger"}
    try:
        champion_version: str | None = str(
            client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version
        )
    except MlflowException:
        champion_version = None
    label = f"v{challenger.version}"
    if champion_version == str(challenger.version):
        return {
            "promoted": False,
            "model_version": label,
            "reason": f"challenger {label} already is the champion",
        }
    store = Store.open(settings.db_url)
    try:
        evidence = ShadowRecords(store).evidence(label)
    finally:
        store.close()
    decision = live_decision(evidence, needed, allowed)
    decision["champion_version"] = None if champion_version is None else f"v{champion_version}"
    if decision["promoted"]:
        try:
            model = ModelPredictor.from_uri(
                f"models:/{MODEL_NAME}/{challenger.version}", settings.tracking_uri
            )
        except ModelLoadError as exc:
            return {**decision, "promoted": False, "reason": f"challenger {label} does not load: {exc}"}
        client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, challenger.version)
        export_bundle(
            settings.models_dir,
            model.p50_booster,
            model.p90_booster,
            model.spec,
            model.version,
            model.metadata,
            model.p90_log_offset,
        )
    return decision
