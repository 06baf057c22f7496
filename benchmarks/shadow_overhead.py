"""What shadow scoring a challenger adds to a selection, side by side in one process.

Two services on one trained champion (hybrid strategy, 20 agents, SQLite dispatch log): one
without a shadow model, one with the challenger shadow-scoring every selection. Runs alternate
(`--repeats` each) and each times `--selections` select + outcome cycles; the figure is the
median over runs of each run's median (and p99) `AgentLBService.select` time, dispatch write
included, with the shadow thread predicting and writing beside it.

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
from agentlb.experiments.docs import SHADOW_BEGIN, SHADOW_END, render_shadow_overhead, replace_section
from agentlb.service import AgentLBService
from agentlb.settings import MODEL_NAME, Settings, load_settings
from agentlb.training.config import HGBConfig, LightGBMConfig, TrainingConfig
from agentlb.training.pipeline import run_training
from agentlb.training.synthetic import synthetic_history

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "shadow_overhead.json"
DOC = REPO / "docs" / "benchmarks.md"


def run(settings: Settings, selections: int, offset: int) -> dict[str, float]:
    service = AgentLBService.open(settings)
    try:
        if not service.store.list_agents():
            for i in range(20):
                service.register_agent(Agent(id=f"agent-{i}", name=f"agent-{i}", max_concurrency=8))
        if service.shadow is not None:
            assert service.shadow.model is not None, service.shadow.reason
        times = []
        types = ("text_analysis", "prompt_generation", "object_detection", "video_analysis")
        for i in range(selections):
            task = TaskRequest(
                types[i % 4],
                requirements={"input_tokens": 500 + 37 * (i % 50), "complexity": "medium", "priority": 2},
                task_id=f"r{offset}-{i}",
            )
            started = time.perf_counter()
            result = service.select(task)
            times.append(time.perf_counter() - started)
            service.report_outcome(
                TaskOutcome(result.selected_agent.id, 1.0 + (i % 7) * 0.3, True, task.task_id)
            )
        scored = service.shadow.flush() if service.shadow is not None else 0
    finally:
        service.close()
    times.sort()
    return {
        "p50_us": 1e6 * statistics.median(times),
        "p99_us": 1e6 * times[int(0.99 * len(times))],
        "mean_us": 1e6 * statistics.fmean(times),
        "final_flush": scored,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--selections", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
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
        plain = load_settings(
            home=home,
            model_uri=champion,
            database_url=f"sqlite:///{home / 'plain.db'}",
            model_compile=False,
            model_poll_interval_s=0,
        )
        shadowed = load_settings(
            home=home,
            model_uri=champion,
            shadow_model_uri=f"models:/{MODEL_NAME}@challenger",
            database_url=f"sqlite:///{home / 'shadow.db'}",
            model_compile=False,
            model_poll_interval_s=0,
        )
        runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        for repeat in range(args.repeats):
            runs["without"].append(run(plain, args.selections, repeat))
            runs["with"].append(run(shadowed, args.selections, repeat))
    summary: dict[str, Any] = {
        "command": "python benchmarks/shadow_overhead.py "
        f"--selections {args.selections} --repeats {args.repeats}",
        "runs": runs,
    }
    for name in ("p50_us", "p99_us", "mean_us"):
        without = statistics.median(r[name] for r in runs["without"])
        with_shadow = statistics.median(r[name] for r in runs["with"])
        summary[name] = {"without": without, "with": with_shadow, "ratio": with_shadow / without}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    section = render_shadow_overhead(summary)
    if not args.no_doc:
        DOC.write_text(replace_section(DOC.read_text(), section, SHADOW_BEGIN, SHADOW_END))
    print(section)


if __name__ == "__main__":
    main()
