"""report.md tables and the plots (sojourn CDF, p99 bars, utilisation per agent)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentlb.sim.benchmark import SERVED_WARMUP_MIN_TASKS


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{float(value):.{digits}f}"


def ratio_table(
    runs: Sequence[Mapping[str, Any]], key: str, scenarios: Sequence[str], strategies: Sequence[str]
) -> str:
    """Rows strategies, columns scenarios, cells `key` (a ratio)."""
    by = {(r["scenario"], r["strategy"]): r for r in runs}
    lines = ["| strategy | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for strategy in strategies:
        cells = [_f(by[(s, strategy)].get(key)) if (s, strategy) in by else "–" for s in scenarios]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_ci_text(run: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """`0.914 (0.902–0.926)`: a ratio with its paired 95% CI, `–` when absent."""
    value = run.get(key)
    if value is None:
        return "–"
    ci = run.get(f"{key}_ci95")
    return _f(value, digits) + (f" ({_f(ci[0], digits)}–{_f(ci[1], digits)})" if ci else "")


def ratio_ci_table(
    runs: Sequence[Mapping[str, Any]], key: str, scenarios: Sequence[str], strategies: Sequence[str]
) -> str:
    """Rows strategies, columns scenarios, cells `key` with its paired 95% CI."""
    by = {(r["scenario"], r["strategy"]): r for r in runs}
    lines = ["| strategy | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for strategy in strategies:
        cells = [ratio_ci_text(by[(s, strategy)], key) if (s, strategy) in by else "–" for s in scenarios]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best_line(runs: Sequence[Mapping[str, Any]], scenarios: Sequence[str], short: str) -> str:
    firsts = {r["scenario"]: r for r in reversed(runs)}
    names = [f"{s}: {firsts[s].get(f'best_classical_{short}') or '–'}" for s in scenarios if s in firsts]
    return "Best classical baseline by " + short + " sojourn — " + "; ".join(names) + "."


def render_markdown(results: Mapping[str, Any]) -> str:
    runs: list[Mapping[str, Any]] = results["runs"]
    config = results["config"]
    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    strategies = list(dict.fromkeys(r["strategy"] for r in runs))
    predictor = config.get("predictor", "heuristic")
    out = [
        "# Strategy benchmark",
        "",
        f"{config['seeds']} seeds x {config['tasks']} tasks per run (first 10% excluded as warm-up); "
        f"predictor for `predictive`/`hybrid`: **{predictor}**"
        + (
            f" (fitted on {config['warmup_tasks']} warm-up tasks served by least_connection"
            + (
                ", then again by predictive with a first model)"
                if config["warmup_tasks"] >= SERVED_WARMUP_MIN_TASKS
                else ")"
            )
            if predictor == "model"
            else ""
        )
        + f"; workload: {runs[0]['workload'] if runs else '-'}.",
        "Ratios below 1 are better than the baseline. Sojourn = wait + service. A ratio's 95% CI "
        "(in brackets) is a Student-t interval of the per-seed ratios (same seed, same fleet and "
        "tasks for every strategy); the ratio itself is of the means over seeds.",
        "",
        "## Mean sojourn / best classical baseline (lowest of power_of_two, peak_ewma, least_connection)",
        _best_line(runs, scenarios, "mean"),
        "",
        ratio_ci_table(runs, "ratio_mean_to_best_classical", scenarios, strategies),
        "",
        "## p99 sojourn / best classical baseline",
        _best_line(runs, scenarios, "p99"),
        "",
        ratio_ci_table(runs, "ratio_p99_to_best_classical", scenarios, strategies),
        "",
        "## Mean sojourn / power_of_two",
        ratio_table(runs, "ratio_mean_to_power_of_two", scenarios, strategies),
        "",
        "## p99 sojourn / power_of_two",
        ratio_table(runs, "ratio_p99_to_power_of_two", scenarios, strategies),
        "",
        "## Mean sojourn / oracle",
        ratio_ci_table(runs, "ratio_mean_to_oracle", scenarios, strategies),
        "",
        "## p99 sojourn / oracle",
        ratio_ci_table(runs, "ratio_p99_to_oracle", scenarios, strategies),
    ]
    for scenario in scenarios:
        mine = [r for r in runs if r["scenario"] == scenario]
        load = mine[0].get("offered_load") if mine else None
        out += [
            "",
            f"## {scenario}" + (f" (offered load {load:.2f})" if load else ""),
            "| strategy | mean s (95% CI) | mean / p2c (paired 95% CI) | p50 s | p95 s | p99 s "
            "| mean wait s | success | util mean | util CV | over-utilised | fallback | deadline miss |",
            "|---" * 13 + "|",
        ]
        for r in mine:
            ci = r.get("mean_sojourn_ci95")
            ci_text = f" ({_f(ci[0])}–{_f(ci[1])})" if ci else ""
            paired = r.get("ratio_mean_to_power_of_two_ci95")
            ratio_text = _f(r.get("ratio_mean_to_power_of_two")) + (
                f" ({_f(paired[0])}–{_f(paired[1])})" if paired else ""
            )
            out.append(
                f"| {r['strategy']} | {_f(r['mean_sojourn_s'])}{ci_text} | {ratio_text} "
                f"| {_f(r['p50_sojourn_s'])} "
                f"| {_f(r['p95_sojourn_s'])} | {_f(r['p99_sojourn_s'])} | {_f(r['mean_wait_s'])} "
                f"| {_f(r['success_rate'], 3)} | {_f(r['utilisation_mean'])} | {_f(r['utilisation_cv'])} "
                f"| {_f(r['over_utilised_share'], 3)} | {_f(r['fallback_rate'], 3)} "
                f"| {_f(r['deadline_miss_rate'], 3)} |"
            )
    return "\n".join(out) + "\n"


def render_plots(
    results: Mapping[str, Any], samples: Mapping[str, Mapping[str, Sequence[float]]], folder: Path
) -> list[Path]:
    """Per scenario: cdf_<s>.png (the first seed's sojourns), p99_<s>.png, utilisation_<s>.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs: list[Mapping[str, Any]] = results["runs"]
    written: list[Path] = []
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        mine = [r for r in runs if r["scenario"] == scenario]
        if scenario in samples:
            fig, ax = plt.subplots(figsize=(8, 5))
            for strategy, values in samples[scenario].items():
                data = np.sort(np.asarray(values))
                if data.size:
                    ax.plot(data, np.arange(1, data.size + 1) / data.size, label=strategy)
            ax.set_xscale("log")
            ax.set_xlabel("sojourn time (s, log)")
            ax.set_ylabel("share of tasks")
            ax.set_title(f"{scenario}: sojourn-time CDF (seed {results['config'].get('first_seed', 0)})")
            ax.legend(fontsize=7)
            written.append(folder / f"cdf_{scenario}.png")
            fig.savefig(written[-1], dpi=90, bbox_inches="tight")
            plt.close(fig)
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [r["strategy"] for r in mine]
        p99 = [r["p99_sojourn_s"] or 0.0 for r in mine]
        errors = [
            [
                max(v - r["p99_sojourn_ci95"][0], 0.0) if r.get("p99_sojourn_ci95") else 0.0
                for v, r in zip(p99, mine, strict=True)
            ],
            [
                max(r["p99_sojourn_ci95"][1] - v, 0.0) if r.get("p99_sojourn_ci95") else 0.0
                for v, r in zip(p99, mine, strict=True)
            ],
        ]
        ax.bar(names, p99, yerr=errors, capsize=3)
        ax.set_ylabel("p99 sojourn (s)")
        ax.set_title(f"{scenario}: p99 sojourn, mean over seeds with 95% CI")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        written.append(folder / f"p99_{scenario}.png")
        fig.savefig(written[-1], dpi=90, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(9, 4))
        agents = sorted({a for r in mine for a in r["utilisation_by_agent"]})
        width = 0.8 / max(len(mine), 1)
        for k, r in enumerate(mine):
            xs = np.arange(len(agents)) + k * width
            ax.bar(xs, [r["utilisation_by_agent"].get(a, 0.0) for a in agents], width, label=r["strategy"])
        ax.set_xticks(np.arange(len(agents)) + 0.4 - width / 2)
        ax.set_xticklabels(agents, rotation=60, fontsize=6)
        ax.set_ylabel("utilisation")
        ax.set_title(f"{scenario}: utilisation per agent")
        ax.legend(fontsize=6, ncol=2)
        written.append(folder / f"utilisation_{scenario}.png")
        fig.savefig(written[-1], dpi=90, bbox_inches="tight")
        plt.close(fig)
    return written
