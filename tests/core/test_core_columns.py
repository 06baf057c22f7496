"""The column arrays strategies score from must say exactly what the `AgentState`s say.

The fast paths (column arrays, lazily computed trends, positional candidates, dict-free
constructors) are only allowed because they give bit-for-bit the same scores and picks as the
per-agent formulas; these tests pin that.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import heapq
import math
import pickle
import random
from operator import itemgetter

import numpy as np
import pandas as pd
import pytest
from core_helpers import FakeClock

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import (
    Agent,
    AgentState,
    CandidateStates,
    FleetColumns,
    FleetSnapshot,
    TaskOutcome,
    TaskRequest,
    candidate_view,
    load_trend,
)
from agentlb.errors import TaskAlreadyCompletedError, UnknownTaskError
from agentlb.features import AGENT_STATE_FEATURES, FeatureSpec, agent_state_features
from agentlb.predictor.base import completion_arrays, completion_times, expected_wait_s, queueing_waits
from agentlb.predictor.heuristic import HeuristicPredictor, heuristic_service_s
from agentlb.strategies import STRATEGY_NAMES
from agentlb.strategies.base import ramping_up
from agentlb.strategies.classic import PeakEwma, PowerOfTwo, adjusted_load, resource_score, wrr_weight
from agentlb.tracker import AgentLoadTracker, TrackerConfig

TYPES = ("detect", "summarise", "triage", "rare")


def _busy_fleet(n: int, seed: int, steps: int = 600) -> tuple[Balancer, FakeClock]:
    """A fleet with unequal agents, failures, heartbeats, ejections and work in flight."""
    rng = random.Random(seed)
    clock = FakeClock()
    tracker = AgentLoadTracker(clock)
    for i in range(n):
        tracker.register(
            Agent(
                id=f"ag-{i}",
                name=f"A{i}",
                capabilities=frozenset({"work"} | ({"gpu"} if i % 3 == 0 else set())),
                max_concurrency=rng.choice((1, 2, 4)),
                weight=rng.choice((0.5, 1.0, 2.0)),
                enabled=i % 13 != 5,
            ),
            registered_at=rng.choice((0.0, 990.0, 1000.0)),
        )
    balancer = Balancer(
        tracker, config=BalancerConfig(slow_start_window_s=30.0, ejection_consecutive_failures=3), seed=seed
    )
    open_tasks: list[tuple[TaskRequest, str]] = []
    for step in range(steps):
        clock.advance(rng.choice((0.0, 0.01, 0.5, 2.0)))
        task = TaskRequest(task_type=rng.choice(TYPES), task_id=f"t{step}")
        result = balancer.select(task, rng.choice(("least_connection", "hybrid", "random")))
        open_tasks.append((task, result.selected_agent.id))
        if rng.random() < 0.2:
            tracker.heartbeat(rng.choice(tracker.agent_ids()), rng.uniform(0, 100), rng.uniform(0, 100), 2)
        while open_tasks and (len(open_tasks) > n or rng.random() < 0.5):
            done, agent_id = open_tasks.pop(rng.randrange(len(open_tasks)))
            success = rng.random() > (0.6 if agent_id.endswith("3") else 0.05)
            # an earlier outcome without a task id may have closed it (the tracker's documented rule)
            with contextlib.suppress(TaskAlreadyCompletedError, UnknownTaskError):
                balancer.report(
                    TaskOutcome(agent_id, rng.uniform(0.2, 4.0), success, done.task_id, done.task_type)
                )
    return balancer, clock


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _assert_columns_match(snapshot: FleetSnapshot) -> None:
    columns = snapshot.columns
    assert columns is not None
    reference = FleetColumns.from_states(snapshot.agents)
    assert _same(columns.values, reference.values)
    assert set(columns.types) >= set(reference.types)
    for task_type, matrix in columns.types.items():
        if task_type in reference.types:
            assert _same(matrix, reference.types[task_type]), task_type
        else:  # a type only other agents have: nobody here has statistics for it
            assert np.isnan(matrix[0]).all()


def test_incremental_columns_equal_columns_built_from_states() -> None:
    balancer, clock = _busy_fleet(40, seed=1)
    tracker = balancer.tracker
    rng = random.Random(2)
    for i in range(300):
        clock.advance(0.3)
        result = balancer.select(
            TaskRequest(task_type=rng.choice(TYPES), task_id=f"x{i}"), "least_connection"
        )
        if i % 3 == 0:
            _assert_columns_match(tracker.snapshot())
        balancer.report(
            TaskOutcome(result.selected_agent.id, rng.uniform(0.1, 3.0), rng.random() > 0.1, f"x{i}")
        )
        if i == 150:
            tracker.register(Agent(id="late", name="Late", capabilities=frozenset({"work"})))
            tracker.remove("ag-7")
    _assert_columns_match(tracker.snapshot())


def test_columns_handed_out_never_change() -> None:
    balancer, _ = _busy_fleet(20, seed=3, steps=200)
    snapshot = balancer.tracker.snapshot()
    assert snapshot.columns is not None
    before = snapshot.columns.values.copy()
    types_before = {t: m.copy() for t, m in snapshot.columns.types.items()}
    for i in range(50):
        result = balancer.select(TaskRequest(task_type="detect", task_id=f"y{i}"), "hybrid")
        balancer.report(TaskOutcome(result.selected_agent.id, 9.0, True, f"y{i}", "detect"))
        assert balancer.tracker.snapshot().columns is not None
    assert _same(snapshot.columns.values, before)
    for task_type, matrix in types_before.items():
        assert _same(snapshot.columns.types[task_type], matrix)


@pytest.mark.parametrize("n", [12, 150])
def test_strategy_scores_equal_the_per_agent_formulas(n: int) -> None:
    """Column path (150 candidates) and per-agent path (12) against the product-spec formulas."""
    balancer, _ = _busy_fleet(n, seed=4)
    snapshot = balancer.tracker.snapshot()
    task = TaskRequest(task_type="detect")
    pool = balancer.candidates(task, snapshot, queue_aware=True, columns=True)
    states = list(pool.states)
    lc = balancer.strategies["least_connection"].decide(task, pool.states, snapshot)
    assert dict(lc.scores) == {s.agent.id: 1.0 / (1.0 + adjusted_load(s)) for s in states}
    ra = balancer.strategies["resource_aware"].decide(task, pool.states, snapshot)
    special = {s.agent.id: snapshot.specialization(s, "detect") for s in states}
    best = max(special.values())
    assert dict(ra.scores) == {
        s.agent.id: resource_score(s, s.success_rate * special[s.agent.id] / best) for s in states
    }
    p2c = balancer.strategies["power_of_two"]
    assert isinstance(p2c, PowerOfTwo)
    raw = {s.agent.id: p2c.score(s, snapshot.now) for s in states}
    top = max(raw.values())
    assert dict(p2c.decide(task, pool.states, snapshot).scores) == {k: v / top for k, v in raw.items()}
    peak = balancer.strategies["peak_ewma"]
    assert isinstance(peak, PeakEwma)
    costs = {s.agent.id: peak.cost(s, snapshot.now) for s in states}
    low = min(costs.values())
    assert dict(peak.decide(task, pool.states, snapshot).scores) == {
        k: (1.0 if c <= 0 else (low / c if low > 0 else 0.0)) for k, c in costs.items()
    }
    weights = balancer.strategies["weighted_round_robin"].weights(task, pool.states, snapshot)  # type: ignore[attr-defined]
    assert weights == {s.agent.id: wrr_weight(s, task, snapshot, 30.0) for s in states}
    service = HeuristicPredictor().predict_service(task, pool.states, snapshot)
    assert service.p50_s.tolist() == [heuristic_service_s(s, "detect", snapshot) for s in states]
    times = completion_times(task, pool.states, snapshot, HeuristicPredictor())
    for state, done, p50 in zip(states, times, service.p50_s.tolist(), strict=True):
        assert done.service_p50_s == p50
        assert done.wait_s == expected_wait_s(state, snapshot)


@pytest.mark.parametrize("n", [12, 150])
def test_alternatives_follow_the_score_ranking(n: int) -> None:
    balancer, _ = _busy_fleet(n, seed=5, steps=300)
    for i, name in enumerate(STRATEGY_NAMES):
        task = TaskRequest(task_type="summarise", task_id=f"k{i}")
        snapshot = balancer.tracker.snapshot()
        result = balancer.select(task, name, top_k=3, record=False)
        pool = balancer.candidates(task, snapshot, queue_aware=balancer.strategies[name].queue_aware)
        assert len(result.alternative_agents) == min(3, len(pool.states) - 1)
        scores = [a.score for a in result.alternative_agents]
        assert scores == sorted(scores, reverse=True)
        assert result.selected_agent.id not in {a.agent_id for a in result.alternative_agents}


def test_ranking_ties_keep_candidate_order() -> None:
    balancer, _ = _busy_fleet(150, seed=6, steps=0)  # everyone idle: least_connection ties all
    task = TaskRequest(task_type="detect")
    snapshot = balancer.tracker.snapshot()
    decision = balancer.strategies["least_connection"].decide(
        task, balancer.candidates(task, snapshot, columns=True).states, snapshot
    )
    result = balancer.select(task, "least_connection", top_k=4, record=False)
    expected = [k for k, _ in heapq.nlargest(5, decision.scores.items(), key=itemgetter(1))]
    got = [a.agent_id for a in result.alternative_agents]
    assert got == [k for k in expected if k != result.selected_agent.id][:4]


def test_serving_encoding_equals_row_by_row_features() -> None:
    balancer, _ = _busy_fleet(30, seed=7)
    snapshot = balancer.tracker.snapshot()
    frame = pd.DataFrame(
        {
            "task_type": list(TYPES) * 5,
            "agent_id": [f"ag-{i}" for i in range(20)],
            "duration_s": [1.0] * 20,
            "tokens": list(range(20)),
            "tier": ["gold", "silver"] * 10,
        }
    )
    spec = FeatureSpec.from_frame(frame)
    task = TaskRequest(task_type="triage", requirements={"tokens": 7, "tier": "gold"})
    for candidates in (list(snapshot.agents), balancer.candidates(task, snapshot, columns=True).states):
        rows = [agent_state_features(s, "triage", snapshot) for s in candidates]
        by_rows = spec.encode_candidates(task, candidates, snapshot, state_rows=rows)
        assert _same(spec.encode_candidates(task, candidates, snapshot), by_rows)


def test_evidence_age_is_the_time_since_the_last_successful_completion() -> None:
    """`agent_since_completion_s`: NaN before any success, then the seconds since the last
    one; a failure tells nothing about speed and leaves it growing. Rows and columns agree."""
    clock = FakeClock()
    tracker = AgentLoadTracker(clock)
    for agent_id in ("a", "b"):
        tracker.register(Agent(id=agent_id, name=agent_id), registered_at=0.0)
    spec = FeatureSpec.from_frame(pd.DataFrame({"task_type": ["t"], "agent_id": ["a"], "duration_s": [1.0]}))
    column = 2 + AGENT_STATE_FEATURES.index("agent_since_completion_s")

    def ages() -> list[float]:
        snapshot = tracker.snapshot()
        rows = [agent_state_features(s, "t", snapshot)["agent_since_completion_s"] for s in snapshot.agents]
        encoded = spec.encode_candidates(TaskRequest(task_type="t"), list(snapshot.agents), snapshot)
        assert _same(encoded[:, column], np.array(rows))
        return rows

    clock.advance(5.0)
    assert all(math.isnan(v) for v in ages())
    tracker.complete(TaskOutcome("a", 2.0, True, task_type="t"))
    clock.advance(3.0)
    tracker.complete(TaskOutcome("a", 2.0, False, task_type="t"))
    tracker.complete(TaskOutcome("b", 2.0, False, task_type="t"))
    clock.advance(1.5)
    got = ages()
    assert got[0] == pytest.approx(4.5) and math.isnan(got[1])
    tracker.complete(TaskOutcome("a", 2.0, True, task_type="t"))
    assert ages()[0] == 0.0


def test_hot_path_objects_equal_normally_built_ones() -> None:
    """Objects built without their dataclass __init__ carry every field and compare equal."""
    balancer, _ = _busy_fleet(10, seed=8, steps=100)
    result = balancer.select(TaskRequest(task_type="detect"), "hybrid", top_k=2)
    snapshot = balancer.tracker.snapshot()
    for obj in (result, result.load_metrics, snapshot, *snapshot.agents):
        rebuilt = dataclasses.replace(obj)  # goes through __init__, reading every field
        assert rebuilt == obj
        assert repr(rebuilt) == repr(obj)


def test_states_pickle_and_copy_with_their_trend() -> None:
    balancer, _ = _busy_fleet(12, seed=10, steps=100)
    states = balancer.tracker.snapshot().agents
    for clones in (pickle.loads(pickle.dumps(states)), copy.deepcopy(states)):
        assert clones == states
        assert [s.workload_trend for s in clones] == [s.workload_trend for s in states]
        assert all("_trend_cell" not in s.__dict__ for s in clones)


def test_lazy_trend_is_the_least_squares_trend() -> None:
    clock = FakeClock()
    tracker = AgentLoadTracker(clock)
    tracker.register(Agent(id="a", name="A", max_concurrency=4), registered_at=0.0)
    for i in range(6):
        clock.advance(1.0)
        tracker.dispatch("a", TaskRequest(task_type="t", task_id=f"z{i}"))
    state = tracker.state("a")
    record_samples = [(1000.0 + i + 1, i + 1) for i in range(6)]
    slope, trend = load_trend(record_samples, 4)
    assert state.workload_trend is trend
    assert state.trend_slope == slope and not math.isnan(slope)
    assert isinstance(state, AgentState) and state == dataclasses.replace(state)


def test_candidate_list_from_another_snapshot_is_scored_from_its_own_states() -> None:
    balancer, _ = _busy_fleet(150, seed=9, steps=200)
    snapshot = balancer.tracker.snapshot()
    task = TaskRequest(task_type="detect")
    pool = balancer.candidates(task, snapshot, columns=True)
    assert isinstance(pool.states, CandidateStates)
    balancer.select(TaskRequest(task_type="detect"), "least_connection")  # the fleet moves on
    later = balancer.tracker.snapshot()
    decision = balancer.strategies["hybrid"].decide(task, list(pool.states), later)
    reference = balancer.strategies["least_connection"].decide(task, list(pool.states), later)
    assert set(decision.scores) == set(reference.scores) == {s.agent.id for s in pool.states}


@pytest.mark.parametrize("n", [12, 150])
def test_the_first_cut_median_is_the_heuristic_p50(n: int) -> None:
    """The shortlist's first cut reads only the p50: it must be the p50 `predict_service` gives,
    and with the queueing wait, `completion_arrays`' p50, to the last bit."""
    balancer, _ = _busy_fleet(n, seed=12, steps=400)
    snapshot = balancer.tracker.snapshot()
    heuristic = HeuristicPredictor()
    for task_type in TYPES:
        task = TaskRequest(task_type=task_type)
        pool = balancer.candidates(task, snapshot, columns=True, queue_aware=True)
        median = heuristic.predict_median(task, pool.states, snapshot)
        assert _same(median, heuristic.predict_service(task, pool.states, snapshot).p50_s)
        wait = queueing_waits(candidate_view(task_type, pool.states, snapshot), pool.states, snapshot)
        completion = median if wait is None else wait + median
        assert _same(completion, completion_arrays(task, pool.states, snapshot, heuristic).p50_s)


