"""Preparing a home for `make serve`: migrate the database and register the demo fleet into an
empty registry (the CLI's `bootstrap` adds the first model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentlb.settings import Settings
from agentlb.sim.fleet import fleet_agents
from agentlb.store import Store

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class BootstrapReport:
    migrated: bool
    agents_registered: int
    fleet_file: str | None
    notes: list[str] = field(default_factory=list)


def default_fleet_file(settings: Settings) -> Path:
    return settings.home / "examples" / "fleet.yaml"


def bootstrap(
    settings: Settings, progress: ProgressFn | None = None, fleet_file: Path | None = None
) -> BootstrapReport:
    """Migrate the database and register the demo fleet when the registry is empty.

    The CLI's `bootstrap` adds the first-model step; each step reports through `progress`.
    """
    say = progress or (lambda _message: None)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    say(f"database: migrating {_redact(settings.db_url)}")
    store = Store.open(settings.db_url)
    notes: list[str] = []
    try:
        registered = 0
        fleet = fleet_file or default_fleet_file(settings)
        if store.list_agents():
            say("agents: registry not empty, demo fleet not loaded")
            return BootstrapReport(True, 0, None, notes)
        if not fleet.exists():
            notes.append(f"no fleet file at {fleet}; register agents with POST /load-balancing/agents")
            say(notes[-1])
            return BootstrapReport(True, 0, None, notes)
        for agent in fleet_agents(fleet):
            store.upsert_agent(agent)
            registered += 1
        say(f"agents: registered {registered} agents from {fleet}")
        return BootstrapReport(True, registered, str(fleet), notes)
    finally:
        store.close()


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url
