"""Replicas for the tests: real `agentlb serve` processes on one PostgreSQL database of the
test's own and one Redis key prefix of its own, and clients that drive select → outcome
cycles over them while keeping their own tally."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from live_server import BIN, ServerProcess, server_env
from postgres_support import postgres_url, psycopg_dsn

SELECT = "/load-balancing/select-agent"
OUTCOME = "/load-balancing/update-performance"
REPLICATION = "/load-balancing/replication"


class Database:
    """A PostgreSQL database of the test's own (created, then dropped: only this one)."""

    def __init__(self) -> None:
        admin = postgres_url()
        assert admin is not None
        self.admin_url = admin
        self.name = f"agentlb_repl_{uuid.uuid4().hex[:12]}"
        self.url = f"{admin.rsplit('/', 1)[0]}/{self.name}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(psycopg_dsn(self.admin_url), autocommit=True, connect_timeout=5)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(psycopg_dsn(self.url), connect_timeout=5) as conn:
            return list(conn.execute(sql).fetchall())

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,)
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')


class Cluster:
    """Replicas of one fleet: `start(n)` more of them, `kill(i)` one (SIGKILL)."""

    def __init__(self, home: Path, database_url: str, redis_url: str, prefix: str, **env: str) -> None:
        self.home = home
        self.env = {
            "AGENTLB_DATABASE_URL": database_url,
            "AGENTLB_REDIS_URL": redis_url,
            "AGENTLB_REDIS_PREFIX": prefix,
            "AGENTLB_LOG_LEVEL": "WARNING",
            **env,
        }
        self.replicas: list[ServerProcess] = []

    def start(self, count: int = 1) -> list[ServerProcess]:
        started = []
        for _ in range(count):
            home = self.home / f"replica-{len(self.replicas)}"
            home.mkdir(parents=True, exist_ok=True)
            replica = ServerProcess([str(BIN / "agentlb"), "serve"], home, server_env(home, **self.env))
            self.replicas.append(replica)
            started.append(replica)
        return started

    def alive(self) -> list[ServerProcess]:
        return [r for r in self.replicas if r.process.poll() is None]

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.stop()

    def register_agents(self, count: int, max_concurrency: int) -> list[str]:
        ids = [f"agent-{i:02d}" for i in range(count)]
        base = self.alive()[0].base
        for agent_id in ids:
            body = {
                "id": agent_id,
                "name": agent_id,
                "capabilities": ["text"],
                "max_concurrency": max_concurrency,
            }
            response = httpx.post(f"{base}/load-balancing/agents", json=body, timeout=10)
            assert response.status_code in (200, 201), response.text
        return ids

    def replication(self, replica: ServerProcess, state: bool = False) -> dict[str, Any]:
        response = httpx.get(f"{replica.base}{REPLICATION}", params={"state": state}, timeout=10)
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info

    def wait_converged(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Every live replica at the same log position with the same state digest."""
        deadline = time.monotonic() + timeout_s
        while True:
            infos = [self.replication(r) for r in self.alive()]
            same = len({(i["epoch"], i["seq"], i["state_digest"]) for i in infos}) == 1
            if (same and all(i["live"] for i in infos)) or time.monotonic() > deadline:
                return infos
            time.sleep(0.1)


@dataclass
class Tally:
    """What the clients saw: selections per agent, their own in-flight count per agent (and
    the most ever seen), acknowledged outcomes, errors by replica."""

    selections: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, str] = field(default_factory=dict)  # task id -> agent
    errors: list[str] = field(default_factory=list)
    cycles: int = 0
    other_replica_outcomes: int = 0


async def drive(
    bases: list[str] | Any,
    cycles: int,
    clients: int,
    tally: Tally,
    seed: int = 1,
    hold_s: float = 0.02,
) -> None:
    """`clients` concurrent clients run `cycles` select → outcome cycles in all; each picks a
    replica at random for the selection and again for the outcome. `bases` may be a callable
    returning the replicas to use now (a replica killed mid-run is dropped from it)."""
    rng = random.Random(seed)
    remaining = [cycles]
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)

    def targets() -> list[str]:
        return list(bases()) if callable(bases) else list(bases)

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one_client() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                select_at = rng.choice(targets())
                task_type = rng.choice(["summarise", "translate"])
                try:
                    response = await client.post(f"{select_at}{SELECT}", json={"task_type": task_type})
                except httpx.TransportError as exc:
                    tally.errors.append(f"select {select_at}: {type(exc).__name__}")
                    continue
                if response.status_code != 200:
                    tally.errors.append(f"select {select_at}: {response.status_code} {response.text[:200]}")
                    continue
                body = response.json()
                agent, task_id = body["selected_agent_id"], body["task_id"]
                tally.selections[agent] += 1
                tally.in_flight[agent] += 1
                tally.peak[agent] = max(tally.peak[agent], tally.in_flight[agent])
                await asyncio.sleep(rng.random() * hold_s)
                tally.in_flight[agent] -= 1
                outcome = {
                    "agent_id": agent,
                    "task_id": task_id,
                    "task_duration": round(0.5 + rng.random() * 5, 3),
                    "success": rng.random() < 0.95,
                }
                for _attempt in range(20):  # an outcome is retried until acknowledged
                    report_at = rng.choice(targets())
                    try:
                        reply = await client.post(f"{report_at}{OUTCOME}", json=outcome)
                    except httpx.TransportError as exc:
                        tally.errors.append(f"outcome {report_at}: {type(exc).__name__}")
                        continue
                    if reply.status_code == 200:
                        tally.acknowledged[task_id] = agent
                        tally.other_replica_outcomes += int(report_at != select_at)
                        break
                    tally.errors.append(f"outcome {report_at}: {reply.status_code} {reply.text[:200]}")
                tally.cycles += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
