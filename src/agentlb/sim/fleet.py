"""Simulated agents and the fleet file (YAML) shared with `make serve`.

Fleet file contract (DESIGN.md): `agents: [{id, name, capabilities: [...], max_concurrency,
weight?, enabled?, speed: number | {task_type: speed}, failure_rate?, slowdowns?: [{start_s,
end_s, factor}]}]`; the simulator also reads `join_at_s` / `leave_at_s`. Speed is "higher is
faster": service time = size / speed. The API registers the same file, ignoring sim fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentlb.domain import Agent
from agentlb.errors import FleetFileError

DEFAULT_SPEED_KEY = "default"


@dataclass(frozen=True)
class Slowdown:
    """The agent runs `factor` times slower for tasks starting in [start_s, end_s)."""

    start_s: float
    end_s: float
    factor: float


@dataclass(frozen=True)
class SimAgentSpec:
    """One agent as the simulator sees it: the public `Agent` plus hidden performance truth."""

    agent: Agent
    speed: float = 1.0
    speed_by_type: Mapping[str, float] = field(default_factory=dict)
    failure_rate: float = 0.0
    slowdowns: tuple[Slowdown, ...] = ()
    join_at_s: float = 0.0
    leave_at_s: float | None = None

    @property
    def id(self) -> str:
        return self.agent.id

    def speed_for(self, task_type: str) -> float:
        return self.speed_by_type.get(task_type, self.speed)

    def slowdown_at(self, t: float) -> float:
        factor = 1.0
        for episode in self.slowdowns:
            if episode.start_s <= t < episode.end_s:
                factor *= episode.factor
        return factor


def _number(raw: Any, where: str, minimum: float | None = None, exclusive: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise FleetFileError(f"{where}: expected a number, got {raw!r}")
    value = float(raw)
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise FleetFileError(f"{where}: must be {'>' if exclusive else '>='} {minimum:g}, got {value:g}")
    return value


def spec_from_dict(raw: Mapping[str, Any], index: int = 0) -> SimAgentSpec:
    """Parse one agent entry of a fleet file; errors name the entry and the field."""
    where = f"agents[{index}]"
    if not isinstance(raw, Mapping):
        raise FleetFileError(f"{where}: expected a mapping, got {type(raw).__name__}")
    agent_id = raw.get("id")
    if not isinstance(agent_id, str) or not agent_id:
        raise FleetFileError(f"{where}: 'id' must be a non-empty string")
    where = f"agent {agent_id!r}"
    capabilities = raw.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise FleetFileError(f"{where}: 'capabilities' must be a list of strings")
    max_concurrency = raw.get("max_concurrency", 4)
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise FleetFileError(f"{where}: 'max_concurrency' must be an integer >= 1")
    weight = _number(raw.get("weight", 1.0), f"{where}.weight", 0.0, exclusive=True)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise FleetFileError(f"{where}: 'enabled' must be true or false")
    speed_raw = raw.get("speed", 1.0)
    speed_by_type: dict[str, float] = {}
    if isinstance(speed_raw, Mapping):
        for task_type, value in speed_raw.items():
            speed_by_type[str(task_type)] = _number(value, f"{where}.speed.{task_type}", 0.0, exclusive=True)
        speed = speed_by_type.pop(DEFAULT_SPEED_KEY, 1.0)
    else:
        speed = _number(speed_raw, f"{where}.speed", 0.0, exclusive=True)
    failure_rate = _number(raw.get("failure_rate", 0.0), f"{where}.failure_rate", 0.0)
    if failure_rate > 1.0:
        raise FleetFileError(f"{where}: 'failure_rate' must be between 0 and 1")
    slowdowns: list[Slowdown] = []
    for j, episode in enumerate(raw.get("slowdowns", []) or []):
        if not isinstance(episode, Mapping):
            raise FleetFileError(f"{where}.slowdowns[{j}]: expected a mapping")
        start = _number(episode.get("start_s"), f"{where}.slowdowns[{j}].start_s", 0.0)
        end = _number(episode.get("end_s"), f"{where}.slowdowns[{j}].end_s", start, exclusive=True)
        factor = _number(episode.get("factor"), f"{where}.slowdowns[{j}].factor", 0.0, exclusive=True)
        slowdowns.append(Slowdown(start, end, factor))
    join_at = _number(raw.get("join_at_s", 0.0), f"{where}.join_at_s", 0.0)
    leave_raw = raw.get("leave_at_s")
    leave_at = (
        None if leave_raw is None else _number(leave_raw, f"{where}.leave_at_s", join_at, exclusive=True)
    )
    try:
        agent = Agent(
            id=agent_id,
            name=str(raw.get("name", agent_id)),
            capabilities=frozenset(capabilities),
            max_concurrency=max_concurrency,
            weight=weight,
            enabled=enabled,
        )
    except ValueError as exc:
        raise FleetFileError(f"{where}: {exc}") from exc
    return SimAgentSpec(agent, speed, speed_by_type, failure_rate, tuple(slowdowns), join_at, leave_at)


def fleet_from_dicts(entries: Sequence[Mapping[str, Any]]) -> list[SimAgentSpec]:
    specs = [spec_from_dict(entry, i) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise FleetFileError(f"agent id {spec.id!r} appears twice in the fleet")
        seen.add(spec.id)
    if not specs:
        raise FleetFileError("the fleet has no agents")
    return specs


def load_fleet(path: str | Path) -> list[SimAgentSpec]:
    """Read a fleet YAML file (`agents: [...]`)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetFileError(f"cannot read fleet file {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise FleetFileError(f"fleet file {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("agents"), list):
        raise FleetFileError(f"fleet file {file}: expected a mapping with an 'agents' list")
    return fleet_from_dicts(data["agents"])


def fleet_agents(path: str | Path) -> list[Agent]:
    """Just the `Agent`s of a fleet file, for registering it with a live service."""
    return [spec.agent for spec in load_fleet(path)]
