from __future__ import annotations

from pathlib import Path

import pytest
from sim_helpers import AZURE_DIR

from agentlb.sim.fleet import SimAgentSpec, fleet_from_dicts


@pytest.fixture
def two_agents() -> list[SimAgentSpec]:
    """A (1 slot, speed 1) and B (1 slot, speed 2)."""
    return fleet_from_dicts(
        [
            {"id": "A", "name": "A", "capabilities": ["work"], "max_concurrency": 1, "speed": 1.0},
            {"id": "B", "name": "B", "capabilities": ["work"], "max_concurrency": 1, "speed": 2.0},
        ]
    )


@pytest.fixture
def azure_dir() -> Path:
    if not (AZURE_DIR / "AzureLLMInferenceTrace_conv.csv").is_file():
        pytest.skip(f"Azure LLM trace not found at {AZURE_DIR} (CI lays shared/ beside the clone)")
    return AZURE_DIR
