from __future__ import annotations

import asyncio
import doctest
from pathlib import Path

import pytest

from agentlb import Agent, LoadBalancer, LoadBalancingStrategy
from agentlb.errors import SettingsError
from agentlb.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLB_DEFAULT_STRATEGY", "fastest")
    with pytest.raises(SettingsError, match="AGENTLB_DEFAULT_STRATEGY"):
        load_settings()
    monkeypatch.delenv("AGENTLB_DEFAULT_STRATEGY")
    monkeypatch.setenv("AGENTLB_HYBRID_WEIGHTS", '{"predictive": -1}')
    with pytest.raises(SettingsError, match="AGENTLB_HYBRID_WEIGHTS"):
        load_settings()
    monkeypatch.setenv("AGENTLB_HYBRID_WEIGHTS", '{"predictive": 3, "least_connection": 1}')
    assert load_settings().hybrid_weights["predictive"] == pytest.approx(0.75)


def test_paths_live_under_home(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert settings.db_url == f"sqlite:///{tmp_path / 'var' / 'agentlb.db'}"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'var' / 'mlflow.db'}"
    assert settings.models_dir == tmp_path / "models"


def test_spec_usage_example_async() -> None:
    lb = LoadBalancer(seed=1)
    agents = [
        Agent(id=f"agent-{i}", name=f"A{i}", capabilities=frozenset({"prompt_generation"})) for i in range(3)
    ]

    async def run() -> None:
        result = await lb.aselect_best_agent(
            available_agents=agents,
            task_requirements={"task_type": "prompt_generation", "priority": "high"},
            strategy=LoadBalancingStrategy.HYBRID,
        )
        await lb.aupdate_agent_performance(
            result.selected_agent.id,
            {
                "duration": 4.5,
                "success": True,
                "task_type": "prompt_generation",
                "cpu_usage": 45.0,
                "memory_usage": 60.0,
                "task_id": result.task_id,
            },
        )

    asyncio.run(run())
    stats = lb.get_load_balancing_stats()
    assert stats["total_selections"] == 1
    assert sum(stats["in_flight"].values()) == 0


def test_readme_doctest() -> None:
    failures, tried = doctest.testfile(str(README), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert tried > 0, "README has no doctest"
    assert failures == 0
