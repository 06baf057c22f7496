"""`agentlb experiment`: start, list, status (table, JSON, results file) and stop on a store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.service import AgentLBService
from agentlb.settings import load_settings

runner = CliRunner(env={"COLUMNS": "200"})


def test_start_status_and_stop_from_the_cli_reach_a_running_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agentlb.db'}"
    started = runner.invoke(
        app,
        [
            "experiment",
            "start",
            "--name",
            "lc vs hybrid",
            "--arm",
            "control=least_connection:0.5",
            "--arm",
            "hybrid=hybrid:0.5",
            "--url",
            url,
        ],
    )
    assert started.exit_code == 0, started.output
    experiment_id = started.output.split()[2]
    listed = runner.invoke(app, ["experiment", "list", "--url", url])
    assert experiment_id in listed.output and "running" in listed.output

    settings = load_settings(home=tmp_path, database_url=url, model_uri=str(tmp_path / "none"), seed=1)
    service = AgentLBService.open(settings)  # picks the experiment up from the store
    try:
        service.register_agent(Agent(id="a", name="a", max_concurrency=100))
        arms = set()
        for i in range(60):
            result = service.select(TaskRequest("t", task_id=f"t{i}"))
            assert result.experiment is not None and result.experiment.experiment_id == experiment_id
            arms.add(result.experiment.arm)
            service.report_outcome(TaskOutcome("a", 1.0, True, result.task_id))
    finally:
        service.close()
    assert arms == {"control", "hybrid"}

    out = tmp_path / "report.json"
    status = runner.invoke(
        app, ["experiment", "status", experiment_id, "--json", "--out", str(out), "--url", url]
    )
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report == json.loads(out.read_text())
    assert sum(a["tasks"] for a in report["arms"]) == 60 and sum(a["completed"] for a in report["arms"]) == 60
    table = runner.invoke(app, ["experiment", "status", experiment_id, "--url", url])
    assert "verdict" in table.output and "control" in table.output

    stopped = runner.invoke(app, ["experiment", "stop", experiment_id, "--url", url])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    again = runner.invoke(app, ["experiment", "stop", experiment_id, "--url", url])
    assert "already stopped" in again.output


def test_bad_input_names_the_flag_or_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agentlb.db'}"
    bad_arm = runner.invoke(
        app, ["experiment", "start", "--name", "x", "--arm", "nonsense", "--arm", "b=hybrid", "--url", url]
    )
    assert bad_arm.exit_code == 2 and "NAME=STRATEGY" in bad_arm.output
    bad_strategy = runner.invoke(
        app, ["experiment", "start", "--name", "x", "--arm", "a=telepathy", "--arm", "b=hybrid", "--url", url]
    )
    assert bad_strategy.exit_code == 1 and "arms[0].strategy" in bad_strategy.output
    unknown = runner.invoke(app, ["experiment", "status", "nope", "--url", url])
    assert unknown.exit_code == 1 and "unknown experiment" in unknown.output
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: x\narms:\n  - {name: a, strategy: hybrid, share: 0.5}\n  - {name: b, strategy: hybrid}\n"
    )
    from_file = runner.invoke(app, ["experiment", "start", "--file", str(plan), "--url", url])
    assert from_file.exit_code == 2 and "share" in from_file.output
