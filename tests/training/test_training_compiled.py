"""A model compiled to native code (lleaves) predicts what LightGBM predicts, is cached safely,
and is refused when it disagrees."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agentlb.errors import ModelLoadError
from agentlb.predictor.compiled import CompiledForest, probe_matrix
from agentlb.predictor.model import ModelPredictor
from agentlb.service import AgentLBService
from agentlb.settings import load_settings
from agentlb.training.bundle import export_bundle
from agentlb.training.quick import fit_predictor

pytest.importorskip("lleaves", reason="lleaves (the model compiler) is not installed")


@pytest.fixture(scope="module")
def predictor(history: pd.DataFrame) -> ModelPredictor:
    return fit_predictor(history, seed=0)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile of each booster for the tests that are not about the cache itself."""
    return tmp_path_factory.mktemp("compiled")


def test_compiled_forest_predicts_what_lightgbm_predicts(
    predictor: ModelPredictor, history: pd.DataFrame, shared_cache: Path
) -> None:
    matrix = np.ascontiguousarray(predictor.spec.encode_frame(history.head(256)), dtype=np.float64)
    assert np.isnan(matrix).any()  # missing values take the trees' default branches
    for booster in (predictor.p50_booster, predictor.p90_booster):
        forest = CompiledForest(booster, shared_cache)
        expected = booster.predict(matrix, num_threads=1)
        np.testing.assert_allclose(forest(matrix), expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(forest(matrix[:1].copy()), expected[:1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(forest(np.asfortranarray(matrix)), expected, rtol=1e-9, atol=1e-12)
        probe = probe_matrix(booster)  # unseen categories, out-of-range values
        np.testing.assert_allclose(
            forest(probe), booster.predict(probe, num_threads=1), rtol=1e-9, atol=1e-12
        )
        with pytest.raises(ValueError, match="matrix"):
            forest(matrix[:, :-1].copy())


def test_compile_swaps_the_evaluator_and_keeps_the_predictions(
    history: pd.DataFrame, shared_cache: Path
) -> None:
    model = fit_predictor(history, seed=0)  # the same trees as `predictor`, not yet compiled
    tail = history.tail(300)
    before = model.predict_frame(tail)
    assert model.describe()["evaluator"] == "lightgbm"
    seconds = model.compile(shared_cache)
    assert seconds > 0
    assert model.describe()["evaluator"] == "compiled"
    after = model.predict_frame(tail)
    np.testing.assert_allclose(after.p50_s, before.p50_s, rtol=1e-9)
    np.testing.assert_allclose(after.p90_s, before.p90_s, rtol=1e-9)


def test_cached_object_code_is_reused_and_a_damaged_file_is_compiled_again(
    predictor: ModelPredictor, tmp_path: Path
) -> None:
    booster = predictor.p50_booster
    first = CompiledForest(booster, tmp_path)
    assert not first.from_cache
    (cached,) = tmp_path.glob("*.o")
    second = CompiledForest(booster, tmp_path)
    assert second.from_cache
    probe = probe_matrix(booster, seed=3)
    np.testing.assert_array_equal(second(probe), first(probe))
    # a truncated file would make LLVM abort the process: its digest no longer matches, so it
    # is removed and compiled again
    cached.write_bytes(cached.read_bytes()[:1000])
    third = CompiledForest(booster, tmp_path)
    assert not third.from_cache
    assert cached.is_file() and len(cached.read_bytes()) > 1000
    np.testing.assert_array_equal(third(probe), first(probe))


def test_a_compiled_model_that_disagrees_is_refused_and_uncached(
    predictor: ModelPredictor, tmp_path: Path
) -> None:
    forest = CompiledForest(predictor.p50_booster, tmp_path)
    assert list(tmp_path.glob("*.o"))
    with pytest.raises(ModelLoadError, match="disagrees with LightGBM"):
        forest._check_against(predictor.p90_booster)  # another model's numbers
    assert not list(tmp_path.glob("*.o"))


def _home_with_champion(home: Path, predictor: ModelPredictor) -> Path:
    export_bundle(
        home / "models",
        predictor.p50_booster,
        predictor.p90_booster,
        predictor.spec,
        "v3",
        {},
        predictor.p90_log_offset,
    )
    return home


def test_service_compiles_in_the_background(predictor: ModelPredictor, tmp_path: Path) -> None:
    settings = load_settings(
        home=_home_with_champion(tmp_path, predictor), model_poll_interval_s=0, model_compile=True
    )
    service = AgentLBService.open(settings)
    try:
        assert service.compile_thread is not None
        service.compile_thread.join(120)
        info = service.model_info()
        assert info["version"] == "v3" and info["evaluator"] == "compiled"
        assert list(settings.compiled_dir.glob("*.o"))
    finally:
        service.close()


def test_service_keeps_lightgbm_when_the_model_cannot_be_compiled(
    predictor: ModelPredictor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = _home_with_champion(tmp_path, predictor)
    (home / "var").mkdir(exist_ok=True)
    (home / "var" / "compiled").write_text("a file where the cache directory should be")
    settings = load_settings(home=home, model_poll_interval_s=0, model_compile=True)
    with caplog.at_level(logging.WARNING, logger="agentlb"):
        service = AgentLBService.open(settings)
        try:
            assert service.compile_thread is not None
            service.compile_thread.join(120)
            info = service.model_info()
            assert info["version"] == "v3" and info["fallback_reason"] is None
            assert info["evaluator"] == "lightgbm"
        finally:
            service.close()
    assert any(r.getMessage() == "model_compile_failed" for r in caplog.records)


def test_the_cache_keeps_the_most_recent_object_files(predictor: ModelPredictor, tmp_path: Path) -> None:
    import os

    from agentlb.predictor.compiled import KEEP_OBJECTS

    for i in range(KEEP_OBJECTS + 3):  # object files of earlier model versions
        old = tmp_path / f"{i:032x}.{i:032x}.o"
        old.write_bytes(b"x")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    forest = CompiledForest(predictor.p50_booster, tmp_path)
    kept = sorted(p.name for p in tmp_path.glob("*.o"))
    assert len(kept) == KEEP_OBJECTS
    assert any(name.startswith(forest.cache_key) for name in kept)  # the new one stays
    assert f"{0:032x}.{0:032x}.o" not in kept and f"{KEEP_OBJECTS + 2:032x}.{KEEP_OBJECTS + 2:032x}.o" in kept
