"""What sharing the live fleet state through Redis adds to one selection, in process.

The same warmed fleet (`agentlb bench-select`'s) is served by two balancers side by side: one
on the embedded tracker, one on a `SharedTracker` whose every dispatch and outcome goes through
the Redis fleet log (the Lua script that reserves the slot and appends the event, then the
apply of the log up to it). Rounds alternate between the two so the machine's noise falls on
both; the figures are medians over rounds of each round's p50 (and p99).

    .venv/bin/python benchmarks/shared_state.py                       # Redis at 127.0.0.1:6379
    .venv/bin/python benchmarks/shared_state.py --redis-url redis://host:6379/0 --rounds 7

Writes `benchmarks/results/shared_state.json` and its section of docs/benchmarks.md (`agentlb
render-tables` renders it again from the results file).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.cli.core_cmds import TASK_TYPES, load_predictor, warmed_balancer
from agentlb.domain import TaskOutcome, TaskRequest
from agentlb.generated_docs import write_sections_of
from agentlb.replication import SharedCounters, SharedTracker, export_state, import_state
from agentlb.replication.bench_docs import render_shared_state
from agentlb.replication.redis_log import Extras, RedisFleetLog
from agentlb.tracker import AgentLoadTracker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "shared_state.json"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[min(int(len(samples) * 0.99), len(samples) - 1)]


def measure(balancer: Balancer, strategy: str, iterations: int) -> dict[str, float]:
    """p50/p99 µs of a selection (dispatch included) and of its outcome report."""
    select_us: list[float] = []
    outcome_us: list[float] = []
    for i in range(iterations):
        task = TaskRequest(task_type=TASK_TYPES[i % 4], requirements={"complexity": "high", "tokens": 512})
        start = time.perf_counter_ns()
        result = balancer.select(task, strategy)
        middle = time.perf_counter_ns()
        balancer.report(TaskOutcome(result.selected_agent.id, 1.0, True, task.task_id, task.task_type))
        end = time.perf_counter_ns()
        select_us.append((middle - start) / 1000.0)
        outcome_us.append((end - middle) / 1000.0)
    s50, s99 = _percentiles(select_us)
    o50, o99 = _percentiles(outcome_us)
    return {"select_p50_us": s50, "select_p99_us": s99, "outcome_p50_us": o50, "outcome_p99_us": o99}


def shared_balancer(embedded: Balancer, redis_url: str, prefix: str) -> tuple[Balancer, RedisFleetLog]:
    """A balancer on a SharedTracker that founds the shared state from `embedded`'s state."""
    plain = embedded.tracker
    tracker = SharedTracker(plain.clock, plain.config)

    def rebuild() -> AgentLoadTracker:
        fresh = AgentLoadTracker(plain.clock, plain.config)
        import_state(fresh, export_state(plain))
        return fresh

    balancer = Balancer(tracker, embedded.predictor, BalancerConfig(slow_start_window_s=0), seed=0)
    log = RedisFleetLog(
        redis_url,
        prefix,
        tracker,
        SharedCounters(),
        Extras(lambda: {}, lambda _e: None),
        rebuild,
        checkpoint_interval_s=3600,
    )
    tracker.attach(log)
    log.start()
    return balancer, log


def run(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    ref = load_predictor("heuristic")
    floor = redis_round_trip_us(args.redis_url)
    records = []
    for size in args.agents:
        embedded = warmed_balancer(size, ref)
        prefix = f"agentlb-bench-{uuid.uuid4().hex[:8]}"
        shared, log = shared_balancer(embedded, args.redis_url, prefix)
        try:
            rounds: dict[str, list[dict[str, float]]] = {"embedded": [], "redis": []}
            for _ in range(args.rounds):
                rounds["embedded"].append(measure(embedded, args.strategy, args.iterations))
                rounds["redis"].append(measure(shared, args.strategy, args.iterations))
            record: dict[str, Any] = {"agents": size, "strategy": args.strategy}
            for mode, results in rounds.items():
                for key in results[0]:
                    record[f"{mode}_{key}"] = round(statistics.median(r[key] for r in results), 1)
            record["select_p50_added_us"] = round(
                record["redis_select_p50_us"] - record["embedded_select_p50_us"], 1
            )
            record["outcome_p50_added_us"] = round(
                record["redis_outcome_p50_us"] - record["embedded_outcome_p50_us"], 1
            )
            records.append(record)
        finally:
            log.close()
            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match="{" + prefix + "}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    return {
        "command": "benchmarks/shared_state.py "
        + f"--agents {','.join(map(str, args.agents))} --rounds {args.rounds} --iterations {args.iterations}",
        "redis_url": args.redis_url,
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "redis_round_trip_p50_us": floor,
        "records": records,
    }


def redis_round_trip_us(url: str, n: int = 2000) -> dict[str, float]:
    """The floor under any shared-state cost: a PING and a trivial script, p50 µs."""
    import redis

    client = redis.Redis.from_url(url)
    script = client.register_script("return 1")
    samples: dict[str, list[float]] = {"ping": [], "evalsha": []}
    for _ in range(n):
        start = time.perf_counter_ns()
        client.ping()
        middle = time.perf_counter_ns()
        script()
        samples["ping"].append((middle - start) / 1000.0)
        samples["evalsha"].append((time.perf_counter_ns() - middle) / 1000.0)
    client.close()
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--agents", type=lambda v: [int(x) for x in v.split(",")], default=[10, 100])
    parser.add_argument("--strategy", default="hybrid")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    document = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(render_shared_state(document))
    write_sections_of(ROOT, RESULTS)


if __name__ == "__main__":
    main()
