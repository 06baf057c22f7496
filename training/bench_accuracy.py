"""Holdout accuracy of every candidate, of our LightGBM against LightGBM's library defaults, and
of `--tune` against no tuning, on history files, simulated histories and the Azure LLM trace.

    nice -n 10 .venv/bin/python training/bench_accuracy.py --simulated 20000 \\
        --azure ../shared/data/azure_llm_2023 var/bench/specialists.parquet \\
        --tune 20 --out training/results/accuracy.json

Each history runs through the full pipeline (`run_training`, default config unless --config)
in a fresh temporary AGENTLB_HOME, so nothing touches the real tracking store or models/; with
`--tune N` it runs a second time with an N-trial search. The library-defaults comparison uses
the same features (`select_features`), the same time split and the same log target; only the
p50 booster's parameters differ (LightGBM 4's defaults: 100 rounds, learning rate 0.1, 31
leaves, 20 rows per leaf, no feature sampling, no L2, 255 bins). Written to
training/results/accuracy.json, the results also rewrite their section of docs/benchmarks.md
(`agentlb render-tables` renders it again; a test keeps the committed doc equal to it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_DEFAULTS: dict[str, Any] = {"objective": "regression", "verbosity": -1}
LIBRARY_DEFAULT_ROUNDS = 100


def _sources(args: argparse.Namespace) -> list[tuple[str, Any]]:
    sources: list[tuple[str, Any]] = []
    if args.simulated:
        from agentlb.training.synthetic import synthetic_history

        sources.append((f"simulated ({args.simulated:,} tasks)", synthetic_history(args.simulated, seed=0)))
    if args.azure:
        from agentlb.sim.trace import load_azure_trace

        sources.append(("Azure LLM trace as a history (tokens as attributes)", load_azure_trace(args.azure)))
    sources.extend((path.stem, path) for path in args.histories)
    return sources


def library_defaults_comparison(history: Any, config: Any) -> dict[str, Any]:
    """p50 holdout MAE (s) of our LightGBM parameters and of LightGBM's library defaults, on
    the same features, split and log target."""
    import lightgbm as lgb
    import numpy as np

    from agentlb.training.candidates import train_p50
    from agentlb.training.data import encode, prepare_history
    from agentlb.training.feature_select import select_features

    prepared = prepare_history(
        history,
        config.holdout_frac,
        min_train_rows=config.min_train_rows,
        min_holdout_rows=config.min_holdout_rows,
    )
    selection, x_train = select_features(prepared.train)
    spec = selection.spec
    log_y = np.log(prepared.train["duration_s"].to_numpy(dtype=np.float64))
    x_holdout, _ = encode(spec, prepared.holdout)
    actual = prepared.holdout["duration_s"].to_numpy(dtype=np.float64)

    def mae(predicted_log: Any) -> float:
        return float(np.mean(np.abs(np.exp(np.asarray(predicted_log)) - actual)))

    started = time.perf_counter()
    ours = train_p50(spec, x_train, log_y, config.lightgbm, config.seed)
    ours_s = time.perf_counter() - started
    params = {**LIBRARY_DEFAULTS, "seed": config.seed, "num_threads": config.lightgbm.num_threads}
    dataset = lgb.Dataset(
        x_train, label=log_y, feature_name=spec.feature_names, categorical_feature=spec.categorical_indices
    )
    started = time.perf_counter()
    defaults = lgb.train(params, dataset, num_boost_round=LIBRARY_DEFAULT_ROUNDS)
    defaults_s = time.perf_counter() - started
    return {
        "ours_mae": mae(ours.predict(x_holdout)),
        "library_defaults_mae": mae(defaults.predict(x_holdout)),
        "ours_train_s": ours_s,
        "library_defaults_train_s": defaults_s,
    }


def _lightgbm(summary: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in summary["candidates"] if c["name"] == "lightgbm")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from agentlb.settings import load_settings
    from agentlb.training.config import HGBConfig, load_config
    from agentlb.training.pipeline import run_training

    config = load_config(args.config)
    results = []
    for name, history in _sources(args):
        entry: dict[str, Any] = {"history": name}
        with tempfile.TemporaryDirectory(prefix="agentlb-acc-") as home:
            settings = load_settings(home=Path(home), mlflow_tracking_uri=None, model_uri=None)
            started = time.perf_counter()
            summary = run_training(history, settings=settings, config=config, export=False)
            entry["total_s"] = time.perf_counter() - started
        entry["rows"] = summary["rows"]
        entry["candidates"] = summary["candidates"]
        entry["failed_candidates"] = summary["failed_candidates"]
        entry["dropped_features"] = summary["dropped_features"]
        entry["notice"] = summary["notice"]
        entry["library_defaults"] = library_defaults_comparison(history, config)
        if args.tune:
            untuned = config.replace(sklearn_hgb=HGBConfig(enabled=False))
            with tempfile.TemporaryDirectory(prefix="agentlb-acc-") as home:
                settings = load_settings(home=Path(home), mlflow_tracking_uri=None, model_uri=None)
                started = time.perf_counter()
                tuned = run_training(
                    history, settings=settings, config=untuned, export=False, tune_trials=args.tune
                )
                tuned_total_s = time.perf_counter() - started
            entry["tune"] = {
                "trials": args.tune,
                "default": {k: _lightgbm(summary)[k] for k in ("mae", "p90_coverage", "train_s")},
                "tuned": {k: _lightgbm(tuned)[k] for k in ("mae", "p90_coverage", "train_s")},
                "tune_s": tuned["tuning"]["tune_s"],
                "tuned_total_s": tuned_total_s,
                "best_cv_mae": tuned["tuning"]["best_cv_mae"],
                "default_cv_mae": tuned["tuning"]["default_cv_mae"],
                "best_params": tuned["tuning"]["best_params"],
            }
        results.append(entry)
        print(f"measured {name}", flush=True)
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "config": str(args.config or "training/configs/default.yaml"),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("histories", nargs="*", type=Path)
    parser.add_argument("--simulated", type=int, default=0, help="also a simulated history of N tasks")
    parser.add_argument(
        "--azure", type=Path, default=None, help="also the Azure LLM trace folder as a history"
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--tune", type=int, default=0, help="also train with --tune N and compare")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args()
    from agentlb.generated_docs import write_sections_of
    from agentlb.training.bench_docs import render_accuracy

    document = measure(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(render_accuracy(document), end="")
    if args.out:
        write_sections_of(ROOT, args.out)


if __name__ == "__main__":
    main()
