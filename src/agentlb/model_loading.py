"""The serving model at start and reload: the champion when it loads, else the heuristic with
the reason kept visible."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

from agentlb.errors import ModelLoadError
from agentlb.observability import log_event
from agentlb.predictor.base import Predictor, PredictorRef
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.settings import Settings

log = logging.getLogger("agentlb.service")

# How long to wait for an MLflow tracking server before serving with the heuristic.
TRACKING_PROBE_TIMEOUT_S = 3.0


def load_predictor(settings: Settings) -> PredictorRef:
    """The champion model when it loads, else the heuristic with the reason kept visible.

    The service must start without a model: a fresh clone has none yet.
    """
    try:
        predictor = load_model(settings)
    except ModelLoadError as exc:
        log_event(log, "model_unavailable", logging.WARNING, reason=str(exc))
        return PredictorRef(HeuristicPredictor(), fallback_reason=str(exc))
    return PredictorRef(predictor)


def load_model(settings: Settings) -> Predictor:
    if not settings.model_uri:
        raise ModelLoadError("no model URI configured (AGENTLB_MODEL_URI)")
    from agentlb.predictor.model import ModelPredictor

    if settings.model_uri.startswith("models:/"):
        _check_tracking_server(settings.tracking_uri)
    predictor: Predictor = ModelPredictor.from_uri(settings.model_uri, settings.tracking_uri)
    return predictor


def _check_tracking_server(tracking_uri: str) -> None:
    """ModelLoadError at once when an HTTP tracking server does not answer.

    MLflow's client retries a refused connection with exponential backoff for about four
    minutes (measured: 247 s), which would hold up service start and model reloads; the
    heuristic fallback should take over in seconds (docs/reliability.md)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    probe = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(probe, timeout=TRACKING_PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered; MLflow itself reports what is wrong
    except (urllib.error.URLError, OSError) as exc:
        raise ModelLoadError(f"MLflow tracking server {tracking_uri} does not answer: {exc}") from exc


def alias_of(uri: str) -> str:
    """`models:/name@champion` -> `champion`; a bundle path -> `bundle`."""
    if uri.startswith("models:/") and "@" in uri:
        return uri.rsplit("@", 1)[1]
    return "bundle"
