"""Outcome-write benchmark: what the store costs a request, and how many writes/s it takes.

Two phases on a scratch database: one writer timing each committed dispatch and outcome
write (the latency a request pays), then N writer threads recording outcomes as fast as
they can (throughput), checked afterwards for lost or duplicated rows.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from agentlb.domain import Agent, AgentLoadMetrics, PredictedCompletion, SelectionResult, TaskOutcome
from agentlb.errors import BenchmarkLimitError
from agentlb.features import AGENT_STATE_FEATURES
from agentlb.store.repository import Store
from agentlb.store.scratch import scratch_database

TASK_TYPES = ("video_analysis", "object_detection", "prompt_generation", "text_analysis")


def synthetic_selection(task_id: str, agent: Agent, i: int, now: float) -> SelectionResult:
    """A selection shaped like the balancer's, with every logged field filled."""
    task_type = TASK_TYPES[i % len(TASK_TYPES)]
    features: dict[str, Any] = {name: float(i % 7) for name in AGENT_STATE_FEATURES}
    features.update({"task_type": task_type, "complexity": "high", "tokens": 512})
    return SelectionResult(
        task_id=task_id,
        selected_agent=agent,
        strategy_used="hybrid",
        confidence_score=0.8,
        load_metrics=AgentLoadMetrics(agent.id, agent.name),
        selection_reason="benchmark",
        predicted_completion=PredictedCompletion(3.0, 6.0, 2.5, 5.0, 0.5),
        model_version="bench",
        dispatch_features=features,
        task_type=task_type,
        task_attributes={"complexity": "high", "tokens": 512},
        dispatched_at=now,
    )


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def run_store_bench(
    url: str | None,
    writers: int = 8,
    outcomes_per_writer: int = 1000,
    latency_samples: int = 500,
    sqlite_synchronous: str = "NORMAL",
) -> dict[str, Any]:
    """Run both phases on a scratch database next to `url` (a temp SQLite file when None)."""
    if not 1 <= writers <= 64:
        raise BenchmarkLimitError(f"--writers must be between 1 and 64, got {writers}")
    if not 1 <= outcomes_per_writer <= 100_000 or not 10 <= latency_samples <= 100_000:
        raise BenchmarkLimitError("--outcomes must be 1..100000 and --latency-samples 10..100000")
    with scratch_database(url, prefix="agentlb_bench") as scratch_url:
        store = Store.open(scratch_url, sqlite_synchronous=sqlite_synchronous)
        try:
            agents = [Agent(id=f"agent-{i}", name=f"Agent {i}") for i in range(writers)]
            for agent in agents:
                store.add_agent(agent)
            dispatch_ms: list[float] = []
            outcome_ms: list[float] = []
            for i in range(latency_samples):
                task_id = f"lat-{i}"
                start = time.perf_counter()
                store.record_dispatch(synthetic_selection(task_id, agents[0], i, time.time()))
                middle = time.perf_counter()
                store.record_outcome(TaskOutcome(agents[0].id, 1.0 + i % 5, True, task_id), time.time())
                dispatch_ms.append((middle - start) * 1000)
                outcome_ms.append((time.perf_counter() - middle) * 1000)

            barrier = threading.Barrier(writers + 1)
            failures: list[Exception] = []

            def write(worker: int) -> None:
                agent_id = agents[worker].id
                barrier.wait()
                try:
                    for j in range(outcomes_per_writer):
                        outcome = TaskOutcome(agent_id, 1.0 + j % 5, j % 10 != 0, f"w{worker}-{j}")
                        store.record_outcome(outcome, time.time())
                except Exception as exc:  # re-raised below: a failed write must fail the run
                    failures.append(exc)

            threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
            for thread in threads:
                thread.start()
            barrier.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
            if failures:
                raise failures[0]
            expected = writers * outcomes_per_writer + latency_samples
            stored = store.count_outcomes()
            return {
                "backend": store.url.get_backend_name(),
                "sqlite_synchronous": sqlite_synchronous if store.is_sqlite else None,
                "writers": writers,
                "outcomes": writers * outcomes_per_writer,
                "elapsed_s": round(elapsed, 3),
                "writes_per_s": round(writers * outcomes_per_writer / elapsed, 1),
                "rows_expected": expected,
                "rows_stored": stored,
                "dispatch_write_p50_ms": round(statistics.median(dispatch_ms), 3),
                "dispatch_write_p99_ms": round(_percentile(dispatch_ms, 0.99), 3),
                "outcome_write_p50_ms": round(statistics.median(outcome_ms), 3),
                "outcome_write_p99_ms": round(_percentile(outcome_ms, 0.99), 3),
            }
        finally:
            store.close()
