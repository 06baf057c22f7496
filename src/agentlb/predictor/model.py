"""The trained completion-time model, served from a bundle with the native LightGBM Booster.

The request path is `FeatureSpec.encode_candidates` (a float64 numpy matrix, one row per
candidate) and one LightGBM predict per quantile model, called through the C API
(`BoosterPredict`): no pandas, no MLflow (NOTES-ML: pyfunc and pandas cost 1-2 ms per call,
the Booster on numpy ~0.04 ms).
"""

from __future__ import annotations

import ctypes
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np

from agentlb.domain import AgentState, FleetSnapshot, TaskRequest
from agentlb.errors import ModelLoadError
from agentlb.features import FEATURE_VERSION, FeatureSpec
from agentlb.predictor.base import ServicePrediction

if TYPE_CHECKING:
    import pandas as pd

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
P50_FILE = "p50.lgb"
P90_FILE = "p90.lgb"
TARGET_TRANSFORM = "log"  # boosters predict log(duration_s); serving takes exp
BUNDLE_ARTIFACT_PATH = "bundle"  # where a registered version's run keeps its bundle
MIN_SERVICE_S = 1e-3
MAX_LOG_S = 30.0  # exp(30) s is far beyond any task; clipping keeps exp finite


def read_bundle_document(path: Path) -> dict[str, Any]:
    """`bundle.json` of a bundle directory, or ModelLoadError saying what is wrong."""
    if not path.is_dir():
        raise ModelLoadError(f"model bundle not found: {path} (run `agentlb train` to create one)")
    for name in (BUNDLE_FILE, P50_FILE, P90_FILE):
        if not (path / name).is_file():
            raise ModelLoadError(f"model bundle {path} is incomplete: {name} is missing")
    try:
        document: Any = json.loads((path / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model bundle {path}: {BUNDLE_FILE} is unreadable: {exc}") from exc
    if not isinstance(document, dict) or "feature_spec" not in document:
        raise ModelLoadError(f"model bundle {path}: {BUNDLE_FILE} has no feature_spec")
    return document


# LightGBM C API constants (c_api.h), passed by value
_FLOAT64 = ctypes.c_int(1)  # C_API_DTYPE_FLOAT64
_ROW_MAJOR = ctypes.c_int(1)
_PREDICT_NORMAL = ctypes.c_int(0)  # C_API_PREDICT_NORMAL
_START_ITERATION = ctypes.c_int(0)


def _library_holding_gil() -> Any:
    """LightGBM's shared library with calls that keep the GIL (ctypes.PyDLL): a one-thread
    predict of a candidate batch takes microseconds, and releasing the GIL for it hands the
    interpreter to another thread (the dispatch writer) that the request then waits behind.
    LightGBM's own handle when the library's path is unknown."""
    library = vars(lgb.basic).get("_LIB")
    path = getattr(library, "_name", None)
    if not path:
        return library
    try:
        return ctypes.PyDLL(path)
    except OSError:
        return library


class BoosterPredict:
    """`booster.predict(matrix, num_threads=1)` for a float64 row-major matrix, through
    LightGBM's C API (`LGBM_BoosterPredictForMat`) as `Booster.predict` itself calls it, minus
    its Python wrapper (a predictor object, parameter copies and checks per call): ~11 us
    less per call, as much as the C predict of a 16-row batch costs. Same numbers (a test
    holds them equal); any other input, or a LightGBM without this binding, takes
    `Booster.predict`."""

    PARAMETERS = b"num_threads=1"  # a candidate batch is small: OpenMP threads cost more than they save

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.n_features = booster.num_feature()
        self._n_features = ctypes.c_int32(self.n_features)
        self._parameters = ctypes.c_char_p(self.PARAMETERS)
        self._predict_for_mat: Any = getattr(_library_holding_gil(), "LGBM_BoosterPredictForMat", None)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        call = self._predict_for_mat
        if (
            call is None
            or matrix.dtype != np.float64
            or matrix.ndim != 2
            or matrix.shape[1] != self.n_features
            or not matrix.flags.c_contiguous
        ):
            return np.asarray(self.booster.predict(matrix, num_threads=1), dtype=np.float64)
        rows = matrix.shape[0]
        out = np.empty(rows, dtype=np.float64)
        written = ctypes.c_int64(0)
        status = call(
            self.booster._handle,
            ctypes.c_void_p(matrix.ctypes.data),
            _FLOAT64,
            ctypes.c_int32(rows),
            self._n_features,
            _ROW_MAJOR,
            _PREDICT_NORMAL,
            _START_ITERATION,
            ctypes.c_int(self.booster.best_iteration),  # as Booster.predict: <= 0 means every tree
            self._parameters,
            ctypes.byref(written),
            ctypes.c_void_p(out.ctypes.data),  # double*: the function has no declared argtypes
        )
        if status != 0 or written.value != rows:
            return np.asarray(self.booster.predict(matrix, num_threads=1), dtype=np.float64)
        return out


Forest = Callable[[np.ndarray], np.ndarray]  # raw predictions of one booster, per matrix row


def _load_booster(path: Path) -> lgb.Booster:
    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ModelLoadError(f"corrupt LightGBM model file {path}: {exc}") from exc


class ModelPredictor:
    """p50 and p90 service time of a task on each candidate agent, from two LightGBM boosters."""

    # The balancer scales its predictions by each agent's slow-down regime (agentlb.regimes).
    regime_corrected = True

    def __init__(
        self,
        p50: lgb.Booster,
        p90: lgb.Booster,
        spec: FeatureSpec,
        *,
        version: str,
        source: str,
        metadata: dict[str, Any] | None = None,
        target_transform: str = TARGET_TRANSFORM,
        p90_log_offset: float = 0.0,
    ) -> None:
        if spec.version != FEATURE_VERSION:
            raise ModelLoadError(
                f"model feature version {spec.version!r} differs from this code's {FEATURE_VERSION!r}; "
                "retrain with `agentlb train`"
            )
        if target_transform != TARGET_TRANSFORM:
            raise ModelLoadError(
                f"unknown target transform {target_transform!r} (expected {TARGET_TRANSFORM!r})"
            )
        for name, booster in (("p50", p50), ("p90", p90)):
            if booster.feature_name() != spec.feature_names:
                raise ModelLoadError(
                    f"{name} model features {booster.feature_name()} do not match the bundle's feature spec"
                )
        self.p50_booster = p50
        self.p90_booster = p90
        # (p50, p90) evaluators, replaced together by `compile`; a prediction reads the pair once
        self._forests: tuple[Forest, Forest] = (BoosterPredict(p50), BoosterPredict(p90))
        self.evaluator = "lightgbm"
        self.p90_log_offset = float(p90_log_offset)  # split-conformal shift of the p90, in log seconds
        self.spec = spec
        self._version = version
        self._source = source
        self.metadata = dict(metadata or {})
        self.loaded_at = time.time()
        self._warm()

    # --- loading --------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | Path, source: str | None = None) -> ModelPredictor:
        """Load a bundle directory; ModelLoadError if it is missing, corrupt or of another feature version."""
        directory = Path(path).expanduser()
        document = read_bundle_document(directory)
        feature_version = str(document.get("feature_version"))
        if feature_version != FEATURE_VERSION:
            raise ModelLoadError(
                f"model bundle {directory} has feature version {feature_version!r}, this code needs "
                f"{FEATURE_VERSION!r}; retrain with `agentlb train`"
            )
        try:
            spec = FeatureSpec.from_dict(document["feature_spec"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"model bundle {directory}: bad feature_spec ({exc})") from exc
        return cls(
            _load_booster(directory / P50_FILE),
            _load_booster(directory / P90_FILE),
            spec,
            version=str(document.get("model_version", "unversioned")),
            source=source or str(directory.resolve()),
            metadata=dict(document.get("metadata") or {}),
            target_transform=str(document.get("target_transform", TARGET_TRANSFORM)),
            p90_log_offset=float(document.get("p90_log_offset") or 0.0),
        )

    @classmethod
    def from_uri(cls, uri: str, tracking_uri: str | None = None) -> ModelPredictor:
        """A bundle path, or `models:/<name>@<alias>` / `models:/<name>/<version>` from the registry."""
        if not uri.startswith("models:/"):
            return cls.from_bundle(uri)
        name, _, ref = uri[len("models:/") :].partition("@")
        version_ref: str | None = None
        if not ref:
            name, _, version_ref = name.partition("/")
            if not version_ref:
                raise ModelLoadError(f"model URI {uri!r} needs an alias (@champion) or a version (/3)")
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        try:
            if version_ref is None:
                model_version = client.get_model_version_by_alias(name, ref)
            else:
                model_version = client.get_model_version(name, version_ref)
            run_id = model_version.run_id
            if not run_id:
                raise ModelLoadError(f"{uri}: registered version {model_version.version} has no run")
            with tempfile.TemporaryDirectory(prefix="agentlb-model-") as tmp:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=BUNDLE_ARTIFACT_PATH, dst_path=tmp, tracking_uri=tracking_uri
                )
                return cls.from_bundle(local, source=f"models:/{name}/{model_version.version} ({uri})")
        except MlflowException as exc:
            where = tracking_uri or "the default tracking URI"
            raise ModelLoadError(f"cannot resolve {uri} at {where}: {exc}") from exc
        except OSError as exc:
            raise ModelLoadError(f"cannot download the bundle of {uri}: {exc}") from exc

    @staticmethod
    def registry_version(uri: str, tracking_uri: str | None = None) -> str:
        """The registered version an alias URI (`models:/name@alias`) points at now, for the
        service's background poll (imports MLflow; never called on the request path)."""
        name, _, alias = uri[len("models:/") :].partition("@")
        if not uri.startswith("models:/") or not alias:
            raise ModelLoadError(f"{uri!r} is not a registry alias URI (models:/<name>@<alias>)")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            return str(
                MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, alias).version
            )
        except MlflowException as exc:
            raise ModelLoadError(f"cannot resolve {uri}: {exc}") from exc

    def _warm(self, forests: tuple[Forest, Forest] | None = None) -> None:
        """One prediction per evaluator off the request path, so the first request is not slower."""
        row = np.full((1, len(self.spec.feature_names)), np.nan, dtype=np.float64)
        for forest in forests or self._forests:
            forest(row)

    def compile(self, cache_dir: Path) -> float:
        """Evaluate both boosters as native code from now on (`CompiledForest`); the seconds it
        took. Meant for a background thread: predictions made meanwhile use LightGBM, and the
        pair is swapped in one assignment. ModelLoadError (LightGBM kept) when it cannot."""
        from agentlb.predictor.compiled import CompiledForest

        started = time.perf_counter()
        forests = (
            CompiledForest(self.p50_booster, cache_dir),
            CompiledForest(self.p90_booster, cache_dir),
        )
        self._warm(forests)
        self._forests = forests
        self.evaluator = "compiled"
        return time.perf_counter() - started

    # --- Predictor protocol -----------------------------------------------------------
    @property
    def version(self) -> str:
        return self._version

    @property
    def source(self) -> str:
        return self._source

    @property
    def feature_version(self) -> str:
        return self.spec.version

    @property
    def metrics(self) -> dict[str, float]:
        metrics = self.metadata.get("holdout_metrics") or {}
        return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}

    def predict_service(
        self, task: TaskRequest, candidates: Sequence[AgentState], snapshot: FleetSnapshot
    ) -> ServicePrediction:
        matrix = self.spec.encode_candidates(task, candidates, snapshot)
        return self.predict_matrix(matrix)

    def predict_matrix(self, matrix: np.ndarray) -> ServicePrediction:
        """p50/p90 seconds for rows already in `spec.feature_names` order (one call per booster)."""
        if len(matrix) == 0:
            empty = np.empty(0, dtype=np.float64)
            return ServicePrediction(empty, empty)
        # one thread: a candidate batch is small, and OpenMP threads cost more than they save
        # (100 rows: ~0.36 ms with 1 thread, ~1.1 ms with 2 on a busy 2-core machine)
        p50_forest, p90_forest = self._forests
        return self._seconds(p50_forest(matrix), p90_forest(matrix))

    def predict_matrix_in_background(self, matrix: np.ndarray) -> ServicePrediction:
        """`predict_matrix` through LightGBM's Python API, which releases the GIL while it
        computes: for batch scoring in a thread beside the selections (shadow scoring), which a
        long prediction holding the GIL would hold up. The same numbers."""
        if len(matrix) == 0:
            return self.predict_matrix(matrix)
        log50 = np.asarray(self.p50_booster.predict(matrix, num_threads=1), dtype=np.float64)
        log90 = np.asarray(self.p90_booster.predict(matrix, num_threads=1), dtype=np.float64)
        return self._seconds(log50, log90)

    def _seconds(self, log50: np.ndarray, log90: np.ndarray) -> ServicePrediction:
        log90 = log90 + self.p90_log_offset
        p50 = np.maximum(np.exp(np.minimum(log50, MAX_LOG_S)), MIN_SERVICE_S)
        p90 = np.maximum(np.exp(np.minimum(log90, MAX_LOG_S)), p50)
        return ServicePrediction(p50, p90)

    def predict_frame(self, frame: pd.DataFrame) -> ServicePrediction:
        """Offline scoring of a history frame (training, `agentlb predict`), same encoding as serving."""
        return self.predict_matrix(self.spec.encode_frame(frame))

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "feature_version": self.feature_version,
            "loaded_at": self.loaded_at,
            "evaluator": self.evaluator,
            "metrics": self.metrics,
            "trained_rows": self.metadata.get("rows"),
            "data_hash": self.metadata.get("data_hash"),
            "mlflow_run_id": self.metadata.get("mlflow_run_id"),
        }


def load_champion() -> ModelPredictor:
    """The champion at `AGENTLB_MODEL_URI` (default `models/champion`), for the commands that
    score or assess it outside the service (`bench-select --predictor model`, `drift`)."""
    from agentlb.settings import load_settings

    settings = load_settings()
    uri = settings.model_uri or str(settings.models_dir / "champion")
    try:
        return ModelPredictor.from_uri(uri, settings.tracking_uri)
    except ModelLoadError as exc:
        raise ModelLoadError(f"no usable model at {uri}: {exc}. Run `agentlb train` first.") from exc
