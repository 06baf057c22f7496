"""The store commands as a user runs them: db upgrade, agents load/list, history export/import/prune,
bench-store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.domain import TaskOutcome
from agentlb.store import Store

FLEET = """agents:
  - {id: a1, name: Alpha, capabilities: [text, video], max_concurrency: 2, speed: 2.0, failure_rate: 0.1}
  - {id: a2, name: Beta, capabilities: [text], max_concurrency: 4, weight: 2}
"""

runner = CliRunner()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_db_upgrade_creates_the_database(url: str, tmp_path: Path) -> None:
    code, output = invoke("db", "upgrade", "--url", url)
    assert code == 0, output
    assert "schema revision 0003" in output
    assert (tmp_path / "var" / "agentlb.db").exists()


def test_agents_load_registers_then_updates(url: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    assert "2 registered, 0 updated, 0 unchanged" in invoke("agents", "load", str(fleet), "--url", url)[1]
    assert "0 registered, 0 updated, 2 unchanged" in invoke("agents", "load", str(fleet), "--url", url)[1]
    fleet.write_text(FLEET.replace("max_concurrency: 4", "max_concurrency: 8"))
    assert "0 registered, 1 updated, 1 unchanged" in invoke("agents", "load", str(fleet), "--url", url)[1]
    code, output = invoke("agents", "list", "--json", "--url", url)
    assert code == 0, output
    agents = {a["id"]: a for a in json.loads(output)}
    assert agents["a2"]["max_concurrency"] == 8
    assert agents["a1"]["capabilities"] == ["text", "video"]


def test_agents_load_reports_a_bad_fleet_file(url: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("agents:\n  - {id: a1, max_concurrency: 0}\n")
    code, output = invoke("agents", "load", str(fleet), "--url", url)
    assert code == 1
    assert "max_concurrency" in output


def test_history_import_export_and_prune(url: str, tmp_path: Path) -> None:
    history = tmp_path / "in.csv"
    history.write_text(
        "task_id,arrival_time,agent_id,task_type,duration_s,tokens\n"
        "t1,2020-01-01T00:00:00Z,old-agent,text,2.0,100\n"
        "t2,2020-01-02T00:00:00Z,old-agent,text,-1,100\n"
        "t3,2020-01-03T00:00:00Z,old-agent,video,3.0,300\n"
    )
    code, output = invoke("history", "import", str(history), "--url", url)
    assert code == 1
    assert "row 2: duration_s" in output and "nothing written" in output

    code, output = invoke("history", "import", str(history), "--skip-bad-rows", "--url", url)
    assert code == 0, output
    assert "imported 2 rows" in output and "1 rejected" in output
    assert "rejected row 2: duration_s" in output
    assert "history-only" in output and "old-agent" in output

    out = tmp_path / "out.parquet"
    code, output = invoke("history", "export", str(out), "--since", "2020-01-02", "--url", url)
    assert code == 0, output
    assert "exported 1 rows" in output
    import pandas as pd

    assert pd.read_parquet(out)["task_id"].tolist() == ["t3"]

    code, output = invoke("history", "prune", "--older-than", "90d", "--url", url)
    assert code == 0, output
    assert "pruned 2 tasks" in output
    store = Store.open(url)
    assert store.count_outcomes() == 0
    store.close()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_history_import_of_a_true_false_attribute_some_rows_lack(
    url: str, tmp_path: Path, suffix: str
) -> None:
    import pandas as pd

    from agentlb.history import validate_history

    cached = [True, None, False, None, True, False]
    frame = pd.DataFrame(
        {
            "task_id": [f"t{i}" for i in range(6)],
            "arrival_time": [1_700_000_000.0 + 60 * i for i in range(6)],
            "agent_id": "a1",
            "task_type": "text",
            "duration_s": [1.0 + i for i in range(6)],
            "cached": pd.Series(cached, dtype=object),
        }
    )
    history = tmp_path / f"in{suffix}"
    frame.to_csv(history, index=False) if suffix == ".csv" else frame.to_parquet(history, index=False)

    code, output = invoke("history", "import", str(history), "--url", url)

    assert code == 0, output
    assert "imported 6 rows" in output
    store = Store.open(url)
    try:
        clean = validate_history(store.history_frame()).frame
    finally:
        store.close()
    assert clean["cached"].dtype == "boolean"
    assert clean["cached"].tolist() == [pd.NA if v is None else v for v in cached]


def test_history_import_of_a_missing_file_fails_clearly(url: str, tmp_path: Path) -> None:
    code, output = invoke("history", "import", str(tmp_path / "nope.csv"), "--url", url)
    assert code == 1
    assert "not found" in output


def test_prune_needs_a_duration(url: str) -> None:
    code, output = invoke("history", "prune", "--older-than", "soon", "--url", url)
    assert code != 0
    assert "duration" in output


def test_history_export_keeps_live_outcomes(url: str, tmp_path: Path) -> None:
    store = Store.open(url)
    store.record_outcome(TaskOutcome("a1", 1.5, True, "live-1", "text"), 1_000_000.0)
    store.close()
    out = tmp_path / "out.csv"
    code, output = invoke("history", "export", str(out), "--url", url)
    assert code == 0, output
    assert "live-1" in out.read_text()


def test_bench_store_counts_every_write() -> None:
    code, output = invoke(
        "bench-store", "--writers", "2", "--outcomes", "20", "--latency-samples", "10", "--json"
    )
    assert code == 0, output
    record = json.loads(output)
    assert record["rows_stored"] == record["rows_expected"] == 50
    assert record["writes_per_s"] > 0
