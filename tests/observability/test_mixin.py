"""The committed deploy/ files are what src/agentlb/mixin generates, the rules pass promtool
(syntax and the unit tests of deploy/prometheus/tests), and every alert documents itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agentlb.mixin import dashboards, rules
from agentlb.mixin.generate import files

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: `make prometheus` installs the Debian package")
    return found


def test_committed_deploy_files_match_the_generator() -> None:
    stale = [name for name, content in files().items() if (DEPLOY / name).read_text() != content]
    assert not stale, f"{stale} differ from src/agentlb/mixin: run `make dashboards` and commit"


def test_the_spec_alerts_keep_its_thresholds_and_every_alert_has_a_runbook() -> None:
    by_name = {a.name: a for a in rules.ALERTS}
    assert by_name["HighAgentLoadImbalance"].expr.endswith("> 0.3")
    assert by_name["HighAgentLoadImbalance"].severity == "warning"
    assert 'status!="healthy"' in by_name["LoadBalancingSystemDown"].expr
    assert by_name["LoadBalancingSystemDown"].severity == "critical"
    assert by_name["HighFallbackRate"].expr.endswith("> 0.1")
    assert by_name["HighFallbackRate"].severity == "warning"
    assert {a.name for a in rules.ALERTS if a.spec} == {
        "HighAgentLoadImbalance",
        "LoadBalancingSystemDown",
        "HighFallbackRate",
    }
    for alert in rules.ALERTS:
        assert alert.summary and alert.description, alert.name
        assert "agentlb " in alert.runbook or "GET /" in alert.runbook, alert.name


def test_dashboards_are_the_specs_three_with_a_query_in_every_panel() -> None:
    boards = dashboards.all_dashboards()
    assert set(boards) == {
        "agentlb-agent-utilisation.json",
        "agentlb-strategy-effectiveness.json",
        "agentlb-system-health.json",
    }
    for name, board in boards.items():
        assert board["panels"], name
        for panel in board["panels"]:
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"
    provisioning = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/agentlb.yml").read_text())
    assert provisioning["providers"][0]["type"] == "file"


def test_promtool_accepts_the_config_and_the_rules() -> None:
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "config", str(DEPLOY / "prometheus/prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout + check.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    test_file = DEPLOY / "prometheus/tests/alerts_test.yml"
    tested = yaml.safe_load(test_file.read_text())
    fired = {
        case["alertname"]
        for group in tested["tests"]
        for case in group.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    silent = {
        case["alertname"]
        for group in tested["tests"]
        for case in group.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    names = {a.name for a in rules.ALERTS}
    assert fired == names, f"alerts never shown firing: {names - fired}"
    assert silent == names, f"alerts never shown silent: {names - silent}"
    run = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
