from __future__ import annotations

import pytest

from agentlb.errors import SimulationError
from agentlb.settings import SPEC_HYBRID_WEIGHTS
from agentlb.sim.tune import TUNING_SEED_OFFSET, TuneConfig, tune_weights, weight_grid


def test_grid_covers_the_simplex_and_the_spec_weights() -> None:
    grid = weight_grid(0.5)
    assert all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert len(grid) == 10 + 1  # C(2 + 3, 3) points, plus the spec's weights (not on this grid)
    assert grid[0] == SPEC_HYBRID_WEIGHTS
    assert len(weight_grid(0.05)) == 1771  # the spec's weights lie on a 0.05 grid: not added twice


def test_tuning_ranks_weights_on_its_own_seeds() -> None:
    result = tune_weights(TuneConfig(scenarios=("heterogeneous",), seeds=1, tasks=300, step=0.5))
    ranked = result["ranked"]
    assert [r["objective"] for r in ranked] == sorted(r["objective"] for r in ranked)
    assert result["best"] == ranked[0]
    assert result["config"]["seeds"] == [TUNING_SEED_OFFSET]
    assert result["product_spec_weights"]["weights"] == SPEC_HYBRID_WEIGHTS
    assert all(r["by_scenario"]["heterogeneous"] > 0 for r in ranked)


def test_bad_step_is_refused() -> None:
    with pytest.raises(SimulationError, match="step"):
        tune_weights(TuneConfig(step=0.3))
