from __future__ import annotations

from agentlb.domain import Agent


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_agent(agent_id: str, caps: tuple[str, ...] = ("work",), **kwargs: object) -> Agent:
    return Agent(id=agent_id, name=agent_id.title(), capabilities=frozenset(caps), **kwargs)  # type: ignore[arg-type]
