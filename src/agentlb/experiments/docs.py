"""The docs/benchmarks.md sections of the experiments' benchmark commands
(benchmarks/experiments.py, benchmarks/shadow_overhead.py), rendered from their results files;
`agentlb.generated_docs` lists them."""

from __future__ import annotations

from typing import Any


def render_markdown(results: dict[str, Any]) -> str:
    """The docs/benchmarks.md section of `benchmarks/experiments.py`'s results file."""
    lines = [
        f"Command: `{results['command']}` ({results['wall_s']:.0f} s on this machine).",
        "",
        "**A/A tests** (both arms the same strategy, 50/50): how often the always-valid verdict "
        f"declares a difference, read after every task (stated error rate {results['alpha']}).",
        "",
        "| scenario | strategy | seeds | tasks per run | decided (false positives) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in results["aa"]:
        lines.append(
            f"| {row['scenario']} | {row['design']['arms'][0]['strategy']} | {len(row['seeds'])} | "
            f"{row['tasks']} | {row['decided_share']:.3f} |"
        )
    lines += [
        "",
        "**A/B tests**, least_connection (control) against hybrid, 50/50: the share of seeds with a "
        "verdict, the winners, and the completed tasks (both arms) at the first decisive look.",
        "",
        "| scenario | seeds | tasks per run | decided | winners | tasks to decide: median | max |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in results["ab"]:
        winners = ", ".join(f"{k} {v}" for k, v in sorted(row["winners"].items())) or "-"
        after = row["decided_after"]
        lines.append(
            f"| {row['scenario']} | {len(row['seeds'])} | {row['tasks']} | {row['decided_share']:.2f} | "
            f"{winners} | {row['decided_after_median'] if after else '-'} | {max(after) if after else '-'} |"
        )
    return "\n".join(lines)


def render_shadow_overhead(summary: dict[str, Any]) -> str:
    rows = [
        f"Command: `{summary['command']}`; {summary['selections_scored']} selections shadow-scored.",
        "",
        "| `select` time | without shadow | with the challenger shadow-scoring | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, label in (("p50_us", "p50"), ("p99_us", "p99"), ("mean_us", "mean")):
        figure = summary[name]
        rows.append(
            f"| {label} | {figure['without']:.0f} us | {figure['with']:.0f} us | {figure['ratio']:.3f} |"
        )
    return "\n".join(rows)
