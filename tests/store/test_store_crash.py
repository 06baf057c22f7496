"""Durability at the store level: a writer process killed with SIGKILL loses no outcome whose
record_outcome call had returned. (The same check through the HTTP service is the lead's
process test.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from agentlb.store import Store

WRITER = """
import sys, time
from agentlb.domain import TaskOutcome
from agentlb.store import Store
store = Store.open(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    store.record_outcome(TaskOutcome("agent-0", 1.0 + i % 3, True, f"crash-{i}"), time.time())
    print(f"crash-{i}", flush=True)  # acknowledged only after the commit returned
    i += 1
"""


@pytest.mark.slow
def test_acknowledged_outcomes_survive_sigkill(db_url: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    acknowledged: list[str] = []
    try:
        assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
        deadline = time.monotonic() + 20
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            line = process.stdout.readline().strip()
            if not line:
                break
            acknowledged.append(line)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert len(acknowledged) >= 50, "the writer did not get going"
    store = Store.open(db_url)
    try:
        missing = [task_id for task_id in acknowledged if store.get_outcome(task_id) is None]
        assert missing == []
    finally:
        store.close()
