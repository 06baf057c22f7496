"""A first model for a fresh installation: simulate the demo fleet, train, promote, export.

`make serve` ends with a model-backed service: when no champion can be loaded, this
simulates a history of the fleet in `examples/fleet.yaml` under the surveillance task mix,
trains on it with the full pipeline, and exports the champion bundle. The history is the
benchmark's warm-up (`agentlb.sim.benchmark.warmup_histories`): least_connection spreads the
tasks over every capable agent, so the model sees every agent-type pair, then predictive
serves them again with a quick first model, so it also sees what its own picks cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentlb.errors import ModelLoadError
from agentlb.settings import Settings

FIRST_MODEL_TASKS = 20_000
FIRST_MODEL_SEED = 20_261_126
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class FirstModelReport:
    trained: bool
    model_version: str | None
    detail: str


def current_model_version(settings: Settings) -> str | None:
    """The version of the model serving would load now, or None when it cannot load one."""
    from agentlb.predictor.model import ModelPredictor

    assert settings.model_uri is not None
    try:
        return ModelPredictor.from_uri(settings.model_uri, settings.tracking_uri).version
    except ModelLoadError:
        return None


def ensure_first_model(
    settings: Settings, fleet_file: Path, progress: Progress | None = None, tasks: int = FIRST_MODEL_TASKS
) -> FirstModelReport:
    """Train and export a first champion unless one already loads."""
    say = progress or (lambda _message, _fraction: None)
    existing = current_model_version(settings)
    if existing is not None:
        say(f"model: {existing} loads from {settings.model_uri}", 1.0)
        return FirstModelReport(False, existing, "a champion already loads")
    import pandas as pd

    from agentlb.sim.benchmark import load_model_fitter, single_threaded, warmup_histories
    from agentlb.sim.fleet import load_fleet
    from agentlb.sim.scenarios import get_scenario
    from agentlb.training.pipeline import run_training

    say(f"model: none loads; simulating {tasks} tasks on {fleet_file}", 0.0)
    fleet = load_fleet(fleet_file)
    fleet, simulated = get_scenario("surveillance").build(FIRST_MODEL_SEED, tasks, fleet=fleet)
    with single_threaded():
        histories = warmup_histories(fleet, simulated, FIRST_MODEL_SEED, load_model_fitter())
    frame = pd.concat(histories, ignore_index=True)
    say(f"model: training on {len(frame)} simulated dispatches", 0.2)

    def stage(message: str, fraction: float) -> None:
        say(f"model: {message}", 0.2 + 0.8 * fraction)

    summary = run_training(frame, settings=settings, seed=0, progress=stage)
    version = summary.get("model_version")
    if not summary["promoted"]:  # the gate's coverage band applies to a first model too
        reason = summary["decision"]["reason"]
        say(f"model: {version} not promoted ({reason}); serving keeps the heuristic", 1.0)
        return FirstModelReport(True, None if version is None else str(version), f"not promoted: {reason}")
    say(f"model: champion {version} exported to {summary.get('bundle_path')}", 1.0)
    return FirstModelReport(True, None if version is None else str(version), "trained on a simulated history")
