"""Replaying the real Azure LLM inference trace (shared/data/azure_llm_2023)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlb.sim.fleet import fleet_from_dicts
from agentlb.sim.metrics import run_metrics
from agentlb.sim.simulator import RunConfig, simulate
from agentlb.sim.trace import TokenCostModel, load_azure_trace, tasks_from_trace


def test_azure_trace_runs_through_the_balancer(azure_dir: Path) -> None:
    frame = load_azure_trace(azure_dir, limit=400)
    assert len(frame) == 400
    assert set(frame["task_type"]) == {"code", "conversation"}
    assert frame["arrival_time"].is_monotonic_increasing
    cost = TokenCostModel()
    row = frame.iloc[7]
    assert row["duration_s"] == pytest.approx(cost.size_s(row["context_tokens"], row["generated_tokens"]))
    fleet = fleet_from_dicts(
        [
            {
                "id": f"gpu-{i}",
                "name": f"GPU {i}",
                "capabilities": ["code", "conversation"],
                "max_concurrency": 8,
                "speed": 1.0 + 0.5 * (i % 3),
            }
            for i in range(6)
        ]
    )
    tasks = tasks_from_trace(frame, time_scale=1.0, seed=0, noise_sigma=0.1)
    first = frame["arrival_time"].iloc[0]
    assert [t.arrival_s for t in tasks] == pytest.approx((frame["arrival_time"] - first).tolist())
    assert tasks[0].attributes.keys() == {"context_tokens", "generated_tokens"}
    result = simulate(fleet, tasks, RunConfig("predictive", 0))
    metrics = run_metrics(result)
    assert metrics["rejected_share"] == 0.0
    assert all(f >= a for f, a in zip(result.finish_s, result.arrival_s, strict=True))
    assert metrics["mean_sojourn_s"] is not None and metrics["mean_sojourn_s"] > 0


def test_simulate_command_replays_the_azure_trace_on_a_fleet_file(azure_dir: Path, tmp_path: Path) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from agentlb.cli import app

    fleet = tmp_path / "fleet.yaml"
    agents = [
        {
            "id": f"gpu-{i}",
            "name": f"GPU {i}",
            "capabilities": ["code", "conversation"],
            "max_concurrency": 8,
            "speed": {"code": 2.0, "conversation": 1.0 + i},
        }
        for i in range(4)
    ]
    fleet.write_text(yaml.safe_dump({"agents": agents}))
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--trace",
            str(azure_dir),
            "--fleet",
            str(fleet),
            "--time-scale",
            "2",
            "--tasks",
            "300",
            "--strategy",
            "power_of_two",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["tasks"] == 300 and record["rejected_share"] == 0.0
    assert set(record["utilisation_by_agent"]) == {a["id"] for a in agents}
