"""ModelPredictor: loads bundles, refuses bad ones, predicts every candidate in one call."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.errors import ModelLoadError
from agentlb.features import FEATURE_VERSION, FeatureSpec
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.model import ModelPredictor
from agentlb.tracker import AgentLoadTracker
from agentlb.training.bundle import export_bundle
from agentlb.training.quick import fit_predictor
from agentlb.training.synthetic import default_fleet


@pytest.fixture(scope="module")
def predictor(history: pd.DataFrame) -> ModelPredictor:
    return fit_predictor(history, seed=0)


@pytest.fixture
def bundle(tmp_path: Path, predictor: ModelPredictor) -> Path:
    return export_bundle(
        tmp_path / "models",
        predictor.p50_booster,
        predictor.p90_booster,
        predictor.spec,
        "v7",
        {"rows": 123, "holdout_metrics": {"mae": 1.5, "p90_coverage": 0.9}},
        predictor.p90_log_offset,
    )


def _fleet(now: list[float], predictor: ModelPredictor) -> Balancer:
    tracker = AgentLoadTracker(clock=lambda: now[0])
    for i, agent_id in enumerate(["agent-0", "agent-1", "agent-2", "never-seen"]):
        tracker.register(Agent(id=agent_id, name=agent_id, max_concurrency=2 + i % 2), registered_at=0.0)
    return Balancer(tracker, PredictorRef(predictor), BalancerConfig(slow_start_window_s=0.0))


def test_bundle_round_trip_gives_identical_predictions(
    bundle: Path, predictor: ModelPredictor, history: pd.DataFrame
) -> None:
    loaded = ModelPredictor.from_bundle(bundle)
    assert loaded.version == "v7"
    assert loaded.metrics == {"mae": 1.5, "p90_coverage": 0.9}
    assert loaded.describe()["feature_version"] == FEATURE_VERSION
    tail = history.tail(200)
    np.testing.assert_allclose(loaded.predict_frame(tail).p50_s, predictor.predict_frame(tail).p50_s)
    np.testing.assert_allclose(loaded.predict_frame(tail).p90_s, predictor.predict_frame(tail).p90_s)
    assert loaded.p90_log_offset == predictor.p90_log_offset != 0.0
    assert bundle.is_symlink()  # models/champion is swapped atomically by replacing a link


def test_export_replaces_the_champion_link(bundle: Path, predictor: ModelPredictor) -> None:
    first = bundle.resolve()
    export_bundle(
        bundle.parent,
        predictor.p50_booster,
        predictor.p90_booster,
        predictor.spec,
        "v8",
        {},
        predictor.p90_log_offset,
    )
    assert ModelPredictor.from_bundle(bundle).version == "v8"
    assert bundle.resolve() != first and first.is_dir()  # the previous bundle stays for a rollback


def test_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"not found.*agentlb train"):
        ModelPredictor.from_bundle(tmp_path / "nothing-here")


def test_incomplete_bundle_is_refused(tmp_path: Path, bundle: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.resolve(), copy)
    (copy / "p90.lgb").unlink()
    with pytest.raises(ModelLoadError, match=r"p90\.lgb is missing"):
        ModelPredictor.from_bundle(copy)


def test_corrupt_model_file_is_refused(tmp_path: Path, bundle: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.resolve(), copy)
    (copy / "p50.lgb").write_text("this is not a LightGBM model\n")
    with pytest.raises(ModelLoadError, match="corrupt"):
        ModelPredictor.from_bundle(copy)


def test_corrupt_bundle_json_is_refused(tmp_path: Path, bundle: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.resolve(), copy)
    (copy / "bundle.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        ModelPredictor.from_bundle(copy)


def test_other_feature_version_is_refused(tmp_path: Path, bundle: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.resolve(), copy)
    document = json.loads((copy / "bundle.json").read_text())
    document["feature_version"] = "0"
    document["feature_spec"]["version"] = "0"
    (copy / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match="feature version '0'"):
        ModelPredictor.from_bundle(copy)


def test_registry_uri_without_alias_or_version_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="alias"):
        ModelPredictor.from_uri("models:/agentlb-completion-time")


def test_predicts_every_candidate_including_unseen_agents_and_values(predictor: ModelPredictor) -> None:
    now = [0.0]
    balancer = _fleet(now, predictor)
    for i in range(60):  # learn some history through the real balancer
        task = TaskRequest("object_detection", requirements={"input_tokens": 800, "complexity": "high"})
        result = balancer.select(task, "round_robin")
        now[0] += 1.0
        balancer.report(
            TaskOutcome(result.selected_agent.id, 2.0 + i % 3, True, task.task_id, task.task_type)
        )
    snapshot = balancer.tracker.snapshot()
    task = TaskRequest("a_type_never_seen", requirements={"input_tokens": 5000, "complexity": "unheard-of"})
    prediction = predictor.predict_service(task, snapshot.agents, snapshot)
    assert prediction.p50_s.shape == (4,)
    assert all(math.isfinite(v) and v > 0 for v in prediction.p50_s)
    assert bool(np.all(prediction.p90_s >= prediction.p50_s))
    result = balancer.select(TaskRequest("video_analysis", requirements={"input_tokens": 900}), "predictive")
    assert result.model_version == predictor.version and not result.fallback_used


def test_bigger_tasks_are_predicted_to_take_longer(predictor: ModelPredictor) -> None:
    spec: FeatureSpec = predictor.spec
    rows = pd.DataFrame(
        {
            "task_type": ["video_analysis"] * 2,
            "agent_id": ["agent-0"] * 2,
            "input_tokens": [300, 4000],
            "complexity": ["low", "high"],
        }
    )
    small, large = predictor.predict_matrix(spec.encode_frame(rows)).p50_s
    assert large > 2 * small


def test_quick_fit_serves_with_agent_differences(predictor: ModelPredictor, history: pd.DataFrame) -> None:
    """The simulated fleet has specialists: with the state each agent had at its last dispatch
    of a type, and the same task, the model ranks the agents fast at it ahead of the slow."""
    fleet = default_fleet(seed=1)  # the fleet `history` was simulated on
    last = history[history["task_type"] == "video_analysis"].groupby("agent_id").tail(1)
    rows = last.assign(input_tokens=1000, complexity="medium").sort_values("agent_id")
    p50 = dict(zip(rows["agent_id"], predictor.predict_frame(rows).p50_s, strict=True))
    fast = [p50[a.agent_id] for a in fleet if a.speed_by_type["video_analysis"] > 1.5]
    slow = [p50[a.agent_id] for a in fleet if a.speed_by_type["video_analysis"] < 1.0]
    assert fast and slow and 2 * max(fast) < min(slow)


def _large_fleet(predictor: ModelPredictor, shortlist: int) -> Balancer:
    tracker = AgentLoadTracker(clock=lambda: 100.0)
    for i in range(40):
        tracker.register(Agent(id=f"agent-{i}", name=f"agent-{i}", max_concurrency=4), registered_at=0.0)
    balancer = Balancer(
        tracker, PredictorRef(predictor), BalancerConfig(slow_start_window_s=0.0, model_shortlist=shortlist)
    )
    for _ in range(400):  # agent-k takes 1 + k/10 s: the heuristic knows who is fast
        result = balancer.select(TaskRequest("video_analysis"), "round_robin")
        k = int(result.selected_agent.id.split("-")[1])
        balancer.report(TaskOutcome(result.selected_agent.id, 1.0 + k / 10, True, result.task_id))
    return balancer


class CountingModel:
    """The real model, counting the rows it is asked to score."""

    def __init__(self, model: ModelPredictor) -> None:
        self.model = model
        self.rows: list[int] = []
        self.version = model.version
        self.source = model.source

    def predict_service(self, task, candidates, snapshot):  # type: ignore[no-untyped-def]
        self.rows.append(len(candidates))
        return self.model.predict_service(task, candidates, snapshot)

    def describe(self) -> dict[str, object]:
        return self.model.describe()


@pytest.mark.parametrize("strategy", ["hybrid", "predictive"])
def test_a_large_fleet_is_shortlisted_before_the_model_scores_it(
    predictor: ModelPredictor, strategy: str
) -> None:
    counting = CountingModel(predictor)
    balancer = _large_fleet(counting, shortlist=8)  # type: ignore[arg-type]
    task = TaskRequest("video_analysis", requirements={"input_tokens": 900})
    result = balancer.select(task, strategy, top_k=3)
    assert counting.rows[-1] == 8
    assert "model scored the 8 of 40 agents" in result.selection_reason
    # the shortlist is the heuristic's earliest finishers: the fast low-numbered agents
    assert int(result.selected_agent.id.split("-")[1]) < 8
    assert len(result.alternative_agents) == 3 and result.model_version == predictor.version
    # top_k beyond the shortlist widens it, so every requested alternative is scored
    wide = balancer.select(TaskRequest("video_analysis"), strategy, top_k=12)
    assert counting.rows[-1] == 13 and len(wide.alternative_agents) == 12


def test_shortlist_zero_scores_every_candidate(predictor: ModelPredictor) -> None:
    counting = CountingModel(predictor)
    balancer = _large_fleet(counting, shortlist=0)  # type: ignore[arg-type]
    result = balancer.select(TaskRequest("video_analysis"), "hybrid")
    assert counting.rows[-1] == 40 and "model scored" not in result.selection_reason


@pytest.mark.parametrize("strategy", ["hybrid", "predictive"])
def test_with_a_model_the_column_path_decides_as_the_per_agent_path(
    predictor: ModelPredictor, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a trained model, predictive and hybrid score through the column arrays from
    COLUMNS_MIN_CANDIDATES_MODEL candidates on (the shortlist of a large fleet takes this path):
    same pick, scores and predictions as agent by agent."""
    from agentlb.domain import COLUMNS_MIN_CANDIDATES_MODEL, COLUMNS_MIN_CANDIDATES_RICH
    from agentlb.predictor.heuristic import HeuristicPredictor
    from agentlb.strategies import build_strategies

    heuristic = build_strategies(PredictorRef(HeuristicPredictor()))[strategy]
    assert heuristic.columns_from == COLUMNS_MIN_CANDIDATES_RICH
    balancer = _large_fleet(predictor, shortlist=12)
    chosen = balancer.strategies[strategy]
    assert chosen.columns_from == COLUMNS_MIN_CANDIDATES_MODEL
    for _ in range(30):  # work in flight, so waits and loads differ between agents
        balancer.select(TaskRequest("video_analysis"), "round_robin")
    task = TaskRequest("video_analysis", requirements={"input_tokens": 900})
    snapshot = balancer.tracker.snapshot()
    pool = balancer.candidates(task, snapshot, None, chosen.queue_aware, True)
    pool = balancer._shortlist_for_model(task, pool, snapshot, 1)
    assert COLUMNS_MIN_CANDIDATES_MODEL <= len(pool.states) == 12 < COLUMNS_MIN_CANDIDATES_RICH
    columns = chosen.decide(task, pool.states, snapshot)
    monkeypatch.setattr(type(chosen), "columns_from", 10_000)  # the per-agent path
    by_agent = chosen.decide(task, list(pool.states), snapshot)
    assert columns.chosen == by_agent.chosen
    assert dict(columns.scores) == dict(by_agent.scores)
    assert dict(columns.predictions) == dict(by_agent.predictions)


def test_predict_through_the_c_api_equals_booster_predict(
    predictor: ModelPredictor, history: pd.DataFrame
) -> None:
    from agentlb.predictor.model import BoosterPredict

    matrix = np.ascontiguousarray(predictor.spec.encode_frame(history.head(64)), dtype=np.float64)
    for booster in (predictor.p50_booster, predictor.p90_booster):
        fast = BoosterPredict(booster)
        assert fast._predict_for_mat is not None  # the C API path, not the fallback
        expected = booster.predict(matrix, num_threads=1)
        assert np.array_equal(fast(matrix), expected)
        assert np.array_equal(fast(matrix[:1].copy()), expected[:1])
        assert np.array_equal(fast(np.asfortranarray(matrix)), expected)  # other layouts: Booster.predict
        saved = booster.best_iteration
        try:  # a best iteration limits the trees, as it does for Booster.predict
            booster.best_iteration = 3
            limited = booster.predict(matrix, num_threads=1)
            assert not np.array_equal(limited, expected)
            assert np.array_equal(fast(matrix), limited)
        finally:
            booster.best_iteration = saved
