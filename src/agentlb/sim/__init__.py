"""The simulator: a heap-based discrete-event engine driving the real Balancer, tracker and
strategies with a simulated clock, fleet and workload; the strategy benchmark on top of it."""

from agentlb.sim.benchmark import BenchmarkConfig, run_benchmark
from agentlb.sim.fleet import SimAgentSpec, fleet_agents, load_fleet
from agentlb.sim.scenarios import SCENARIO_NAMES, SCENARIOS, get_scenario
from agentlb.sim.simulator import ORACLE, SIM_STRATEGIES, RunConfig, RunResult, simulate

__all__ = [
    "ORACLE",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "SIM_STRATEGIES",
    "BenchmarkConfig",
    "RunConfig",
    "RunResult",
    "SimAgentSpec",
    "fleet_agents",
    "get_scenario",
    "load_fleet",
    "run_benchmark",
    "simulate",
]