@pytest.mark.parametrize(("weights", "registered_at"), [((1.0,), 0.0), ((0.5, 1.0, 2.0), 990.0)])
def test_wrr_weights_skip_only_factors_of_exactly_one(
    weights: tuple[float, ...], registered_at: float
) -> None:
    """Unit static weights and finished slow starts are skipped, not multiplied: same weights."""
    clock = FakeClock()
    tracker = AgentLoadTracker(clock)
    for i in range(30):
        agent = Agent(id=f"w{i}", name=f"W{i}", max_concurrency=4, weight=weights[i % len(weights)])
        tracker.register(agent, registered_at=registered_at + i)
        tracker.learn(TaskOutcome(agent.id, 0.5 + i / 10, i % 7 != 0, task_type="detect"), 1.0)
    tracker.dispatch("w3", TaskRequest(task_type="detect", task_id="busy"))
    snapshot = tracker.snapshot()
    task = TaskRequest(task_type="detect")
    balancer = Balancer(tracker, config=BalancerConfig(slow_start_window_s=30.0), seed=1)
    pool = balancer.candidates(task, snapshot, columns=True)
    view = candidate_view("detect", pool.states, snapshot)
    assert view.columns.static.unit_weights == (weights == (1.0,))
    assert ramping_up(view, snapshot.now, 30.0) == (registered_at > 0)
    wrr = balancer.strategies["weighted_round_robin"]
    expected = [wrr_weight(s, task, snapshot, 30.0) for s in pool.states]
    assert wrr.weights_array(view, snapshot).tolist() == expected  # type: ignore[attr-defined]


