"""Shadow scoring: a challenger model predicts every live selection without deciding any.

The selection path only appends the dispatch to a bounded queue (a deque append); a
background thread predicts the queued dispatches in batches with the challenger, from the
very features the serving model saw (the dispatch row), and stores each prediction next to
the serving model's own for the same task. Once outcomes arrive, the store compares the two
on the same tasks (`ShadowRecords.evidence`), which is the live evidence the promotion gate
can require (training/live_gate.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from agentlb.domain import SelectionResult
from agentlb.errors import AgentLBError, ModelLoadError
from agentlb.group_commit import PendingWrite
from agentlb.observability import log_event
from agentlb.store import Store
from agentlb.store.shadow import ShadowEvidence, ShadowRecords

log = logging.getLogger("agentlb.shadow")

QUEUE_MAX = 50_000
ENCODE_CHUNK = 128  # rows encoded between two chances for the selections to take the GIL
BATCH_INTERVAL_S = 1.0
Writer = Callable[[Callable[[], int]], PendingWrite[int]]
_Pending = tuple[str, str, dict[str, Any], str | None, float, float]


class ShadowScorer:
    """The challenger at `uri` (polled like the champion), its queue and its writer thread."""

    def __init__(
        self,
        store: Store,
        uri: str,
        tracking_uri: str,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        writer: Writer | None = None,
    ) -> None:
        """`writer` runs the store writes (the service passes its group-commit writer's
        `submit_call`, so shadow rows never contend with dispatch writes); None writes here."""
        self.records = ShadowRecords(store)
        self.writer = writer
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.clock = clock
        self.model: Any = None  # a ModelPredictor once loaded
        self.reason: str | None = "not loaded yet"
        self._pending: deque[_Pending] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.scored = Counter(
            "agentlb_shadow_predictions_total",
            "Live selections the challenger model predicted (shadow scoring)",
            ["model_version"],
            registry=registry,
        )
        self.dropped = Counter(
            "agentlb_shadow_dropped_total",
            "Selections not shadow-scored: the queue was full or the challenger failed",
            registry=registry,
        )
        self._thread = threading.Thread(target=self._run, name="agentlb-shadow", daemon=True)
        self._thread.start()

    # --- the request path -------------------------------------------------------------
    def submit(self, result: SelectionResult) -> None:
        """Queue a selection for the challenger (nothing when none is loaded, or when the
        serving model made no prediction to compare with)."""
        model = self.model
        prediction = result.predicted_completion
        if model is None or prediction is None or result.model_version == model.version:
            return
        if len(self._pending) >= QUEUE_MAX:
            self.dropped.inc()
            return
        row = dict(result.dispatch_features)
        row["agent_id"] = result.selected_agent.id
        self._pending.append(
            (
                result.task_id,
                result.selected_agent.id,
                row,
                result.model_version,
                prediction.service_p50_s,
                prediction.service_p90_s,
            )
        )

    # --- background ---------------------------------------------------------------------
    def poll(self) -> bool:
        """Load the challenger when it first resolves or its version moved; True on a swap."""
        from agentlb.predictor.model import ModelPredictor, read_bundle_document

        current = self.model
        try:
            if self.uri.startswith("models:/"):
                name, _, alias = self.uri[len("models:/") :].partition("@")
                if alias:
                    number = ModelPredictor.registry_version(self.uri, self.tracking_uri)
                    if current is not None and current.source.startswith(f"models:/{name}/{number} "):
                        return False
            else:
                document = read_bundle_document(Path(self.uri).expanduser())
                if current is not None and current.version == str(document.get("model_version")):
                    return False
            model = ModelPredictor.from_uri(self.uri, self.tracking_uri)
        except ModelLoadError as exc:
            if self.reason != str(exc):
                log_event(log, "shadow_model_unavailable", logging.WARNING, uri=self.uri, reason=str(exc))
            self.reason = str(exc)
            return False
        self.model, self.reason = model, None
        log_event(log, "shadow_model_loaded", uri=self.uri, version=model.version)
        return True

    def flush(self, wait: bool = False) -> int:
        """Predict what is queued now and store it (through the writer when there is one);
        the number of predictions made, or with `wait` the number stored once written."""
        model = self.model
        batch: list[_Pending] = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch or model is None:
            return 0
        try:
            predicted = model.predict_matrix_in_background(
                _encode(model.spec, [row for _, _, row, _, _, _ in batch])
            )
        except Exception as exc:  # a challenger that cannot score must not stop serving
            self.dropped.inc(len(batch))
            log_event(log, "shadow_predict_failed", logging.WARNING, version=model.version, reason=str(exc))
            return 0
        now = self.clock()
        rows = [
            {
                "task_id": task_id,
                "model_version": model.version,
                "predicted_p50_s": float(predicted.p50_s[i]),
                "predicted_p90_s": float(predicted.p90_s[i]),
                "champion_version": champion_version,
                "champion_p50_s": float(p50),
                "champion_p90_s": float(p90),
                "predicted_at": now,
            }
            for i, (task_id, _, _, champion_version, p50, p90) in enumerate(batch)
        ]
        version = model.version

        def write() -> int:
            try:
                written = self.records.record(rows)
            except AgentLBError as exc:
                self.dropped.inc(len(rows))
                log_event(log, "shadow_write_failed", logging.WARNING, reason=str(exc))
                return 0
            self.scored.labels(version).inc(written)
            return written

        if self.writer is None:
            return write()
        pending = self.writer(write)
        return pending.wait() if wait else len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(BATCH_INTERVAL_S)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()

    # --- evidence -----------------------------------------------------------------------
    def evidence(self) -> ShadowEvidence | None:
        model = self.model
        return None if model is None else self.records.evidence(model.version)

    def describe(self) -> dict[str, Any]:
        model = self.model
        info: dict[str, Any] = {
            "uri": self.uri,
            "version": None if model is None else model.version,
            "unavailable_reason": self.reason,
            "queued": len(self._pending),
        }
        try:
            evidence = self.evidence()
        except AgentLBError as exc:
            info["evidence"] = {"error": str(exc)}
        else:
            info["evidence"] = None if evidence is None else evidence.as_dict()
        return info


def _encode(spec: Any, rows: list[dict[str, Any]]) -> Any:
    """The model's input matrix for dispatch rows, as training encodes a history frame
    (`FeatureSpec.encode_frame`), a chunk at a time with a yield of the GIL between chunks."""
    import numpy as np
    import pandas as pd

    parts = []
    for start in range(0, len(rows), ENCODE_CHUNK):
        parts.append(spec.encode_frame(pd.DataFrame(rows[start : start + ENCODE_CHUNK])))
        time.sleep(0)
    return np.ascontiguousarray(np.vstack(parts))
