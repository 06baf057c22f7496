"""Play an orchestrator against a running agentlb server: select → run → report, in a loop.

    make serve                      # in one terminal
    .venv/bin/python examples/client.py --tasks 60 --concurrency 4

Tasks come from the simulator's `surveillance` workload (the same task types, sizes, attributes
and noise the first model was trained on), and each runs for what the simulator would give it on
the chosen agent of examples/fleet.yaml (size x noise / the agent's speed for the type; the
agent's failure rate), scaled by --time-scale so a demo takes seconds. Watch the statistics at
the end: faster agents take more of the work, and the model's error stays near its holdout's.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from agentlb.sim.fleet import SimAgentSpec, load_fleet
from agentlb.sim.scenarios import get_scenario
from agentlb.sim.workload import SimTask


class Orchestrator:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        fleet: dict[str, SimAgentSpec],
        tasks: list[SimTask],
        args: argparse.Namespace,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=10.0)
        self.fleet = fleet
        self.tasks = tasks
        self.args = args
        self.lock = threading.Lock()
        self.by_agent: Counter[str] = Counter()
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        self.failures = 0
        self.errors: Counter[str] = Counter()

    def run_one(self, i: int) -> None:
        rng = random.Random(self.args.seed * 100_003 + i)
        task = self.tasks[i]
        task_type = task.task_type
        body: dict[str, Any] = {
            "task_type": task_type,
            "required_capabilities": [task_type],  # the demo fleet's capabilities are its task types
            "task_requirements": dict(task.attributes),
            "top_k": 2,
        }
        if task.deadline_s is not None:
            body["deadline_s"] = round(task.deadline_s, 3)
        if self.args.strategy:
            body["strategy"] = self.args.strategy
        chosen = self.http.post("/load-balancing/select-agent", json=body)
        if chosen.status_code != 200:
            with self.lock:
                self.errors[f"select {chosen.status_code}"] += 1
            return
        selection = chosen.json()
        agent_id = selection["selected_agent_id"]
        spec = self.fleet.get(agent_id)
        speed = spec.speed_for(task_type) if spec else 1.0
        duration = task.size_s * task.noise / speed
        success = task.failure_draw >= (spec.failure_rate if spec else 0.0)
        time.sleep(duration * self.args.time_scale)  # "run" the task
        outcome = {
            "agent_id": agent_id,
            "task_id": selection["task_id"],
            "task_duration": round(duration, 3),
            "success": success,
            "task_type": task_type,
            "cpu_usage": round(rng.uniform(20, 90), 1),
            "memory_usage": round(rng.uniform(20, 80), 1),
        }
        if not success:
            outcome["error"] = "simulated failure"
        reported = self.http.post("/load-balancing/update-performance", json=outcome)
        with self.lock:
            if reported.status_code != 200:
                self.errors[f"update {reported.status_code}"] += 1
                return
            self.by_agent[agent_id] += 1
            self.durations[agent_id].append(duration)
            self.failures += int(not success)
        if self.args.verbose:
            predicted = selection.get("predicted_completion_s") or {}
            print(
                f"{selection['task_id'][:8]} {task_type:<17} -> {agent_id:<16} "
                f"took {duration:6.2f}s (predicted p50 {predicted.get('p50', float('nan')):6.2f}s) "
                f"{'ok' if success else 'FAILED'}"
            )

    def summary(self) -> None:
        print(
            f"\n{sum(self.by_agent.values())} tasks reported, {self.failures} failed, "
            f"errors: {dict(self.errors)}"
        )
        print(f"{'agent':<18}{'tasks':>6}{'mean s':>9}")
        for agent_id, count in self.by_agent.most_common():
            durations = self.durations[agent_id]
            print(f"{agent_id:<18}{count:>6}{sum(durations) / len(durations):>9.2f}")
        stats = self.http.get("/load-balancing/statistics")
        if stats.status_code == 200:
            body = stats.json()
            print(
                f"\nserver: {body['total_selections']} selections, "
                f"strategies {body['strategy_distribution']}, "
                f"fallback rate {body['fallback_activation_rate']:.2f}, "
                f"load variance {body['load_distribution_variance']:.3f}"
            )
            for row in body["prediction_accuracy"]:
                print(f"prediction accuracy {row['model_version']}: n={row['n']} MAE={row['mae_s']:.2f}s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--time-scale", type=float, default=0.05, help="real seconds slept per simulated second"
    )
    parser.add_argument("--strategy", default=None, help="default: the server's default strategy")
    parser.add_argument("--fleet", default=str(Path(__file__).with_name("fleet.yaml")))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    fleet = {spec.id: spec for spec in load_fleet(args.fleet)}
    _, tasks = get_scenario("surveillance").build(args.seed, args.tasks, fleet=list(fleet.values()))
    orchestrator = Orchestrator(args.base_url, os.environ.get("AGENTLB_API_KEY"), fleet, tasks, args)
    try:
        health = orchestrator.http.get("/load-balancing/health")
    except httpx.TransportError as exc:
        print(f"cannot reach {args.base_url}: {exc}; start the server with `make serve`", file=sys.stderr)
        return 1
    print(f"server health: {health.json()['status']} {health.json()['reasons']}")
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(orchestrator.run_one, range(args.tasks)))
    orchestrator.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
