"""A LightGBM model compiled to native code (lleaves, through LLVM), for the serving path.

LightGBM walks its trees node by node in a generic interpreter: on a 16-row candidate batch
of the 150-tree champion that is ~34 us per model, the largest single cost of a model-backed
selection. lleaves turns every tree into straight-line machine code: ~5 us for the same batch,
with the same numbers (float64 sums; a test holds them within 1e-9, and every compiled model is
checked against its Booster before it serves).

Compiling takes a few seconds per model, so the service does it in a background thread after
a model loads and swaps the compiled evaluator in when ready (LightGBM answers until then, and
for good if compiling fails). The object code is cached under `var/compiled/`, keyed by the
model text, the CPU and the compiler versions, so a restart or a second worker loads it in
milliseconds. A cached file is loaded only when its content matches the digest in its name
(LLVM aborts the process on a damaged object file).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from agentlb.errors import ModelLoadError

ENTRY_POINT = "forest_root"
PROBE_ROWS = 64
MAX_RELATIVE_ERROR = 1e-9
KEEP_OBJECTS = 16  # cached object files kept: the models of the last few versions, p50 and p90
# forest_root(data, out, first row, end row). Called holding the GIL: a candidate batch takes a few
# microseconds, and releasing the GIL for it would hand the interpreter to another thread (the
# dispatch writer) and make the request wait to get it back.
_ENTRY_TYPE = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


def _toolchain() -> dict[str, str]:
    """What the object code depends on besides the model: compiler versions and the host CPU."""
    import llvmlite.binding as llvm

    return {
        "lleaves": metadata.version("lleaves"),
        "llvmlite": metadata.version("llvmlite"),
        "cpu": llvm.get_host_cpu_name(),
        "features": llvm.get_host_cpu_features().flatten(),
    }


class CompiledForest:
    """`forest(matrix)` -> the booster's raw prediction per row, from native code.

    Same call as `BoosterPredict`: a float64 matrix with the booster's features in order.
    Raises ModelLoadError when lleaves is missing or the compiled model disagrees with the
    booster, so the caller keeps the booster.
    """

    def __init__(self, booster: lgb.Booster, cache_dir: Path) -> None:
        try:
            import lleaves
        except ImportError as exc:  # an install without the compiler serves through LightGBM
            raise ModelLoadError(f"lleaves is not installed: {exc}") from exc
        self.n_features = booster.num_feature()
        text = booster.model_to_string()
        key = _digest((text + json.dumps(_toolchain(), sort_keys=True)).encode())
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="agentlb-compile-") as tmp:
            model_file = Path(tmp) / "model.txt"
            model_file.write_text(text)
            model = lleaves.Model(model_file=str(model_file))
            private = Path(tmp) / "forest.o"
            cached = _verified_object(cache_dir, key)
            self.from_cache = cached is not None
            if cached is not None:
                # LLVM aborts the process on a damaged object file, so only bytes whose digest
                # matches their name are loaded, from a private copy no one else can touch
                private.write_bytes(cached)
                model.compile(cache=str(private))
            else:
                model.compile(cache=str(private))
                code = private.read_bytes()
                partial = cache_dir / f".{key}.{os.getpid()}.partial"
                partial.write_bytes(code)
                os.replace(partial, cache_dir / f"{key}.{_digest(code)}.o")  # whole or absent to others
                _prune(cache_dir)
        self.cache_key = key
        self._cache_dir = cache_dir
        self._model = model  # owns the machine code the entry point runs
        address = model._execution_engine.get_function_address(ENTRY_POINT)
        self._entry: Any = _ENTRY_TYPE(address)
        self._check_against(booster)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.dtype != np.float64 or not matrix.flags.c_contiguous:
            matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) matrix, got {matrix.shape}")
        rows = matrix.shape[0]
        out = np.empty(rows, dtype=np.float64)
        self._entry(matrix.ctypes.data, out.ctypes.data, 0, rows)
        return out

    def _check_against(self, booster: lgb.Booster) -> None:
        """Both evaluators on probe rows spanning every feature's training range (missing
        values and out-of-range values included): any disagreement refuses the compiled one."""
        probe = probe_matrix(booster)
        expected = np.asarray(booster.predict(probe, num_threads=1), dtype=np.float64)
        got = self(probe)
        scale = np.maximum(np.abs(expected), 1.0)
        worst = float(np.max(np.abs(got - expected) / scale))
        if not worst <= MAX_RELATIVE_ERROR:
            for stale in _objects_of(self._cache_dir, self.cache_key):
                stale.unlink(missing_ok=True)
            raise ModelLoadError(
                f"compiled model disagrees with LightGBM (relative error {worst:.3g}); LightGBM kept"
            )


def _prune(cache_dir: Path, keep: int = KEEP_OBJECTS) -> None:
    """Keep the `keep` most recently written object files (a retrained model adds two)."""
    written: list[tuple[float, Path]] = []
    for path in cache_dir.glob("*.o"):
        try:
            written.append((path.stat().st_mtime, path))
        except OSError:  # removed meanwhile by another replica's prune
            continue
    written.sort(reverse=True)
    for _, stale in written[keep:]:
        stale.unlink(missing_ok=True)


def _digest(data: bytes) -> str:
    """What names cache files: the first 128 bits of the SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


def _objects_of(cache_dir: Path, key: str) -> list[Path]:
    """The cached object files of one model key (`<key>.<digest of the bytes>.o`)."""
    return sorted(cache_dir.glob(f"{key}.*.o"))


def _verified_object(cache_dir: Path, key: str) -> bytes | None:
    """Cached object code for `key` whose SHA-256 matches the digest in its name; a damaged
    file is removed (it will be compiled again)."""
    for path in _objects_of(cache_dir, key):
        try:
            code = path.read_bytes()
        except OSError:
            continue
        if _digest(code) == path.name[len(key) + 1 : -len(".o")]:
            return code
        path.unlink(missing_ok=True)
    return None


def probe_matrix(booster: lgb.Booster, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows drawn within (and a little beyond) each feature's training range, integers where
    the feature is categorical, a tenth of the values missing, one row all missing and one of
    zeros."""
    rng = np.random.default_rng(seed)
    infos = booster.dump_model(num_iteration=0).get("feature_infos", {})
    names = booster.feature_name()
    probe = np.empty((rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        info = infos.get(name, {})
        values = info.get("values")
        if values:  # categorical: the learned categories and a few unseen ones
            pool = np.asarray([*values, -1, max(values) + 1], dtype=np.float64)
            probe[:, j] = rng.choice(pool, size=rows)
            continue
        low, high = float(info.get("min_value", 0.0)), float(info.get("max_value", 1.0))
        span = max(high - low, 1.0)
        probe[:, j] = rng.uniform(low - 0.1 * span, high + 0.1 * span, size=rows)
    probe[rng.random(probe.shape) < 0.1] = np.nan
    probe[0, :] = np.nan
    probe[1, :] = 0.0
    return probe
