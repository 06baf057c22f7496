"""The engine and one tiny run, event by event."""

from __future__ import annotations

from sim_helpers import make_task

from agentlb.sim.engine import Engine
from agentlb.sim.fleet import SimAgentSpec
from agentlb.sim.scenarios import get_scenario
from agentlb.sim.simulator import RunConfig, simulate


def test_engine_runs_in_time_order_and_breaks_ties_by_insertion() -> None:
    engine = Engine()
    seen: list[tuple[float, str]] = []
    engine.at(2.0, lambda now, p: seen.append((now, p)), "late")
    engine.at(1.0, lambda now, p: seen.append((now, p)), "first-at-1")
    engine.at(1.0, lambda now, p: seen.append((now, p)), "second-at-1")
    engine.run()
    assert seen == [(1.0, "first-at-1"), (1.0, "second-at-1"), (2.0, "late")]
    assert engine.now == 2.0


def test_golden_event_log_round_robin_two_agents(two_agents: list[SimAgentSpec]) -> None:
    # A: 1 slot, speed 1; B: 1 slot, speed 2. Round robin over sorted ids: t0->A, t1->B, then
    # both busy so t2->A and t3->B queue. t1 ends at 0.5 + 2/2 = 1.5 and B starts t3 (0.5 s);
    # at 2.0 both t0 (scheduled first) and t3 end; A then runs t2 until 3.0.
    tasks = [make_task(0, 0.0, 2.0), make_task(1, 0.5, 2.0), make_task(2, 1.0, 1.0), make_task(3, 1.2, 1.0)]
    result = simulate(
        two_agents, tasks, RunConfig("round_robin", seed=0, heartbeat_interval_s=0, record_events=True)
    )
    assert result.events == [
        (0.0, "join", "", "A"),
        (0.0, "join", "", "B"),
        (0.0, "arrive", "t0", ""),
        (0.0, "dispatch", "t0", "A"),
        (0.0, "start", "t0", "A"),
        (0.5, "arrive", "t1", ""),
        (0.5, "dispatch", "t1", "B"),
        (0.5, "start", "t1", "B"),
        (1.0, "arrive", "t2", ""),
        (1.0, "dispatch", "t2", "A"),
        (1.2, "arrive", "t3", ""),
        (1.2, "dispatch", "t3", "B"),
        (1.5, "finish", "t1", "B"),
        (1.5, "start", "t3", "B"),
        (2.0, "finish", "t0", "A"),
        (2.0, "start", "t2", "A"),
        (2.0, "finish", "t3", "B"),
        (3.0, "finish", "t2", "A"),
    ]
    assert result.finish_s == [2.0, 1.5, 3.0, 2.0]
    assert result.start_s == [0.0, 0.5, 2.0, 1.5]


def test_same_seed_same_event_log_and_other_seed_differs() -> None:
    scenario = get_scenario("heterogeneous")
    logs = []
    for seed in (3, 3, 4):
        fleet, tasks = scenario.build(seed, 300)
        logs.append(simulate(fleet, tasks, RunConfig("power_of_two", seed, record_events=True)).events)
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]
    assert len(logs[0]) > 4 * 300
