"""Shared helpers for the store tests: a hand-driven clock and a live fleet that logs to a store."""

from __future__ import annotations

import random

import pandas as pd

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, SelectionResult, TaskOutcome, TaskRequest
from agentlb.store import Store
from agentlb.tracker import AgentLoadTracker, TrackerConfig

TASK_TYPES = ("video_analysis", "text_analysis", "prompt_generation")


class StoreClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fleet() -> list[Agent]:
    return [
        Agent(id="fast", name="Fast", capabilities=frozenset({"work"}), max_concurrency=4),
        Agent(id="slow", name="Slow", capabilities=frozenset({"work"}), max_concurrency=2, weight=2.0),
        Agent(id="mid", name="Mid", capabilities=frozenset({"work", "gpu"}), max_concurrency=3),
    ]


class LiveFleet:
    """A balancer over a live tracker, logging to the store exactly as the service does:
    record_dispatch after select; record_outcome, then balancer.report."""

    def __init__(self, store: Store, clock: StoreClock, expiry_s: float = 3600.0, seed: int = 3) -> None:
        self.store = store
        self.clock = clock
        self.tracker = AgentLoadTracker(clock, TrackerConfig(in_flight_expiry_s=expiry_s))
        self.balancer = Balancer(self.tracker, config=BalancerConfig(slow_start_window_s=0), seed=seed)
        self.rng = random.Random(seed)
        self.open: list[SelectionResult] = []
        for agent in fleet():
            store.add_agent(agent)
            self.tracker.register(agent, registered_at=clock())

    def dispatch(self, i: int, strategy: str = "least_connection") -> SelectionResult:
        task = TaskRequest(
            task_type=TASK_TYPES[i % len(TASK_TYPES)],
            required_capabilities=frozenset({"work"}),
            requirements={"complexity": ("low", "high")[i % 2], "tokens": 100 + 37 * i},
            task_id=f"task-{i:04d}",
        )
        result = self.balancer.select(task, strategy)
        self.store.record_dispatch(result)
        self.open.append(result)
        return result

    def finish(self, result: SelectionResult, success: bool = True) -> None:
        outcome = TaskOutcome(
            agent_id=result.selected_agent.id,
            duration_s=round(self.rng.uniform(0.5, 8.0), 3),
            success=success,
            task_id=result.task_id,
            cpu_usage=round(self.rng.uniform(5, 95), 1),
        )
        now = self.clock()
        self.store.record_outcome(outcome, now)
        self.balancer.report(outcome, now)
        self.open.remove(result)

    def run(self, n: int, finish_every: int = 1, fail_every: int = 7) -> None:
        """Dispatch n tasks, finishing the oldest open one after every `finish_every` dispatches."""
        for i in range(n):
            self.clock.advance(self.rng.uniform(0.1, 2.0))
            self.dispatch(i)
            if i % finish_every == 0 and self.open:
                self.clock.advance(self.rng.uniform(0.1, 1.0))
                self.finish(self.open[0], success=(i % fail_every != 3))


DAY_S = 86400.0


def imported_rows(start: float, n: int) -> pd.DataFrame:
    """History from another system: attributes of every kind, some missing, some tasks with an
    unknown fallback flag, spread over two days."""
    rows = []
    for i in range(n):
        row: dict[str, object] = {
            "task_id": f"imp-{i:03d}",
            "agent_id": ("fast", "slow", "mid")[i % 3],
            "task_type": ("text", "video")[i % 2],
            "arrival_time": start + i * (2 * DAY_S / n),
            "duration_s": 1.0 + (i % 7),
            "success": i % 9 != 4,
            "region": ("eu", "us")[i % 2],
            "budget": 0.5 * i,
            "retries": i % 4,  # an integer in every row
            "fallback_used": None if i % 5 == 0 else bool(i % 2),
        }
        if i % 4:
            row["pages"] = i  # an integer some rows lack: float with NaN in a whole read
        rows.append(row)
    return pd.DataFrame(rows)


def mixed_history(store: Store, clock: StoreClock) -> None:
    """Live dispatches over three days, imported rows, and outcomes reported without a dispatch."""
    live = LiveFleet(store, clock)
    for i in range(120):
        clock.advance(0.8 * DAY_S if i % 40 == 39 else 30.0)
        live.finish(live.dispatch(i), success=i % 7 != 3)
    store.import_history(imported_rows(clock() - 5 * DAY_S, 60))
    for i in range(10):
        clock.advance(3000.0)
        store.record_outcome(
            TaskOutcome(agent_id="fast", duration_s=2.0 + i, success=True, task_id=f"orphan-{i}",
                        task_type="text"),
            clock(),
        )
