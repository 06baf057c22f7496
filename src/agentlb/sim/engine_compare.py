"""Why the simulator has its own heap engine: the same 50-agent queueing model on this engine's
event loop and on SimPy, engine cost only (a trivial join-the-shortest-queue dispatcher).

    python -m agentlb.sim.engine_compare            # heap engine only
    python -m agentlb.sim.engine_compare --simpy    # also SimPy (pip install simpy; not a dependency)
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from typing import Any

from agentlb.errors import SimulationError
from agentlb.sim.engine import Engine

AGENTS, SLOTS, LOAD = 50, 4, 0.75


def run_heap(n_tasks: int, seed: int) -> int:
    """M/M/c-style model on `Engine`: Poisson arrivals, exponential service, FIFO per agent."""
    rng = random.Random(seed)
    engine = Engine()
    busy = [0] * AGENTS
    queues: list[deque[int]] = [deque() for _ in range(AGENTS)]
    in_system = [0] * AGENTS
    done = [0]

    def finish(now: float, agent: int) -> None:
        in_system[agent] -= 1
        done[0] += 1
        if queues[agent]:
            queues[agent].popleft()
            engine.at(now + rng.expovariate(1.0), finish, agent)
        else:
            busy[agent] -= 1

    def arrive(now: float, task: int) -> None:
        agent = min(range(AGENTS), key=in_system.__getitem__)
        in_system[agent] += 1
        if busy[agent] < SLOTS:
            busy[agent] += 1
            engine.at(now + rng.expovariate(1.0), finish, agent)
        else:
            queues[agent].append(task)

    t = 0.0
    for i in range(n_tasks):
        t += rng.expovariate(LOAD * AGENTS * SLOTS)
        engine.at(t, arrive, i)
    engine.run()
    return done[0]


def run_simpy(n_tasks: int, seed: int) -> int:
    try:
        import simpy
    except ImportError as exc:
        raise SimulationError("SimPy is not installed: pip install simpy to compare") from exc
    rng = random.Random(seed)
    env = simpy.Environment()
    resources = [simpy.Resource(env, SLOTS) for _ in range(AGENTS)]
    in_system = [0] * AGENTS
    done = [0]

    def task(agent: int) -> Any:
        with resources[agent].request() as request:
            yield request
            yield env.timeout(rng.expovariate(1.0))
        in_system[agent] -= 1
        done[0] += 1

    def source() -> Any:
        for _ in range(n_tasks):
            yield env.timeout(rng.expovariate(LOAD * AGENTS * SLOTS))
            agent = min(range(AGENTS), key=in_system.__getitem__)
            in_system[agent] += 1
            env.process(task(agent))

    env.process(source())
    env.run()
    return done[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--simpy", action="store_true")
    args = parser.parse_args()
    runners = [("heap", run_heap)] + ([("simpy", run_simpy)] if args.simpy else [])
    for name, runner in runners:
        rates = []
        for rep in range(args.repeats):
            start = time.perf_counter()
            done = runner(args.tasks, rep)
            rates.append(done / (time.perf_counter() - start))
        rates.sort()
        median = rates[len(rates) // 2]
        print(f"{name}: median {median:,.0f} tasks/s over {args.repeats} runs of {args.tasks}")


if __name__ == "__main__":
    main()