def test_in_flight_list_kept_by_dispatch_is_the_in_flight_tasks_in_order() -> None:
    """Dispatches append to the agent's in-flight list; completions (by id or oldest) and expiry
    rebuild it: at every step a state lists the open tasks in dispatch order, and a state read
    only after later dispatches still lists those open when it was taken."""
    rng = random.Random(21)
    clock = FakeClock()
    tracker = AgentLoadTracker(clock, TrackerConfig(in_flight_expiry_s=5.0))
    for agent_id in ("a", "b"):
        tracker.register(Agent(id=agent_id, name=agent_id, max_concurrency=3), registered_at=0.0)
    open_tasks: dict[str, list[str]] = {"a": [], "b": []}
    dispatched_at: dict[str, float] = {}
    unread: list[tuple[AgentState, list[str]]] = []
    for step in range(400):
        clock.advance(rng.uniform(0.0, 0.3))
        agent_id = rng.choice(("a", "b"))
        move = rng.random()
        if move < 0.55:
            task_id = f"t{step}"
            tracker.dispatch(agent_id, TaskRequest(task_type="t", task_id=task_id), 1.0)
            open_tasks[agent_id].append(task_id)
            dispatched_at[task_id] = clock.now
        elif move < 0.8 and open_tasks[agent_id]:
            task_id = rng.choice(open_tasks[agent_id])
            tracker.complete(TaskOutcome(agent_id, 1.0, True, task_id, "t"))
            open_tasks[agent_id].remove(task_id)
        elif move < 0.9 and open_tasks[agent_id]:
            tracker.complete(TaskOutcome(agent_id, 1.0, True, task_type="t"))  # the oldest
            open_tasks[agent_id].pop(0)
        else:
            tracker.expire_stale(clock.now)
            for ids in open_tasks.values():
                ids[:] = [t for t in ids if dispatched_at[t] >= clock.now - 5.0]
        if step % 7 == 0:  # states read later must still show what was open when they were taken
            unread.append((tracker.state("a"), list(open_tasks["a"])))
        for name, ids in open_tasks.items():
            assert [t.task_id for t in tracker.snapshot().get(name).in_flight] == ids  # type: ignore[union-attr]
    assert len(unread) > 50
    for state, ids in unread:
        assert [t.task_id for t in state.in_flight] == ids
        assert [t.task_id for t in copy.deepcopy(state).in_flight] == ids
