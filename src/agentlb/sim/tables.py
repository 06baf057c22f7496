"""The decision-quality tables of README.md and docs/benchmarks.md, rendered from the results
files `agentlb benchmark --predictor model` writes (`benchmarks/results/benchmark-model*.json`);
`agentlb.generated_docs` lists them with the other generated sections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentlb.doc_sections import DocSectionError
from agentlb.sim.report import ratio_ci_text

LEARNED = ("hybrid", "predictive")

_LABELS = {
    "heterogeneous": "heterogeneous (speeds 0.5-2.0)",
    "degradation": "degradation (5× slow-downs)",
    "surveillance": "surveillance (the demo fleet)",
    "flaky": "flaky (3 of 12 fail 20%)",
    "bursty": "bursty arrivals",
}
TRACE_LABEL = "Azure LLM trace replay"


def _rows(results: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for run in results["runs"]:
        out.setdefault(run["scenario"], {})[run["strategy"]] = run
    return out


def _need(runs: Mapping[str, Mapping[str, Any]], strategy: str, where: str) -> Mapping[str, Any]:
    if strategy not in runs:
        raise DocSectionError(f"{where} has no {strategy!r} run")
    run = runs[strategy]
    if "ratio_mean_to_best_classical" not in run:
        raise DocSectionError(f"{where} has no best-classical ratios; re-run `agentlb benchmark`")
    return run


def _command(results: Mapping[str, Any]) -> str:
    if "runs" not in results or "config" not in results:
        raise DocSectionError("not an `agentlb benchmark` results.json (no runs/config)")
    c = results["config"]
    parts = [
        "agentlb benchmark",
        f"--scenarios {','.join(c['scenarios'])}",
        f"--strategies {','.join(c['strategies'])}",
        f"--seeds {c['seeds']} --tasks {c['tasks']} --predictor {c['predictor']}",
        f"--warmup-tasks {c['warmup_tasks']}",
    ]
    if c.get("first_seed"):
        parts.append(f"--first-seed {c['first_seed']}")
    if c.get("trace_path"):
        parts.append(f"--trace {c['trace_path']} --time-scale {c['time_scale']:g}")
    return " ".join(parts)


def _summary_lines(
    results: Mapping[str, Any], trace: Mapping[str, Any] | None
) -> list[tuple[str, Mapping[str, Mapping[str, Any]]]]:
    by = _rows(results)
    lines: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = [
        (_LABELS.get(s, s), by[s]) for s in results["config"]["scenarios"] if s in by
    ]
    if trace is not None:
        for runs in _rows(trace).values():
            lines.append((TRACE_LABEL, runs))
    return lines


def render_readme_table(results: Mapping[str, Any], trace: Mapping[str, Any] | None) -> str:
    """Per scenario: hybrid and predictive mean and p99 / best classical baseline, the oracle's
    mean / best, and hybrid and predictive mean / oracle; each with its paired 95% CI."""
    out = [
        f"`{_command(results)}`" + (f" and `{_command(trace)}`" if trace else "") + ".",
        "",
        "| scenario | hybrid mean / best | hybrid p99 / best | predictive mean / best "
        "| predictive p99 / best | oracle mean / best | hybrid / oracle | predictive / oracle |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, runs in _summary_lines(results, trace):
        hybrid, predictive = (_need(runs, s, label) for s in LEARNED)
        oracle = _need(runs, "oracle", label)
        cells = [
            ratio_ci_text(hybrid, "ratio_mean_to_best_classical"),
            ratio_ci_text(hybrid, "ratio_p99_to_best_classical"),
            ratio_ci_text(predictive, "ratio_mean_to_best_classical"),
            ratio_ci_text(predictive, "ratio_p99_to_best_classical"),
            ratio_ci_text(oracle, "ratio_mean_to_best_classical"),
            ratio_ci_text(hybrid, "ratio_mean_to_oracle"),
            ratio_ci_text(predictive, "ratio_mean_to_oracle"),
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _seconds(value: Any, digits: int) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def render_docs_table(results: Mapping[str, Any], trace: Mapping[str, Any] | None) -> str:
    """Per scenario and strategy (learned, oracle, the best classical baseline): seconds and
    every ratio with its paired 95% CI."""
    out = [
        f"`{_command(results)}`" + (f" and `{_command(trace)}`" if trace else "") + ".",
        "",
        "| scenario | strategy | mean s | p99 s | mean / best baseline | p99 / best baseline "
        "| mean / oracle | p99 / oracle |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, runs in _summary_lines(results, trace):
        first = _need(runs, "oracle", label)
        best_mean, best_p99 = first.get("best_classical_mean"), first.get("best_classical_p99")
        names = [*LEARNED, "oracle", *dict.fromkeys(n for n in (best_mean, best_p99) if n)]
        for name in names:
            run = _need(runs, name, label)
            tags = [t for t, best in (("best mean", best_mean), ("best p99", best_p99)) if best == name]
            shown = name + (f" ({', '.join(tags)})" if tags else "")
            out.append(
                f"| {label} | {shown} | {_seconds(run['mean_sojourn_s'], 2)} "
                f"| {_seconds(run['p99_sojourn_s'], 1)} "
                f"| {ratio_ci_text(run, 'ratio_mean_to_best_classical')} "
                f"| {ratio_ci_text(run, 'ratio_p99_to_best_classical')} "
                f"| {ratio_ci_text(run, 'ratio_mean_to_oracle')} "
                f"| {ratio_ci_text(run, 'ratio_p99_to_oracle')} |"
            )
    return "\n".join(out)
