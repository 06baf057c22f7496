"""Holdout accuracy of every candidate on one or more history files, as a markdown table.

    .venv/bin/python training/bench_accuracy.py var/bench/specialists.parquet var/bench/azure.parquet

Each history runs through the full pipeline (`run_training`, default config unless --config)
in a fresh temporary AGENTLB_HOME, so nothing touches the real tracking store or models/.
Ratios are LightGBM MAE over the heuristic's and over the per-(agent, type) mean's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("histories", nargs="+", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from agentlb.settings import load_settings
    from agentlb.training.config import load_config
    from agentlb.training.pipeline import run_training

    config = load_config(args.config)
    results = []
    for history in args.histories:
        with tempfile.TemporaryDirectory(prefix="agentlb-acc-") as home:
            settings = load_settings(home=Path(home), mlflow_tracking_uri=None, model_uri=None)
            summary = run_training(history, settings=settings, config=config, export=False)
        mae = {c["name"]: c["mae"] for c in summary["candidates"]}
        results.append(
            {
                "history": history.name,
                "rows": summary["rows"],
                "candidates": summary["candidates"],
                "lightgbm_over_heuristic": mae["lightgbm"] / mae["heuristic"],
                "lightgbm_over_group_mean": mae["lightgbm"] / mae["group_mean"],
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("| history | candidate | MAE (s) | RMSE (s) | MAPE | p90 coverage | train s | predict µs/row |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        for c in r["candidates"]:
            print(
                f"| {r['history']} | {c['name']} | {c['mae']:.3f} | {c['rmse']:.3f} | {c['mape']:.3f} | "
                f"{c['p90_coverage']:.3f} | {c['train_s']:.2f} | {c['predict_us_per_row']:.2f} |"
            )
    print()
    print("| history | train / holdout rows | LightGBM / heuristic | LightGBM / group mean | p90 coverage |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in results:
        coverage = next(c["p90_coverage"] for c in r["candidates"] if c["name"] == "lightgbm")
        print(
            f"| {r['history']} | {r['rows']['train']} / {r['rows']['holdout']} | "
            f"{r['lightgbm_over_heuristic']:.3f} | {r['lightgbm_over_group_mean']:.3f} | {coverage:.3f} |"
        )


if __name__ == "__main__":
    main()
