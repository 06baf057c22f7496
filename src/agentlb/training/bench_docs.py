"""The training-accuracy section of docs/benchmarks.md, rendered from the results file of
`training/bench_accuracy.py` (`training/results/accuracy.json`); `agentlb.generated_docs`
lists it."""

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
