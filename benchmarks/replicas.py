"""Replicated serving over HTTP: select throughput with 1 and 2 replicas behind one HAProxy
front, a Redis-backed replica against the embedded mode, and decision quality through 1 and 2
replicas on one emulated task stream.

    make bench-replicas                           # installs wrk and HAProxy, runs both parts
    nice -n 10 .venv/bin/python benchmarks/replicas.py                # both parts, ~10 minutes
    .venv/bin/python benchmarks/replicas.py --part throughput --rounds 3 --duration 10

Every configuration starts from nothing: a PostgreSQL database and a Redis key prefix of its
own (dropped and deleted afterwards), real `agentlb serve` processes (through `agentlb.cluster`,
the code of `agentlb cluster`), the fleet registered and warmed through the API.

Throughput (wrk, select only, `--connections` connections, the body and the 100-agent fleet of
load_test.py; tasks never reported expire after 2 s, standing in for their completion):
`embedded` is one `agentlb serve` without Redis on its PostgreSQL database; `redis x1 direct`
one replica with Redis, addressed directly; `front x1` the same replica through HAProxy;
`front x2` two replicas through HAProxy. The configurations alternate within every round (the
order reversed every other round) and the figures are medians over rounds.

Decision quality: the `surveillance` scenario's task stream (examples/fleet.yaml, load 0.75 of
the fleet's capacity) played in real time scaled by `--time-scale`: each task is selected at
its arrival through the front, waits for a slot of the chosen emulated agent (its
`max_concurrency` slots, FIFO beyond them), runs for the simulator's service time on that agent,
and its outcome is reported through the front (so often to the other replica). The figure is
the mean sojourn (arrival to completion, simulated seconds) of the agents the balancer chose,
replayed on the simulated clock (FIFO slots per agent, the simulator's service times): the
decision quality alone, which the machine's load cannot blur (the wall-clock sojourn, recorded
too, moves with it). 1 and 2 replicas alternate, same stream and seed.

Writes `benchmarks/results/replicas.json` and its section of docs/benchmarks.md (`agentlb
render-tables` renders it again from the results file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from load_test import raise_fd_limit, run_wrk, warm, wrk_script

from agentlb.cluster import Cluster, ClusterSpec, default_template, find_haproxy
from agentlb.cluster.supervisor import free_port
from agentlb.generated_docs import write_sections_of
from agentlb.replication.bench_docs import THROUGHPUT_CONFIGS, render_replicas

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "replicas.json"
FLEET_FILE = Path(__file__).resolve().parents[1] / "examples" / "fleet.yaml"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
IN_FLIGHT_EXPIRY_S = 2.0


# --- throw-away database, Redis prefix and processes -------------------------------------------
@contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"agentlb_bench_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def own_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"agentlb-bench-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLB_")}
    env.update(
        {
            "AGENTLB_HOME": str(home),
            "AGENTLB_MODEL_POLL_INTERVAL_S": "0",
            "AGENTLB_MODEL_COMPILE": "false",
            "AGENTLB_SEED": "7",
        }
    )
    return env


@contextmanager
def cluster(args: argparse.Namespace, replicas: int, env: dict[str, str]) -> Iterator[Cluster]:
    """`replicas` replicas behind HAProxy on a database and prefix of their own."""
    home = Path(tempfile.mkdtemp(prefix="agentlb-replicas-"))
    with own_database(args.postgres_url) as database_url, own_prefix(args.redis_url) as prefix:
        spec = ClusterSpec(
            replicas=replicas,
            database_url=database_url,
            redis_url=args.redis_url,
            redis_prefix=prefix,
            home=home,
            haproxy=find_haproxy(),
            template=default_template(),
            port=0,
            env={**base_env(home), **env},
        )
        _migrate(home, database_url)
        running = Cluster(spec)
        try:
            running.start()
            yield running
        finally:
            running.stop()
            shutil.rmtree(home, ignore_errors=True)


def _migrate(home: Path, database_url: str, fleet: Path | None = None) -> None:
    """Schema (and the fleet of `fleet`) once, before any replica starts, as `agentlb cluster` does."""
    from agentlb.bootstrap import bootstrap
    from agentlb.settings import load_settings

    if fleet is not None:
        (home / "examples").mkdir(parents=True, exist_ok=True)
        shutil.copy(fleet, home / "examples" / "fleet.yaml")
    bootstrap(load_settings(home=home, database_url=database_url))


@contextmanager
def embedded(args: argparse.Namespace, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """One `agentlb serve` without Redis on a database of its own: (URL, pid)."""
    home = Path(tempfile.mkdtemp(prefix="agentlb-embedded-"))
    with own_database(args.postgres_url) as database_url:
        port = free_port()
        log = (home / "server.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "agentlb", "serve", "--port", str(port)],
            env={**base_env(home), **env, "AGENTLB_DATABASE_URL": database_url},
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    httpx.get(f"{url}/load-balancing/health", timeout=2)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        output = (home / "server.log").read_text()[-2000:]
                        raise SystemExit(f"embedded server did not start: {output}") from None
                    time.sleep(0.2)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
            shutil.rmtree(home, ignore_errors=True)


# --- throughput ----------------------------------------------------------------------------------
def register_fleet(url: str, agents: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        for i in range(agents):
            response = http.post(
                "/load-balancing/agents",
                json={
                    "id": f"agent-{i}",
                    "name": f"Agent {i}",
                    "capabilities": ["video_analysis", "object_detection"],
                    "max_concurrency": 100_000,
                    "weight": 1.0 + (i % 4) / 2,
                },
            )
            if response.status_code != 201:
                raise SystemExit(f"registering agent-{i}: {response.status_code} {response.text}")


def measure(url: str, pid: int, args: argparse.Namespace, script: Path) -> dict[str, float]:
    select = f"{url}/load-balancing/select-agent"
    run_wrk(select, args.connections, 2, script, pid)  # warm-up, discarded
    return run_wrk(select, args.connections, args.duration, script, pid)


def throughput_round(args: argparse.Namespace, order: list[str], script: Path) -> dict[str, dict[str, float]]:
    env = {"AGENTLB_IN_FLIGHT_EXPIRY_S": str(IN_FLIGHT_EXPIRY_S)}
    runs: dict[str, dict[str, float]] = {}
    for group in order:
        if group == "embedded":
            with embedded(args, env) as (url, pid):
                register_fleet(url, args.agents)
                warm(url, args.warm)
                runs["embedded"] = measure(url, pid, args, script)
        elif group == "x1":
            with cluster(args, 1, env) as one:
                register_fleet(one.url, args.agents)
                warm(one.url, args.warm)
                pid = one.replicas[0].process.pid
                direct = f"http://127.0.0.1:{one.replica_ports[0]}"
                runs["redis x1 direct"] = measure(direct, pid, args, script)
                runs["front x1"] = measure(one.url, pid, args, script)
        else:
            with cluster(args, 2, env) as two:
                register_fleet(two.url, args.agents)
                warm(two.url, args.warm)
                runs["front x2"] = measure(two.url, two.replicas[0].process.pid, args, script)
        print(
            f"  {group}: " + ", ".join(f"{k} {v['req_per_s']:.0f} req/s" for k, v in runs.items()), flush=True
        )
    return runs


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    script = wrk_script(Path(tempfile.mkdtemp(prefix="agentlb-wrk-")), "hybrid")
    rounds = []
    for r in range(args.rounds):
        order = ["embedded", "x1", "x2"] if r % 2 == 0 else ["x2", "x1", "embedded"]
        print(f"throughput round {r + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})", flush=True)
        rounds.append({"load_average_1m": os.getloadavg()[0], "runs": throughput_round(args, order, script)})
    medians = {
        name: {
            key: statistics.median(rnd["runs"][name][key] for rnd in rounds)
            for key in ("req_per_s", "p50_ms", "p99_ms")
        }
        for name in THROUGHPUT_CONFIGS
    }
    errors = {
        name: sum(rnd["runs"][name]["socket_errors"] + rnd["runs"][name]["non_2xx"] for rnd in rounds)
        for name in THROUGHPUT_CONFIGS
    }
    per_round_ratio = [
        rnd["runs"]["front x2"]["req_per_s"] / rnd["runs"]["front x1"]["req_per_s"] for rnd in rounds
    ]
    redis_ratio = [
        rnd["runs"]["redis x1 direct"]["req_per_s"] / rnd["runs"]["embedded"]["req_per_s"] for rnd in rounds
    ]
    return {
        "agents": args.agents,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "medians": medians,
        "errors": errors,
        "two_over_one_per_round": per_round_ratio,
        "two_over_one": statistics.median(per_round_ratio),
        "redis_over_embedded_per_round": redis_ratio,
        "redis_over_embedded": statistics.median(redis_ratio),
        "detail": rounds,
    }


# --- decision quality ----------------------------------------------------------------------------
async def post_retrying(
    http: httpx.AsyncClient, path: str, json: dict[str, Any], tries: int = 3
) -> int | str:
    """An outcome report, resent on a transport error as an orchestrator would (a resent outcome
    is harmless); the final status code, or the error's name."""
    for _ in range(tries - 1):
        try:
            return (await http.post(path, json=json)).status_code
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
    try:
        return (await http.post(path, json=json)).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def emulate(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from agentlb.sim.fleet import load_fleet
    from agentlb.sim.scenarios import get_scenario
    from agentlb.sim.simulator import Simulation

    fleet = load_fleet(FLEET_FILE)
    fleet, tasks = get_scenario("surveillance").build(args.seed, args.tasks, fleet=fleet)
    specs = {spec.id: spec for spec in fleet}
    slots = {spec.id: asyncio.Semaphore(spec.agent.max_concurrency) for spec in fleet}
    scale = args.time_scale
    sojourn_s: list[float] = []
    assigned: dict[int, str] = {}  # task index -> the agent the balancer chose
    errors: Counter[str] = Counter()
    served_by: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        start = loop.time() + 0.5

        async def one(task: Any) -> None:
            await asyncio.sleep(max(0.0, start + task.arrival_s * scale - loop.time()))
            arrived = loop.time()
            body: dict[str, Any] = {
                "task_type": task.task_type,
                "required_capabilities": [task.task_type],
                "task_requirements": dict(task.attributes),
                "task_id": task.task_id,
            }
            if task.deadline_s is not None:
                body["deadline_s"] = round(task.deadline_s, 3)
            try:
                chosen = await http.post("/load-balancing/select-agent", json=body)
            except httpx.HTTPError as exc:
                errors[f"select {type(exc).__name__}"] += 1
                return
            if chosen.status_code != 200:
                errors[f"select {chosen.status_code}"] += 1
                return
            served_by[chosen.headers.get("X-Agentlb-Replica", "direct")] += 1
            agent_id = chosen.json()["selected_agent_id"]
            assigned[task.index] = agent_id
            spec = specs[agent_id]
            async with slots[agent_id]:
                service_s = Simulation.service_time(task, spec, task.arrival_s)
                await asyncio.sleep(service_s * scale)
            finished = loop.time()
            reported = await post_retrying(
                http,
                "/load-balancing/update-performance",
                json={
                    "agent_id": agent_id,
                    "task_id": task.task_id,
                    "task_duration": round(service_s, 4),
                    "success": task.failure_draw >= spec.failure_rate,
                    "task_type": task.task_type,
                },
            )
            if reported != 200:
                errors[f"outcome {reported}"] += 1
            sojourn_s.append((finished - arrived) / scale)

        await asyncio.gather(*(one(task) for task in tasks))
    ordered = sorted(sojourn_s)
    replayed = replay(tasks, specs, assigned)
    return {
        "tasks": len(tasks),
        "completed": len(sojourn_s),
        "mean_sojourn_s": statistics.fmean(replayed),
        "p95_sojourn_s": sorted(replayed)[int(0.95 * (len(replayed) - 1))],
        "wall_mean_sojourn_s": statistics.fmean(sojourn_s),
        "wall_p95_sojourn_s": ordered[int(0.95 * (len(ordered) - 1))],
        "errors": dict(errors),
        "served_by": dict(served_by),
    }


def replay(tasks: list[Any], specs: dict[str, Any], assigned: dict[int, str]) -> list[float]:
    """Sojourn of every task on the simulated clock, from the agents the balancer chose: each
    task reaches its agent at its arrival, waits FIFO for one of the agent's slots and runs for
    the simulator's service time there. This is the decision quality alone: the same choices
    give the same figure however slow the shared machine answered meanwhile (the wall-clock
    sojourn, also recorded, includes that)."""
    import heapq

    from agentlb.sim.simulator import Simulation

    free_at: dict[str, list[float]] = {a: [0.0] * s.agent.max_concurrency for a, s in specs.items()}
    sojourn: list[float] = []
    for task in sorted(tasks, key=lambda t: t.arrival_s):
        agent_id = assigned.get(task.index)
        if agent_id is None:
            continue
        slots = free_at[agent_id]
        begin = max(task.arrival_s, heapq.heappop(slots))
        finish = begin + Simulation.service_time(task, specs[agent_id], task.arrival_s)
        heapq.heappush(slots, finish)
        sojourn.append(finish - task.arrival_s)
    return sojourn


def quality(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    for r in range(args.quality_rounds):
        for replicas in (1, 2) if r % 2 == 0 else (2, 1):
            home_fleet = {"AGENTLB_LOG_LEVEL": "WARNING"}
            with cluster_with_fleet(args, replicas, home_fleet) as running:
                result = asyncio.run(emulate(running.url, args))
            result["load_average_1m"] = os.getloadavg()[0]
            runs[str(replicas)].append(result)
            print(
                f"quality round {r + 1}: {replicas} replica(s), "
                f"mean sojourn {result['mean_sojourn_s']:.3f} s, "
                f"errors {result['errors']}, served by {result['served_by']}",
                flush=True,
            )
    means = {k: statistics.median(run["mean_sojourn_s"] for run in v) for k, v in runs.items()}
    return {
        "scenario": "surveillance",
        "tasks": args.tasks,
        "seed": args.seed,
        "time_scale": args.time_scale,
        "rounds": args.quality_rounds,
        "median_mean_sojourn_s": means,
        "two_over_one": means["2"] / means["1"],
        "errors": {k: sum(sum(run["errors"].values()) for run in v) for k, v in runs.items()},
        "runs": runs,
    }


@contextmanager
def cluster_with_fleet(args: argparse.Namespace, replicas: int, env: dict[str, str]) -> Iterator[Cluster]:
    """A cluster whose registry holds examples/fleet.yaml (registered before the replicas start)."""
    home = Path(tempfile.mkdtemp(prefix="agentlb-quality-"))
    with own_database(args.postgres_url) as database_url, own_prefix(args.redis_url) as prefix:
        _migrate(home, database_url, FLEET_FILE)
        running = Cluster(
            ClusterSpec(
                replicas=replicas,
                database_url=database_url,
                redis_url=args.redis_url,
                redis_prefix=prefix,
                home=home,
                haproxy=find_haproxy(),
                template=default_template(),
                port=0,
                env={**base_env(home), **env},
            )
        )
        try:
            running.start()
            yield running
        finally:
            running.stop()
            shutil.rmtree(home, ignore_errors=True)


# --- results -------------------------------------------------------------------------------------
def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("all", "throughput", "quality"), default="all")
    parser.add_argument("--postgres-url", default=os.environ.get("AGENTLB_TEST_POSTGRES_URL") or POSTGRES_URL)
    parser.add_argument("--redis-url", default=os.environ.get("AGENTLB_TEST_REDIS_URL") or REDIS_URL)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--warm", type=int, default=300, help="select+outcome pairs before measuring")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks of the emulated stream")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.25, help="real seconds per simulated second")
    parser.add_argument("--quality-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.part != "quality" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make wrk` installs it (apt-get install -y wrk)")
    raise_fd_limit()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwinds like Ctrl-C: every
    # cluster, database and Redis prefix this run made is stopped, dropped and deleted
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    document: dict[str, Any] = (
        json.loads(args.out.read_text()) if args.out.exists() and args.part != "all" else {}
    )
    command = "nice -n 10 .venv/bin/python benchmarks/replicas.py " + " ".join(sys.argv[1:])
    parts = {"throughput": throughput, "quality": quality}
    for name, run in parts.items():
        if args.part in ("all", name):
            started = {
                "command": command,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "cpus": os.cpu_count(),
                "uptime_before": uptime(),
            }
            document[name] = {**started, **run(args), "uptime_after": uptime()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(render_replicas(document))
    write_sections_of(ROOT, args.out)


if __name__ == "__main__":
    main()
