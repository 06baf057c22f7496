"""agentlb: decides which AI agent in a fleet gets the next task."""

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import (
    Agent,
    AgentLoadMetrics,
    LoadBalancingStrategy,
    SelectionResult,
    TaskOutcome,
    TaskRequest,
)
from agentlb.loadbalancer import LoadBalancer
from agentlb.tracker import AgentLoadTracker

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentLoadMetrics",
    "AgentLoadTracker",
    "Balancer",
    "BalancerConfig",
    "LoadBalancer",
    "LoadBalancingStrategy",
    "SelectionResult",
    "TaskOutcome",
    "TaskRequest",
    "__version__",
]
