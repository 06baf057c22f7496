"""1,000 concurrent clients over real HTTP (uvicorn subprocess, loopback) doing
select → update-performance cycles for a bounded time. Afterwards nothing is in flight, every
acknowledged outcome is in the database exactly once, and /statistics adds up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_helpers import OUTCOME, SELECT, STATS, Server, register_fleet, sqlite_url
from sqlalchemy import create_engine, text

CLIENTS = 1000
DURATION_S = 12.0
LOAD_FLEET = [
    {"id": f"worker-{i}", "name": f"Worker {i}", "capabilities": ["general"], "max_concurrency": 200}
    for i in range(8)
]


class Tally:
    def __init__(self) -> None:
        self.selected = 0
        self.acknowledged: dict[str, tuple[str, float, bool]] = {}
        self.errors: list[str] = []
        self.requests = 0


async def _client(http: httpx.AsyncClient, worker: int, stop_at: float, tally: Tally) -> None:
    cycle = 0
    while time.monotonic() < stop_at:
        task_id = f"c{worker}-{cycle}"
        cycle += 1
        tally.requests += 1
        chosen = await http.post(
            SELECT,
            json={
                "task_type": ("short", "long")[cycle % 2],
                "required_capabilities": ["general"],
                "task_id": task_id,
                "task_requirements": {"size": cycle % 7},
            },
        )
        if chosen.status_code != 200:
            tally.errors.append(f"select {chosen.status_code}: {chosen.text[:200]}")
            return
        tally.selected += 1
        agent_id = chosen.json()["selected_agent_id"]
        duration = 0.5 + (worker % 10) / 10
        success = cycle % 9 != 0
        tally.requests += 1
        done = await http.post(
            OUTCOME,
            json={"agent_id": agent_id, "task_id": task_id, "task_duration": duration, "success": success},
        )
        if done.status_code != 200:
            tally.errors.append(f"outcome {done.status_code}: {done.text[:200]}")
            return
        tally.acknowledged[task_id] = (agent_id, duration, success)


async def _run_clients(base: str) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        started = time.monotonic()
        stop_at = started + DURATION_S
        await asyncio.gather(*(_client(http, w, stop_at, tally) for w in range(CLIENTS)))
        return tally, time.monotonic() - started


@pytest.mark.slow
def test_thousand_concurrent_clients_lose_nothing(tmp_path: Path, servers: list[Server]) -> None:
    server = Server(tmp_path, log_level="WARNING")
    servers.append(server)
    with httpx.Client(base_url=server.base, timeout=30) as http:
        register_fleet(http, LOAD_FLEET)

    tally, elapsed = asyncio.run(_run_clients(server.base))

    assert not tally.errors, tally.errors[:5]
    assert tally.selected == len(tally.acknowledged)
    assert len(tally.acknowledged) >= CLIENTS, "every client must complete at least one cycle"

    with httpx.Client(base_url=server.base, timeout=30) as http:
        stats: dict[str, Any] = http.get(STATS).json()
    in_flight = {a["agent_id"]: a["active_tasks"] for a in stats["agents"]}
    assert all(count == 0 for count in in_flight.values()), in_flight
    assert stats["total_selections"] == tally.selected
    assert sum(stats["agent_distribution"].values()) == tally.selected
    assert sum(stats["strategy_distribution"].values()) == tally.selected
    failures = sum(1 for _, _, ok in tally.acknowledged.values() if not ok)
    assert sum(a["completed_tasks"] for a in stats["agents"]) == len(tally.acknowledged)
    assert sum(a["failed_tasks"] for a in stats["agents"]) == failures

    engine = create_engine(sqlite_url(tmp_path))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT task_id, agent_id, duration_s, success FROM task_outcomes")
            ).all()
    finally:
        engine.dispose()
    stored = [row[0] for row in rows]
    assert len(stored) == len(set(stored)), "an outcome is stored twice"
    by_id = {row[0]: (row[1], float(row[2]), bool(row[3])) for row in rows}
    assert set(by_id) == set(tally.acknowledged)
    for task_id, expected in tally.acknowledged.items():
        assert by_id[task_id] == expected, task_id

    print(
        f"\n{CLIENTS} concurrent clients for {elapsed:.1f} s: {tally.requests} requests, "
        f"{tally.selected} selections, {len(tally.acknowledged)} acknowledged outcomes "
        f"({len(tally.acknowledged) / elapsed:.0f} cycles/s), 0 lost, 0 duplicated, in flight after: 0"
    )
