"""A small simulated task history, made by the real Balancer and tracker on a simulated clock.

Why here and not only in `agentlb.sim`: training, its tests, the notebook and `train
--simulate-if-short` need a history with known structure (agents of unequal speed per task
type, attributes that predict task size, `agent_*` state logged at dispatch) that is cheap to
make. Every row's `agent_*` columns are what `Balancer.select` logged, i.e. the serving path.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.predictor.base import PredictorRef
from agentlb.predictor.heuristic import HeuristicPredictor
from agentlb.tracker import AgentLoadTracker

if TYPE_CHECKING:
    import pandas as pd

TASK_TYPES: dict[str, float] = {  # task type -> typical size (seconds on a speed-1 agent)
    "text_analysis": 2.0,
    "prompt_generation": 4.0,
    "object_detection": 6.0,
    "video_analysis": 12.0,
}
COMPLEXITY = {"low": 0.6, "medium": 1.0, "high": 1.8}
LOAD_SLOWDOWN = 0.15  # each task already running slows a new one by 15% (shared resources)
NOISE_SIGMA = 0.25


@dataclass(frozen=True)
class SyntheticAgent:
    agent_id: str
    max_concurrency: int
    speed_by_type: dict[str, float]


def default_fleet(n_agents: int = 6, seed: int = 0) -> list[SyntheticAgent]:
    """Unequal agents: each is fast at one or two task types and slow at others."""
    rng = random.Random(seed)
    fleet = []
    types = list(TASK_TYPES)
    for i in range(n_agents):
        favourite = {types[i % len(types)], types[(i + 1 + i // len(types)) % len(types)]}
        speeds = {t: (rng.uniform(1.6, 2.4) if t in favourite else rng.uniform(0.5, 1.0)) for t in types}
        fleet.append(SyntheticAgent(f"agent-{i}", rng.choice((2, 3, 4)), speeds))
    return fleet


def synthetic_history(
    n_tasks: int = 5000,
    seed: int = 0,
    fleet: list[SyntheticAgent] | None = None,
    utilisation: float = 0.6,
    failure_rate: float = 0.03,
    strategy: str = "random",
) -> pd.DataFrame:
    """Simulate `n_tasks` tasks on `fleet` and return the history in the DESIGN.md format.

    Service time = size / speed(agent, type) x (1 + 0.15 x tasks already running) x
    lognormal(0, 0.25) noise, where size = type size x (input_tokens / 1000)^0.7 x complexity.
    """
    import pandas as pd

    rng = random.Random(seed)
    agents = fleet or default_fleet(seed=seed)
    now = [0.0]
    tracker = AgentLoadTracker(clock=lambda: now[0])
    for a in agents:
        tracker.register(
            Agent(id=a.agent_id, name=a.agent_id, max_concurrency=a.max_concurrency), registered_at=0.0
        )
    balancer = Balancer(
        tracker, PredictorRef(HeuristicPredictor()), BalancerConfig(slow_start_window_s=0.0), seed=seed
    )
    mean_speed = sum(sum(a.speed_by_type.values()) / len(a.speed_by_type) for a in agents) / len(agents)
    mean_size = sum(TASK_TYPES.values()) / len(TASK_TYPES)
    capacity = sum(a.max_concurrency for a in agents) * mean_speed / mean_size  # tasks per second
    rate = utilisation * capacity
    by_id = {a.agent_id: a for a in agents}
    pending: list[tuple[float, int, TaskOutcome]] = []
    rows: list[dict[str, Any]] = []
    for seq in range(n_tasks):
        now[0] += rng.expovariate(rate)
        while pending and pending[0][0] <= now[0]:
            finished_at, _, outcome = heapq.heappop(pending)
            balancer.report(outcome, finished_at=finished_at)
        task_type = rng.choice(list(TASK_TYPES))
        complexity = rng.choice(list(COMPLEXITY))
        tokens = int(math.exp(rng.gauss(math.log(1000), 0.6)))
        task = TaskRequest(
            task_type=task_type,
            requirements={"input_tokens": tokens, "complexity": complexity, "priority": rng.randint(1, 3)},
            task_id=f"t{seed}-{seq:07d}",
        )
        result = balancer.select(task, strategy)
        agent = by_id[result.selected_agent.id]
        running = tracker.state(agent.agent_id).active_tasks - 1
        size = TASK_TYPES[task_type] * (tokens / 1000.0) ** 0.7 * COMPLEXITY[complexity]
        duration = (
            size
            / agent.speed_by_type[task_type]
            * (1 + LOAD_SLOWDOWN * running)
            * math.exp(rng.gauss(0.0, NOISE_SIGMA))
        )
        success = rng.random() >= failure_rate
        outcome = TaskOutcome(agent.agent_id, duration, success, task.task_id, task_type)
        heapq.heappush(pending, (now[0] + duration, seq, outcome))
        row: dict[str, Any] = {
            "task_id": task.task_id,
            "arrival_time": now[0],
            "agent_id": agent.agent_id,
            "success": success,
            "duration_s": duration,
        }
        row.update(result.dispatch_features)
        rows.append(row)
    return pd.DataFrame(rows)
