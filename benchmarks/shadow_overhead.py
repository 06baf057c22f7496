"""What shadow scoring a challenger adds to a selection, side by side in one process.

One service on a trained champion (hybrid strategy, 20 agents, SQLite dispatch log) with a
challenger loaded for shadow scoring. Blocks of `--block-size` select + outcome cycles alternate
between shadow scoring on and off (`--blocks` each; what a block with the shadow left queued is
flushed before the next block starts), so both modes share the process, the
database and the machine's moment; the figures are the p50, p99 and mean
`AgentLBService.select` time of each mode (dispatch write included, the shadow thread
predicting and writing beside it when on).

    .venv/bin/python benchmarks/shadow_overhead.py   # docs/results/shadow_overhead.json + docs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlb.domain import Agent, TaskOutcome, TaskRequest
from agentlb.experiments.docs import render_shadow_overhead
from agentlb.generated_docs import write_sections_of
from agentlb.service import AgentLBService
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import synthetic_history

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "shadow_overhead.json"


def run_blocks(settings: Settings, blocks: int, block_size: int) -> dict[str, list[float]]:
    """One service with the challenger loaded; blocks of selections alternate between shadow
    scoring on and off (same process, database and fleet state), each block's select times kept."""
    service = AgentLBService.open(settings)
    times: dict[str, list[float]] = {"without": [], "with": []}
    try:
        for i in range(20):
            service.register_agent(Agent(id=f"agent-{i}", name=f"agent-{i}", max_concurrency=8))
        scorer = service.shadow
        assert scorer is not None and scorer.model is not None, scorer and scorer.reason
        types = ("text_analysis", "prompt_generation", "object_detection", "video_analysis")
        n = 0
        for block in range(2 * blocks):
            mode = "with" if block % 2 else "without"
            service.shadow = scorer if mode == "with" else None
            for _ in range(block_size):
                task = TaskRequest(
                    types[n % 4],
                    requirements={"input_tokens": 500 + 37 * (n % 50), "complexity": "medium", "priority": 2},
                    task_id=f"task-{n}",
                )
                started = time.perf_counter()
                result = service.select(task)
                times[mode].append(time.perf_counter() - started)
                service.report_outcome(
                    TaskOutcome(result.selected_agent.id, 1.0 + (n % 7) * 0.3, True, task.task_id)
                )
                n += 1
        service.shadow = scorer
        scorer.flush(wait=True)
        times["scored"] = [float(scorer.records.evidence(scorer.model.version).tasks)]
    finally:
        service.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=8, help="blocks of each mode, alternated")
    parser.add_argument(
        "--block-size", type=int, default=2500, help="selections per block (several shadow flush intervals)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentlb-shadow-") as tmp:
        home = Path(tmp)
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        base = load_settings(home=home, model_compile=False, model_poll_interval_s=0)
        history = synthetic_history(n_tasks=3000, seed=1)
        quick = TrainingConfig(
            lightgbm=LightGBMConfig(num_boost_round=80, learning_rate=0.1),
            sklearn_hgb=HGBConfig(enabled=False),
        )
        run_training(history, settings=base, config=quick)  # v1: champion
        run_training(history, settings=base, config=quick.replace(seed=2))  # v2: challenger
        champion = f"models:/{MODEL_NAME}@champion"
        shadowed = load_settings(
            home=home,
            model_uri=champion,
            shadow_model_uri=f"models:/{MODEL_NAME}@challenger",
            database_url=f"sqlite:///{home / 'shadow.db'}",
            model_compile=False,
            model_poll_interval_s=0,
        )
        times = run_blocks(shadowed, args.blocks, args.block_size)
    summary: dict[str, Any] = {
        "command": "python benchmarks/shadow_overhead.py "
        f"--blocks {args.blocks} --block-size {args.block_size}",
        "selections_scored": int(times["scored"][0]),
    }
    for mode in ("without", "with"):
        values = sorted(times[mode])
        summary[mode] = {
            "p50_us": 1e6 * statistics.median(values),
            "p99_us": 1e6 * values[int(0.99 * len(values))],
            "mean_us": 1e6 * statistics.fmean(values),
            "selections": len(values),
        }
    for name in ("p50_us", "p99_us", "mean_us"):
        without, with_shadow = summary["without"][name], summary["with"][name]
        summary[name] = {"without": without, "with": with_shadow, "ratio": with_shadow / without}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    section = render_shadow_overhead(summary)
    if not args.no_doc:
        write_sections_of(REPO, args.out)
    print(section)


if __name__ == "__main__":
    main()
