"""The named scenarios, fixed before any tuning: fleet, task mix, arrival process, load.

Offered load is the arrival rate over the fleet's capacity, where capacity is the highest
arrival rate of the task mix that ANY split of tasks over the capable agents could sustain
(a small linear program over slots x speed). So 0.75 is 0.75 of what a perfect dispatcher
could carry; slow-down episodes and failures are not counted in it (they cost on top).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentlb.errors import SimulationError
from agentlb.sim.fleet import SimAgentSpec, Slowdown, fleet_from_dicts
from agentlb.sim.workload import (
    ArrivalProcess,
    Bursty,
    Diurnal,
    Poisson,
    SimTask,
    TaskType,
    generate_tasks,
)

DEFAULT_LOAD = 0.75

GENERIC_MIX: tuple[TaskType, ...] = (
    TaskType("summarise", 0.5, 1.0),
    TaskType("code", 0.3, 3.0),
    TaskType("research", 0.2, 6.0),
)
GENERIC_TYPES = [t.name for t in GENERIC_MIX]

SURVEILLANCE_MIX: tuple[TaskType, ...] = (
    TaskType("video_analysis", 0.15, 8.0),
    TaskType("object_detection", 0.30, 2.0),
    TaskType("prompt_generation", 0.20, 3.0),
    TaskType("text_analysis", 0.25, 1.5),
    TaskType("alert_triage", 0.10, 0.5, deadline_factor=6.0),
)

# The demo fleet; examples/fleet.yaml holds the same agents (a test keeps them equal).
SURVEILLANCE_FLEET: tuple[Mapping[str, Any], ...] = (
    {
        "id": "vision-gpu-1",
        "name": "Vision GPU 1",
        "capabilities": ["video_analysis", "object_detection"],
        "max_concurrency": 4,
        "weight": 2.0,
        "speed": {"video_analysis": 2.0, "object_detection": 2.5},
    },
    {
        "id": "vision-gpu-2",
        "name": "Vision GPU 2",
        "capabilities": ["video_analysis", "object_detection"],
        "max_concurrency": 4,
        "weight": 1.5,
        "speed": {"video_analysis": 1.5, "object_detection": 2.0},
    },
    {
        "id": "vision-cpu-1",
        "name": "Vision CPU 1",
        "capabilities": ["video_analysis", "object_detection"],
        "max_concurrency": 2,
        "weight": 0.5,
        "speed": {"video_analysis": 0.5, "object_detection": 0.8},
    },
    {
        "id": "detector-edge-1",
        "name": "Edge detector 1",
        "capabilities": ["object_detection", "alert_triage"],
        "max_concurrency": 2,
        "speed": {"object_detection": 1.0, "alert_triage": 1.0},
    },
    {
        "id": "detector-edge-2",
        "name": "Edge detector 2",
        "capabilities": ["object_detection", "alert_triage"],
        "max_concurrency": 2,
        "speed": {"object_detection": 1.0, "alert_triage": 1.0},
        "failure_rate": 0.05,
    },
    {
        "id": "llm-large-1",
        "name": "LLM large 1",
        "capabilities": ["prompt_generation", "text_analysis", "alert_triage"],
        "max_concurrency": 6,
        "weight": 2.0,
        "speed": {"prompt_generation": 1.5, "text_analysis": 1.5, "alert_triage": 1.0},
    },
    {
        "id": "llm-small-1",
        "name": "LLM small 1",
        "capabilities": ["prompt_generation", "text_analysis", "alert_triage"],
        "max_concurrency": 4,
        "speed": {"prompt_generation": 0.6, "text_analysis": 1.0, "alert_triage": 2.0},
    },
    {
        "id": "llm-small-2",
        "name": "LLM small 2",
        "capabilities": ["prompt_generation", "text_analysis", "alert_triage"],
        "max_concurrency": 4,
        "speed": {"prompt_generation": 0.6, "text_analysis": 1.0, "alert_triage": 2.0},
    },
    {
        "id": "triage-1",
        "name": "Alert triage 1",
        "capabilities": ["alert_triage", "text_analysis"],
        "max_concurrency": 3,
        "speed": {"alert_triage": 3.0, "text_analysis": 0.7},
    },
    {
        "id": "llm-legacy-1",
        "name": "LLM legacy 1",
        "capabilities": ["prompt_generation", "text_analysis"],
        "max_concurrency": 2,
        "weight": 0.5,
        "speed": 0.4,
        "failure_rate": 0.05,
    },
)


def capacity_per_s(fleet: Sequence[SimAgentSpec], mix: Sequence[TaskType]) -> float:
    """Highest sustainable arrival rate of the mix: max lambda such that some split x[a,t] >= 0
    gives every type its share (sum_a x[a,t] = share_t x lambda) without any agent's busy slots
    exceeding its max_concurrency (sum_t x[a,t] x mean_size_t / speed[a,t] <= slots_a)."""
    import numpy as np
    from scipy.optimize import linprog

    agents = [s for s in fleet if s.agent.enabled]
    declared: set[str] = set()
    for spec in agents:
        declared |= spec.agent.capabilities
    total_share = sum(t.share for t in mix)
    pairs = [
        (a, t)
        for a, spec in enumerate(agents)
        for t, kind in enumerate(mix)
        if kind.name not in declared or kind.name in spec.agent.capabilities
    ]
    n_vars = len(pairs) + 1  # the last variable is lambda
    cost = np.zeros(n_vars)
    cost[-1] = -1.0
    a_eq = np.zeros((len(mix), n_vars))
    for j, (_, t) in enumerate(pairs):
        a_eq[t, j] = 1.0
    for t, kind in enumerate(mix):
        a_eq[t, -1] = -kind.share / total_share
    a_ub = np.zeros((len(agents), n_vars))
    for j, (a, t) in enumerate(pairs):
        a_ub[a, j] = mix[t].mean_size_s / agents[a].speed_for(mix[t].name)
    b_ub = np.asarray([float(s.agent.max_concurrency) for s in agents])
    solution = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(len(mix)), method="highs")
    if not solution.success or solution.x[-1] <= 0:
        raise SimulationError(f"the fleet cannot serve this task mix: {solution.message}")
    return float(solution.x[-1])


def _uniform_fleet(
    n: int, speeds: Sequence[float], slots: int = 4, failure: Sequence[float] = ()
) -> list[SimAgentSpec]:
    entries = [
        {
            "id": f"agent-{i:02d}",
            "name": f"Agent {i}",
            "capabilities": list(GENERIC_TYPES),
            "max_concurrency": slots,
            "speed": speeds[i % len(speeds)],
            "failure_rate": failure[i] if i < len(failure) else 0.0,
        }
        for i in range(n)
    ]
    return fleet_from_dicts(entries)


def homogeneous_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    return _uniform_fleet(12, [1.0])


def heterogeneous_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    """Speeds spread 4x (0.5 to 2.0), same slots: the classic trap for count-based strategies."""
    return _uniform_fleet(12, [0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.25, 1.25, 1.5, 1.5, 2.0, 2.0])


def specialists_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    """Each agent is 2x on its own type and 0.5x on the others (3 / 4 / 5 agents per type)."""
    homes = ["summarise"] * 3 + ["code"] * 4 + ["research"] * 5
    entries = [
        {
            "id": f"agent-{i:02d}",
            "name": f"{home} specialist {i}",
            "capabilities": list(GENERIC_TYPES),
            "max_concurrency": 4,
            "speed": {t: (2.0 if t == home else 0.5) for t in GENERIC_TYPES},
        }
        for i, home in enumerate(homes)
    ]
    return fleet_from_dicts(entries)


def degradation_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    """Homogeneous agents that slow down 5x for episodes (mean 30 s, one per ~200 s each)."""
    rng = random.Random(seed * 31 + 7)
    fleet = _uniform_fleet(12, [1.0])
    out = []
    for spec in fleet:
        episodes: list[Slowdown] = []
        t = rng.expovariate(1 / 200.0)
        while t < horizon_s * 1.5:
            length = rng.expovariate(1 / 30.0)
            episodes.append(Slowdown(t, t + length, 5.0))
            t += length + rng.expovariate(1 / 200.0)
        out.append(
            SimAgentSpec(spec.agent, spec.speed, spec.speed_by_type, spec.failure_rate, tuple(episodes))
        )
    return out


def flaky_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    """Homogeneous agents, 3 of 12 fail 20% of their tasks (after running them)."""
    return _uniform_fleet(12, [1.0], failure=[0.2, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.2])


def surveillance_fleet(seed: int, horizon_s: float) -> list[SimAgentSpec]:
    return fleet_from_dicts(SURVEILLANCE_FLEET)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fleet: Callable[[int, float], list[SimAgentSpec]]
    mix: tuple[TaskType, ...]
    arrivals: str = "poisson"
    load: float = DEFAULT_LOAD
    noise_sigma: float = 0.3

    def process(self, rate_per_s: float, horizon_s: float) -> ArrivalProcess:
        if self.arrivals == "bursty":
            return Bursty(rate_per_s, high_factor=3.0, mean_high_s=20.0, mean_low_s=60.0)
        if self.arrivals == "diurnal":
            return Diurnal(rate_per_s, amplitude=0.2, period_s=max(horizon_s / 2.0, 1.0))
        return Poisson(rate_per_s)

    def build(
        self, seed: int, n_tasks: int, load: float | None = None, fleet: Sequence[SimAgentSpec] | None = None
    ) -> tuple[list[SimAgentSpec], list[SimTask]]:
        """The fleet and the tasks of one replication; the same for every strategy."""
        offered = self.load if load is None else load
        if not offered > 0:
            raise SimulationError("--load must be > 0")
        probe = list(fleet) if fleet is not None else self.fleet(seed, 1.0)
        rate = offered * capacity_per_s(probe, self.mix)
        horizon = n_tasks / rate
        agents = list(fleet) if fleet is not None else self.fleet(seed, horizon)
        tasks = generate_tasks(self.mix, self.process(rate, horizon), n_tasks, seed, self.noise_sigma)
        return agents, tasks


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "homogeneous",
            "12 identical agents (4 slots, speed 1), Poisson arrivals",
            homogeneous_fleet,
            GENERIC_MIX,
        ),
        Scenario(
            "heterogeneous",
            "12 agents with speeds 0.5-2.0 (4x spread), Poisson arrivals",
            heterogeneous_fleet,
            GENERIC_MIX,
        ),
        Scenario(
            "specialists",
            "12 agents, each 2x on its own task type and 0.5x on the others",
            specialists_fleet,
            GENERIC_MIX,
        ),
        Scenario(
            "degradation",
            "12 identical agents with 5x slow-down episodes (~13% of agent-time)",
            degradation_fleet,
            GENERIC_MIX,
        ),
        Scenario("flaky", "12 identical agents, 3 of them fail 20% of tasks", flaky_fleet, GENERIC_MIX),
        Scenario(
            "bursty",
            "12 identical agents, Markov-modulated arrivals (3x rate bursts, 25% of time)",
            homogeneous_fleet,
            GENERIC_MIX,
            arrivals="bursty",
        ),
        Scenario(
            "surveillance",
            "the demo fleet of examples/fleet.yaml, 5 task types, diurnal +-20% load",
            surveillance_fleet,
            SURVEILLANCE_MIX,
            arrivals="diurnal",
        ),
    )
}
SCENARIO_NAMES: tuple[str, ...] = tuple(SCENARIOS)


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise SimulationError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIO_NAMES)}") from None
