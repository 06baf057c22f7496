"""The training sections of docs/benchmarks.md: accuracy, rendered from the results file of
`training/bench_accuracy.py` (`training/results/accuracy.json`), and training on a Dask cluster,
from `training/bench_dask.py` (`training/results/dask.json`); `agentlb.generated_docs` lists
them."""

from __future__ import annotations

from typing import Any


def render_accuracy(document: dict[str, Any]) -> str:
    """The markdown tables of a results file."""
    lines = [
        f"Measured {document['measured_at']} ({document['machine']}, config {document['config']}).",
        "",
        "| history | candidate | MAE (s) | RMSE (s) | MAPE | p90 coverage | train s | predict µs/row |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in document["results"]:
        for c in r["candidates"]:
            lines.append(
                f"| {r['history']} | {c['name']} | {c['mae']:.3f} | {c['rmse']:.3f} | {c['mape']:.3f} | "
                f"{c['p90_coverage']:.3f} | {c['train_s']:.2f} | {c['predict_us_per_row']:.2f} |"
            )
        for f in r["failed_candidates"]:
            lines.append(f"| {r['history']} | {f['name']} | failed: {f['error']} | | | | | |")
    lines += [
        "",
        "**Our LightGBM parameters against LightGBM's library defaults** (p50, same features, split and",
        "log target):",
        "",
        "| history | train / holdout rows | MAE ours (s) | MAE library defaults (s) | ours / defaults |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in document["results"]:
        d = r["library_defaults"]
        lines.append(
            f"| {r['history']} | {r['rows']['train']:,} / {r['rows']['holdout']:,} | {d['ours_mae']:.4f} | "
            f"{d['library_defaults_mae']:.4f} | {d['ours_mae'] / d['library_defaults_mae']:.3f} |"
        )
    tuned = [r for r in document["results"] if "tune" in r]
    if tuned:
        lines += [
            "",
            f"**`--tune {tuned[0]['tune']['trials']}`** (Optuna TPE, 3 time-ordered folds inside the"
            " training part; holdout untouched):",
            "",
            "| history | MAE default (s) | MAE tuned (s) | p90 coverage default | p90 coverage tuned | "
            "inner-CV MAE default / tuned (s) | search s | best parameters |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in tuned:
            t = r["tune"]
            params = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(t["best_params"].items())
            )
            lines.append(
                f"| {r['history']} | {t['default']['mae']:.4f} | {t['tuned']['mae']:.4f} | "
                f"{t['default']['p90_coverage']:.3f} | {t['tuned']['p90_coverage']:.3f} | "
                f"{t['default_cv_mae']:.4f} / {t['best_cv_mae']:.4f} | {t['tune_s']:.1f} | {params} |"
            )
    notices = [f"- {r['history']}: {r['notice']}" for r in document["results"] if r.get("notice")]
    if notices:
        lines += ["", *notices]
    return "\n".join(lines) + "\n"


def _gib(mb: int) -> str:
    return f"{mb / 1024:.2f}"


def render_dask(document: dict[str, Any]) -> str:
    """The table of `training/bench_dask.py`'s results: one row per history size and mode."""
    lines = [
        f"Measured {document['measured_at']} ({document['machine']}, config {document['config']}; "
        f"target: {document['target']}).",
        "",
        "| rows | mode | outcome | wall s | peak RSS per process (GiB) | largest process (GiB) | "
        "LightGBM MAE (s) | p90 coverage |",
        "| ---: | --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in document["results"]:
        peaks = r["peak_rss_mb"]
        per_process = ", ".join(f"{name} {_gib(mb)}" for name, mb in peaks.items())
        largest = _gib(max(peaks.values())) if peaks else "n/a"
        if r["status"] == "ok":
            outcome, mae, coverage = "trained", f"{r['lightgbm_mae']:.4f}", f"{r['p90_coverage']:.3f}"
        else:
            where = f" at {r['stopped_at']}" if r.get("stopped_at") else ""
            outcome, mae, coverage = (
                f"failed{where}: {r['error']} (cap {r['address_space_cap_gb']:g} GiB)",
                "",
                "",
            )
        lines.append(
            f"| {r['history_rows']:,} | {r['mode']} | {outcome} | {r['wall_s']:.1f} | {per_process} | "
            f"{largest} | {mae} | {coverage} |"
        )
    return "\n".join(lines) + "\n"
