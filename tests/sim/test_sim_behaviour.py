"""What a user of the simulator relies on: conservation, the oracle, trace replay, fleet dynamics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sim_helpers import REPO_ROOT, make_task

from agentlb.errors import FleetFileError, SimulationError
from agentlb.features import AGENT_STATE_FEATURES
from agentlb.history import validate_history
from agentlb.sim.fleet import SimAgentSpec, fleet_from_dicts, load_fleet
from agentlb.sim.metrics import run_metrics
from agentlb.sim.scenarios import SURVEILLANCE_FLEET, capacity_per_s, get_scenario
from agentlb.sim.simulator import SIM_STRATEGIES, RunConfig, Simulation, history_frame, simulate
from agentlb.sim.trace import read_trace, tasks_from_trace
from agentlb.sim.workload import Bursty, Diurnal, Poisson, arrival_times


@pytest.mark.parametrize("strategy", SIM_STRATEGIES)
def test_every_task_ends_exactly_once(strategy: str) -> None:
    fleet, tasks = get_scenario("flaky").build(1, 400)
    sim = Simulation(fleet, tasks, RunConfig(strategy, 1, record_events=True))
    result = sim.run()
    ends = Counter(task_id for _, kind, task_id, _ in result.events if kind in ("finish", "fail", "reject"))
    assert set(ends) == {t.task_id for t in tasks}
    assert set(ends.values()) == {1}
    assert all(f >= a for f, a in zip(result.finish_s, result.arrival_s, strict=True))
    assert sim.tracker.total_in_flight() == 0


def test_oracle_never_loses_on_mean_sojourn_with_specialists() -> None:
    fleet, tasks = get_scenario("specialists").build(2, 800)
    means = {
        s: run_metrics(simulate(fleet, tasks, RunConfig(s, 2)))["mean_sojourn_s"] for s in SIM_STRATEGIES
    }
    oracle = means.pop("oracle")
    assert oracle is not None
    for strategy, mean in means.items():
        assert mean is not None and oracle <= mean, f"oracle {oracle:.3f} lost to {strategy} {mean:.3f}"


def test_trace_replay_reproduces_arrival_times(tmp_path: Path, two_agents: list[SimAgentSpec]) -> None:
    stamps = [
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:01.5Z",
        "2024-05-01T10:00:04Z",
        "2024-05-01T10:00:10Z",
    ]
    pd.DataFrame(
        {
            "task_id": ["a", "b", "c", "d"],
            "arrival_time": stamps,
            "task_type": ["work"] * 4,
            "duration_s": [1.0, 2.0, 0.5, 3.0],
            "input_tokens": [10, 20, 5, 30],
        }
    ).to_csv(tmp_path / "trace.csv", index=False)
    tasks = tasks_from_trace(read_trace(tmp_path / "trace.csv"), time_scale=2.0, noise_sigma=0.0)
    assert [t.arrival_s for t in tasks] == [0.0, 0.75, 2.0, 5.0]
    assert [t.size_s for t in tasks] == [1.0, 2.0, 0.5, 3.0]
    assert tasks[1].attributes == {"input_tokens": 20}
    result = simulate(two_agents, tasks, RunConfig("least_connection", 0, record_events=True))
    dispatched = {task_id: when for when, kind, task_id, _ in result.events if kind == "dispatch"}
    assert dispatched == {"a": 0.0, "b": 0.75, "c": 2.0, "d": 5.0}


def test_trace_replay_of_a_true_false_attribute_some_tasks_lack(tmp_path: Path) -> None:
    (tmp_path / "trace.csv").write_text(
        "arrival_time,task_type,duration_s,cached\n0,work,1.0,true\n1,work,2.0,\n2,work,0.5,false\n"
    )
    tasks = tasks_from_trace(read_trace(tmp_path / "trace.csv"), noise_sigma=0.0)
    assert [t.attributes for t in tasks] == [{"cached": True}, {"cached": None}, {"cached": False}]


def test_joining_and_leaving_agents_get_work_only_while_present() -> None:
    fleet = fleet_from_dicts(
        [
            {"id": "base", "name": "base", "capabilities": ["work"], "max_concurrency": 1},
            {
                "id": "late",
                "name": "late",
                "capabilities": ["work"],
                "max_concurrency": 1,
                "join_at_s": 5.0,
                "leave_at_s": 10.0,
            },
        ]
    )
    tasks = [make_task(i, 0.5 * i, 1.0) for i in range(30)]
    result = simulate(fleet, tasks, RunConfig("round_robin", 0, heartbeat_interval_s=0, record_events=True))
    late = [when for when, kind, _, agent in result.events if kind == "dispatch" and agent == "late"]
    assert late and min(late) >= 5.0 and max(late) < 10.0
    assert "late" in {a for _, k, _, a in result.events if k == "join"}


def test_slowdown_episode_multiplies_service_time() -> None:
    fleet = fleet_from_dicts(
        [
            {
                "id": "A",
                "name": "A",
                "capabilities": ["work"],
                "max_concurrency": 1,
                "speed": 2.0,
                "slowdowns": [{"start_s": 10.0, "end_s": 20.0, "factor": 5.0}],
            }
        ]
    )
    tasks = [make_task(0, 0.0, 2.0), make_task(1, 12.0, 2.0), make_task(2, 30.0, 2.0)]
    result = simulate(fleet, tasks, RunConfig("least_connection", 0, heartbeat_interval_s=0))
    assert result.service_s == [1.0, 5.0, 1.0]


def test_failures_follow_the_agent_failure_rate() -> None:
    fleet = fleet_from_dicts(
        [{"id": "flaky", "name": "f", "capabilities": ["work"], "max_concurrency": 2, "failure_rate": 0.3}]
    )
    tasks = [make_task(i, float(i), 0.5, failure_draw=(i % 10) / 10) for i in range(50)]
    result = simulate(fleet, tasks, RunConfig("least_connection", 0, warmup_share=0.0))
    assert result.success.count(False) == 15  # draws 0.0, 0.1, 0.2 of every ten fall below 0.3
    assert run_metrics(result)["success_rate"] == pytest.approx(0.7)


def test_heartbeats_reach_the_tracker_late() -> None:
    fleet = fleet_from_dicts([{"id": "A", "name": "A", "capabilities": ["work"], "max_concurrency": 1}])
    sim = Simulation(
        fleet,
        [make_task(0, 0.1, 20.0)],
        RunConfig("least_connection", 0, heartbeat_interval_s=1.0, heartbeat_delay_s=2.0),
    )
    seen: dict[float, float] = {}
    for probe in (2.5, 3.5):
        sim.engine.at(probe, lambda now, _: seen.__setitem__(now, sim.tracker.state("A").cpu_usage))
    sim.run()
    # at 2.5 s the tracker knows the samples of 0 s (idle); at 3.5 s the busy one taken at 1 s
    assert seen[2.5] < 20.0
    assert seen[3.5] > 80.0


def test_history_rows_follow_the_history_contract() -> None:
    fleet, tasks = get_scenario("surveillance").build(0, 300)
    result = simulate(fleet, tasks, RunConfig("hybrid", 0, collect_history=True))
    frame = history_frame(result.history)
    validated = validate_history(frame)
    assert len(validated.frame) == 300 and not validated.rejected
    for column in (
        *AGENT_STATE_FEATURES,
        "task_id",
        "agent_id",
        "success",
        "duration_s",
        "predicted_p50_s",
        "predicted_p90_s",
        "model_version",
        "strategy",
        "input_tokens",
    ):
        assert column in frame.columns, column
    by_id = dict(zip(frame["task_id"], frame["duration_s"], strict=True))
    assert by_id[tasks[5].task_id] == pytest.approx(result.service_s[5])
    assert frame["agent_ewma_type_s"].notna().sum() > 200  # the tracker learned as tasks finished


def test_surveillance_tasks_carry_deadlines_and_the_miss_rate_is_reported() -> None:
    fleet, tasks = get_scenario("surveillance").build(0, 500)
    assert any(t.deadline_s is not None for t in tasks)
    metrics = run_metrics(simulate(fleet, tasks, RunConfig("least_connection", 0)))
    assert metrics["deadline_miss_rate"] is not None and 0.0 <= metrics["deadline_miss_rate"] <= 1.0


def test_capacity_is_slots_times_speed_over_mean_size_for_a_uniform_fleet() -> None:
    scenario = get_scenario("heterogeneous")
    fleet = scenario.fleet(0, 1.0)
    work_capacity = sum(s.agent.max_concurrency * s.speed for s in fleet)
    assert capacity_per_s(fleet, scenario.mix) == pytest.approx(work_capacity / 2.6)


@pytest.mark.parametrize("process", [Poisson(4.0), Bursty(4.0), Diurnal(4.0, 0.3, 100.0)])
def test_arrival_processes_keep_their_mean_rate(process: Poisson | Bursty | Diurnal) -> None:
    import random

    times = arrival_times(process, 20000, random.Random(5))
    assert times == sorted(times)
    assert len(times) / times[-1] == pytest.approx(4.0, rel=0.1)


def test_demo_fleet_file_is_the_surveillance_scenario_fleet() -> None:
    path = REPO_ROOT / "examples" / "fleet.yaml"
    assert yaml.safe_load(path.read_text())["agents"] == [dict(a) for a in SURVEILLANCE_FLEET]
    specs = load_fleet(path)
    assert len({s.speed_for("video_analysis") for s in specs}) > 2
    assert len({s.agent.max_concurrency for s in specs}) > 2


def test_a_bad_fleet_entry_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("agents:\n  - {id: a1, name: A, capabilities: [x], max_concurrency: 2, speed: fast}\n")
    with pytest.raises(FleetFileError, match=r"agent 'a1'.*speed"):
        load_fleet(path)
    with pytest.raises(FleetFileError, match="appears twice"):
        fleet_from_dicts([{"id": "a"}, {"id": "a"}])


def test_unknown_strategy_and_scenario_are_clear_errors(two_agents: list[SimAgentSpec]) -> None:
    with pytest.raises(SimulationError, match="valid:"):
        simulate(two_agents, [make_task(0, 0.0, 1.0)], RunConfig("fastest"))
    with pytest.raises(SimulationError, match="homogeneous"):
        get_scenario("nope")
