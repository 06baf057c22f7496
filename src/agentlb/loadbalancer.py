"""The Python API of the product spec's usage examples, in-process and without a database."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.domain import Agent, LoadBalancingStrategy, SelectionResult, TaskOutcome, TaskRequest
from agentlb.predictor.base import PredictorRef
from agentlb.tracker import AgentLoadTracker, Clock

_TASK_FIELDS = {"task_type", "required_capabilities", "task_id", "deadline_s"}


class LoadBalancer:
    """`select_best_agent`, `update_agent_performance`, `get_load_balancing_stats` and
    `configure_strategy_weights`, each with an `a`-prefixed variant for asyncio code."""

    def __init__(
        self,
        config: BalancerConfig | None = None,
        predictor: PredictorRef | None = None,
        clock: Clock = time.time,
        seed: int | None = None,
    ) -> None:
        self.tracker = AgentLoadTracker(clock)
        self.balancer = Balancer(self.tracker, predictor, config, seed)

    def select_best_agent(
        self,
        available_agents: Iterable[Agent],
        task_requirements: Mapping[str, Any],
        strategy: LoadBalancingStrategy | str | None = None,
        top_k: int = 1,
    ) -> SelectionResult:
        """Register any agent not seen before, then select among `available_agents`."""
        ids = []
        for agent in available_agents:
            if not self.tracker.has_agent(agent.id) or self.tracker.state(agent.id).agent != agent:
                self.tracker.register(agent)
            ids.append(agent.id)
        attributes = {k: v for k, v in task_requirements.items() if k not in _TASK_FIELDS}
        task_kwargs: dict[str, Any] = {
            "task_type": str(task_requirements.get("task_type", "default")),
            "required_capabilities": frozenset(task_requirements.get("required_capabilities", ())),
            "requirements": attributes,
            "deadline_s": task_requirements.get("deadline_s"),
        }
        if task_requirements.get("task_id"):
            task_kwargs["task_id"] = str(task_requirements["task_id"])
        name = strategy.value if isinstance(strategy, LoadBalancingStrategy) else strategy
        return self.balancer.select(TaskRequest(**task_kwargs), name, top_k, agent_ids=ids)

    def update_agent_performance(self, agent_id: str, performance: Mapping[str, Any]) -> None:
        """Report a finished task: duration, success, task_type, cpu_usage, memory_usage, task_id."""
        self.balancer.report(
            TaskOutcome(
                agent_id=agent_id,
                duration_s=float(performance["duration"]),
                success=bool(performance.get("success", True)),
                task_id=performance.get("task_id"),
                task_type=performance.get("task_type"),
                cpu_usage=performance.get("cpu_usage"),
                memory_usage=performance.get("memory_usage"),
                error=performance.get("error"),
            )
        )

    def configure_strategy_weights(
        self, weights: Mapping[LoadBalancingStrategy | str, float]
    ) -> dict[str, float]:
        plain = {(k.value if isinstance(k, LoadBalancingStrategy) else k): v for k, v in weights.items()}
        return self.balancer.set_hybrid_weights(plain)

    def get_load_balancing_stats(self) -> dict[str, Any]:
        stats = self.balancer.stats
        snapshot = self.tracker.snapshot()
        total = stats.total_selections
        return {
            "total_selections": total,
            "strategy_distribution": dict(stats.selections_by_strategy),
            "agent_distribution": dict(stats.selections_by_agent),
            "fallback_activation_rate": stats.fallbacks / total if total else 0.0,
            "ejections": stats.ejections,
            "hybrid_weights": self.balancer.hybrid_weights,
            "in_flight": {s.agent.id: s.active_tasks for s in snapshot.agents},
        }

    async def aselect_best_agent(
        self,
        available_agents: Iterable[Agent],
        task_requirements: Mapping[str, Any],
        strategy: LoadBalancingStrategy | str | None = None,
        top_k: int = 1,
    ) -> SelectionResult:
        return self.select_best_agent(available_agents, task_requirements, strategy, top_k)

    async def aupdate_agent_performance(self, agent_id: str, performance: Mapping[str, Any]) -> None:
        self.update_agent_performance(agent_id, performance)
