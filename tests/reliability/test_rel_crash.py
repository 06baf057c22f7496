"""SIGKILL the real server during a burst of selections and outcome writes, restart it on the same
database: every acknowledged outcome is there, and the in-flight counts it rebuilt equal what the
clients know is still open (requests cut off by the kill are resolved against the database)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from reliability_helpers import OUTCOME, SELECT, STATS, Server, register_fleet, sqlite_url

from agentlb.store import Store

WORKERS = 48
TARGET_ACKNOWLEDGED = 400
CRASH_FLEET = [
    {"id": f"crash-{i}", "name": f"Crash {i}", "capabilities": ["work"], "max_concurrency": 500}
    for i in range(4)
]


@dataclass
class Ledger:
    """What the clients know: acknowledged outcomes, tasks left open, and requests the kill cut."""

    acknowledged: dict[str, tuple[str, float, bool]] = field(default_factory=dict)
    open_tasks: dict[str, str] = field(default_factory=dict)  # task id -> agent
    cut_selects: set[str] = field(default_factory=set)
    cut_outcomes: dict[str, str] = field(default_factory=dict)  # task id -> agent


async def _worker(http: httpx.AsyncClient, worker: int, ledger: Ledger, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        task_id = f"k{worker}-{i}"
        i += 1
        try:
            chosen = await http.post(SELECT, json={"task_type": "burst", "task_id": task_id})
        except httpx.TransportError:
            ledger.cut_selects.add(task_id)
            return
        assert chosen.status_code == 200, chosen.text
        agent_id = chosen.json()["selected_agent_id"]
        if i % 4 == 0:  # leave every fourth task running
            ledger.open_tasks[task_id] = agent_id
            continue
        outcome = {
            "agent_id": agent_id,
            "task_id": task_id,
            "task_duration": 0.5 + i % 5,
            "success": i % 6 != 0,
        }
        try:
            done = await http.post(OUTCOME, json=outcome)
        except httpx.TransportError:
            ledger.cut_outcomes[task_id] = agent_id
            return
        assert done.status_code == 200, done.text
        ledger.acknowledged[task_id] = (agent_id, outcome["task_duration"], outcome["success"])


async def _burst_then_kill(server: Server) -> Ledger:
    ledger = Ledger()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=WORKERS)
    async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=30) as http:
        workers = [asyncio.create_task(_worker(http, w, ledger, stop)) for w in range(WORKERS)]
        deadline = time.monotonic() + 40
        while len(ledger.acknowledged) < TARGET_ACKNOWLEDGED and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        server.kill()  # SIGKILL while requests are in the air
        stop.set()
        await asyncio.gather(*workers)
    return ledger


@pytest.mark.slow
def test_sigkill_during_outcome_burst_loses_nothing_and_rebuilds_in_flight(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server(tmp_path, log_level="WARNING")
    servers.append(server)
    with httpx.Client(base_url=server.base, timeout=30) as http:
        register_fleet(http, CRASH_FLEET)
    ledger = asyncio.run(_burst_then_kill(server))
    assert len(ledger.acknowledged) >= TARGET_ACKNOWLEDGED, server.output()[-3000:]

    # Resolve what the kill cut off against the database, then derive the expected in-flight counts.
    still_open = dict(ledger.open_tasks)  # task id -> agent, as the database must rebuild it
    store = Store.open(sqlite_url(tmp_path))
    try:
        for task_id, (agent_id, duration, success) in ledger.acknowledged.items():
            stored = store.get_outcome(task_id)
            assert stored is not None, f"acknowledged outcome {task_id} lost"
            assert (stored.agent_id, stored.duration_s, stored.success) == (agent_id, duration, success)
        for task_id, agent_id in ledger.open_tasks.items():
            dispatch = store.get_dispatch(task_id)
            assert dispatch is not None and dispatch.agent_id == agent_id, task_id
        committed_in_cut = 0
        for task_id, agent_id in ledger.cut_outcomes.items():
            if store.get_outcome(task_id) is None:
                still_open[task_id] = agent_id
            else:
                committed_in_cut += 1
        for task_id in ledger.cut_selects:
            dispatch = store.get_dispatch(task_id)
            if dispatch is not None and store.get_outcome(task_id) is None:
                still_open[task_id] = dispatch.agent_id
        total_outcomes = store.count_outcomes()
    finally:
        store.close()
    assert total_outcomes == len(ledger.acknowledged) + committed_in_cut

    restarted = Server(tmp_path, log_level="WARNING")
    servers.append(restarted)
    with httpx.Client(base_url=restarted.base, timeout=30) as http:
        stats = http.get(STATS).json()
        rebuilt = {a["agent_id"]: a["active_tasks"] for a in stats["agents"]}
        expected = Counter(still_open.values())
        assert rebuilt == {a["id"]: expected.get(a["id"], 0) for a in CRASH_FLEET}
        # Every task still open can be closed after the restart; then nothing is in flight.
        for task_id, agent_id in still_open.items():
            done = http.post(OUTCOME, json={"agent_id": agent_id, "task_id": task_id, "task_duration": 1.0})
            assert done.status_code == 200 and done.json()["closed_dispatch"] is True, done.text
        after = http.get(STATS).json()
    assert sum(a["active_tasks"] for a in after["agents"]) == 0
    print(
        f"\nSIGKILL after {len(ledger.acknowledged)} acknowledged outcomes ({WORKERS} writers): "
        f"0 lost; {len(ledger.open_tasks)} open tasks + {len(ledger.cut_outcomes)} cut outcomes + "
        f"{len(ledger.cut_selects)} cut selections resolved; "
        f"in flight rebuilt exactly: {sum(rebuilt.values())}"
    )
