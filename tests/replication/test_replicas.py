"""Replicated serving end to end: real `agentlb serve` replicas on one PostgreSQL database and
one Redis, driven over HTTP by many concurrent clients (issue 16)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from replica_support import Cluster, Database, Tally, drive

from redis_support import (
    PrivateRedis,
    delete_prefix,
    redis_server_available,
    unique_prefix,
)

pytestmark = pytest.mark.slow

AGENTS = 40
MAX_CONCURRENCY = 3  # 120 slots for 100 clients: a client never needs to go over a limit
CLIENTS = 100
CYCLES = 1000


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not redis_server_available():
        pytest.skip("redis-server is not installed: the outage test stops a Redis of its own")
    server = PrivateRedis(tmp_path)
    yield server
    server.kill()


def _statistics(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/load-balancing/statistics", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _check_stored_once(database: Database, tally: Tally) -> None:
    rows = database.query("SELECT task_id, agent_id FROM task_outcomes")
    stored = dict(rows)
    assert len(rows) == len(stored)  # once each
    missing = set(tally.acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged outcomes not stored"
    assert all(stored[t] == a for t, a in tally.acknowledged.items())


def _check_equal_statistics(cluster: Cluster) -> dict[str, Any]:
    stats = [_statistics(r.base) for r in cluster.alive()]
    for other in stats[1:]:
        assert other == stats[0]
    assert all(a["active_tasks"] == 0 for a in stats[0]["agents"])
    return stats[0]


def test_three_replicas_hold_capacity_and_agree(
    tmp_path: Path, database: Database, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    cluster = Cluster(tmp_path, database.url, url, prefix)
    try:
        cluster.start(3)
        cluster.register_agents(AGENTS, MAX_CONCURRENCY)
        tally = Tally()
        started = time.monotonic()
        asyncio.run(drive([r.base for r in cluster.replicas], CYCLES, CLIENTS, tally, seed=7))
        elapsed = time.monotonic() - started
        assert not tally.errors, tally.errors[:10]
        assert tally.cycles == CYCLES and len(tally.acknowledged) == CYCLES
        assert tally.other_replica_outcomes > CYCLES / 2  # most outcomes at another replica
        over = {a: n for a, n in tally.peak.items() if n > MAX_CONCURRENCY}
        assert not over, f"agents over max_concurrency by the clients' tally: {over}"
        _check_stored_once(database, tally)

        # the other mutations, each made at one replica, reach every replica
        first, second, third = (r.base for r in cluster.replicas)
        weights = {"weighted_round_robin": 0.5, "predictive": 0.5}
        assert (
            httpx.post(f"{first}/load-balancing/configure-weights", json={"weights": weights}).status_code
            == 200
        )
        beat = {"cpu_usage": 42.0, "memory_usage": 17.5, "queue_length": 2}
        assert httpx.post(f"{second}/load-balancing/agents/agent-00/heartbeat", json=beat).status_code == 200
        assert (
            httpx.patch(f"{third}/load-balancing/agents/agent-01", json={"max_concurrency": 5}).status_code
            == 200
        )

        infos = cluster.wait_converged()
        assert len({(i["seq"], i["state_digest"]) for i in infos}) == 1, infos
        stats = _check_equal_statistics(cluster)
        assert stats["hybrid_weights"]["predictive"] == 0.5
        by_id = {a["agent_id"]: a for a in stats["agents"]}
        assert by_id["agent-00"]["cpu_usage"] == 42.0
        assert stats["total_selections"] == CYCLES
        assert stats["agent_distribution"] == dict(tally.selections)
        assert sum(a["completed_tasks"] + a["failed_tasks"] for a in stats["agents"]) == CYCLES

        # exact convergence: the whole state, field by field
        states = [cluster.replication(r, state=True)["state"] for r in cluster.replicas]
        assert states[0]["tracker"]["agents"], "no agents in the replicated state"
        agent_01 = next(a for a in states[0]["tracker"]["agents"] if a["agent"]["id"] == "agent-01")
        assert agent_01["agent"]["max_concurrency"] == 5
        for other in states[1:]:
            assert other == states[0]
        client = redis.Redis.from_url(url)
        slot_keys = list(client.scan_iter(match="{" + prefix + "}:slots:*"))
        assert all(client.scard(k) == 0 for k in slot_keys)
        client.close()
        print(f"{CYCLES} cycles from {CLIENTS} clients over 3 replicas in {elapsed:.1f} s")
    finally:
        cluster.stop_all()


def test_redis_outage_keeps_serving_and_replicas_resync(
    tmp_path: Path, database: Database, private_redis: PrivateRedis
) -> None:
    prefix = unique_prefix("outage")
    cluster = Cluster(tmp_path, database.url, private_redis.url, prefix)
    try:
        cluster.start(2)
        cluster.register_agents(10, 4)
        before = Tally()
        asyncio.run(drive([r.base for r in cluster.replicas], 100, 20, before, seed=1))
        assert not before.errors

        private_redis.kill()
        during = Tally()
        asyncio.run(drive([r.base for r in cluster.replicas], 200, 20, during, seed=2))
        assert not during.errors, during.errors[:10]  # selections and outcomes go on
        health = httpx.get(f"{cluster.replicas[0].base}/load-balancing/health", timeout=10).json()
        assert health["status"] == "degraded"
        assert any("shared fleet state unavailable" in r and "Redis" in r for r in health["reasons"])
        _check_stored_once(database, during)  # outcomes still committed to PostgreSQL

        private_redis.start()  # empty: it lost every key
        infos = cluster.wait_converged(timeout_s=30)
        assert all(i["live"] for i in infos), infos
        assert len({(i["epoch"], i["seq"], i["state_digest"]) for i in infos}) == 1, infos
        after = Tally()
        asyncio.run(drive([r.base for r in cluster.replicas], 100, 20, after, seed=3))
        assert not after.errors, after.errors[:10]
        infos = cluster.wait_converged()
        assert len({(i["seq"], i["state_digest"]) for i in infos}) == 1, infos
        _check_equal_statistics(cluster)
        health = httpx.get(f"{cluster.replicas[1].base}/load-balancing/health", timeout=10).json()
        assert not any("shared fleet state" in r for r in health["reasons"]), health
    finally:
        cluster.stop_all()
        delete_prefix(private_redis.url, prefix)


def test_replica_killed_under_load_then_restarted(
    tmp_path: Path, database: Database, shared_redis: tuple[str, str]
) -> None:
    url, prefix = shared_redis
    cluster = Cluster(tmp_path, database.url, url, prefix, AGENTLB_REDIS_CHECKPOINT_INTERVAL_S="1")
    try:
        cluster.start(3)
        cluster.register_agents(20, 4)
        victim = cluster.replicas[2]
        survivors = cluster.replicas[:2]
        killed = [False]

        def targets() -> list[str]:
            return [r.base for r in (survivors if killed[0] else cluster.replicas)]

        # tasks selected at the victim and still running when it dies
        orphans: list[dict[str, Any]] = []
        for _ in range(5):
            body = httpx.post(f"{victim.base}/load-balancing/select-agent", json={"task_type": "t"}).json()
            orphans.append(body)

        async def run() -> Tally:
            tally = Tally()
            load = asyncio.create_task(drive(targets, 600, 40, tally, seed=5))
            await asyncio.sleep(1.0)
            victim.kill()
            killed[0] = True
            await load
            return tally

        tally = asyncio.run(run())
        survivor_bases = {r.base for r in survivors}
        survivor_errors = [e for e in tally.errors if e.split(" ")[1] in survivor_bases]
        assert not survivor_errors, survivor_errors[:10]
        assert len(tally.acknowledged) == tally.cycles  # every cycle's outcome acknowledged

        # the dead replica's in-flight tasks still count, and close at another replica
        stats = _statistics(survivors[0].base)
        assert sum(a["active_tasks"] for a in stats["agents"]) == len(orphans)
        for i, body in enumerate(orphans):
            outcome = {
                "agent_id": body["selected_agent_id"],
                "task_id": body["task_id"],
                "task_duration": 1.0,
            }
            reply = httpx.post(
                f"{survivors[i % 2].base}/load-balancing/update-performance",
                json={**outcome, "success": True},
            )
            assert reply.status_code == 200 and reply.json()["closed_dispatch"], reply.text
            tally.acknowledged[body["task_id"]] = body["selected_agent_id"]
        _check_stored_once(database, tally)
        cluster.wait_converged()
        _check_equal_statistics(cluster)

        # a replica down for a while comes back and converges to the others' state
        time.sleep(1.5)  # a checkpoint is written meanwhile: it loads that, then the log
        cluster.start(1)
        late = Tally()
        asyncio.run(drive([r.base for r in cluster.alive()], 100, 10, late, seed=9))
        assert not late.errors, late.errors[:10]
        infos = cluster.wait_converged()
        assert len({(i["seq"], i["state_digest"]) for i in infos}) == 1, infos
        assert len(infos) == 3
        _check_equal_statistics(cluster)
    finally:
        cluster.stop_all()
