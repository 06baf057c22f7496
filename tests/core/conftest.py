from __future__ import annotations

from collections.abc import Callable

import pytest
from core_helpers import FakeClock, make_agent

from agentlb.balancer import Balancer, BalancerConfig
from agentlb.tracker import AgentLoadTracker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fleet_factory(clock: FakeClock) -> Callable[..., Balancer]:
    def build(
        n: int = 4, config: BalancerConfig | None = None, seed: int = 7, **agent_kwargs: object
    ) -> Balancer:
        tracker = AgentLoadTracker(clock)
        for i in range(n):
            tracker.register(make_agent(f"a{i}", **agent_kwargs), registered_at=0.0)
        return Balancer(tracker, config=config or BalancerConfig(slow_start_window_s=0), seed=seed)

    return build
