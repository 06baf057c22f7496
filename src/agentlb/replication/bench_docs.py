"""The docs/benchmarks.md sections of the replicated-serving benchmarks, rendered from their
results files: `benchmarks/shared_state.py` (what the shared state adds to a selection, in
process) and `benchmarks/replicas.py` (throughput and decision quality through 1 and 2 replicas).
`agentlb.generated_docs` lists them."""

from __future__ import annotations

from typing import Any

# the configurations of the throughput part, in the table's order
THROUGHPUT_CONFIGS = ("embedded", "redis x1 direct", "front x1", "front x2")


def render_shared_state(document: dict[str, Any]) -> str:
    floor = document["redis_round_trip_p50_us"]
    lines = [
        f"Command: `.venv/bin/python {document['command']}` (Redis at {document['redis_url']}; "
        f"round trip in the same run, p50: PING {floor['ping']} µs, a trivial script {floor['evalsha']} µs).",
        "",
        "| agents | strategy | select p50 embedded (µs) | select p50 Redis (µs) | added (µs) "
        "| outcome p50 embedded (µs) | outcome p50 Redis (µs) | added (µs) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in document["records"]:
        lines.append(
            f"| {r['agents']} | {r['strategy']} | {r['embedded_select_p50_us']} | {r['redis_select_p50_us']} "
            f"| {r['select_p50_added_us']} | {r['embedded_outcome_p50_us']} | {r['redis_outcome_p50_us']} "
            f"| {r['outcome_p50_added_us']} |"
        )
    return "\n".join(lines)


def provenance(part: dict[str, Any]) -> str:
    return (
        f"Command: `{part['command']}`, {part['date']}, {part['cpus']} CPUs shared with other work; "
        f"`uptime` before: `{part['uptime_before']}`, after: `{part['uptime_after']}`."
    )


def render_replicas(document: dict[str, Any]) -> str:
    lines: list[str] = []
    t = document.get("throughput")
    if t:
        m = t["medians"]
        lines += [
            provenance(t),
            "",
            f"Select throughput (wrk, {t['connections']} connections, {t['duration_s']} s per run, "
            f"{t['agents']} agents, hybrid, heuristic predictor; medians of {t['rounds']} rounds):",
            "",
            "| configuration | req/s | p50 ms | p99 ms | errors |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in THROUGHPUT_CONFIGS:
            lines.append(
                f"| {name} | {m[name]['req_per_s']:.0f} | {m[name]['p50_ms']:.1f} | {m[name]['p99_ms']:.1f} "
                f"| {t['errors'][name]} |"
            )
        lines += [
            "",
            f"2 replicas / 1 replica behind the front: **{t['two_over_one']:.2f}x** (per round: "
            + ", ".join(f"{x:.2f}" for x in t["two_over_one_per_round"])
            + f"). Redis-backed replica / embedded: **{t['redis_over_embedded']:.2f}x** (per round: "
            + ", ".join(f"{x:.2f}" for x in t["redis_over_embedded_per_round"])
            + ").",
        ]
    q = document.get("quality")
    if q:
        means = q["median_mean_sojourn_s"]
        lines += [
            "",
            provenance(q),
            "",
            f"Decision quality ({q['scenario']} stream, {q['tasks']} tasks, seed {q['seed']}, time scale "
            f"{q['time_scale']}, {q['rounds']} rounds alternating): mean sojourn in simulated seconds, "
            "median over runs",
            "",
            "| replicas | mean sojourn s (replayed) | runs | wall-clock mean sojourn s, runs | errors |",
            "| ---: | ---: | --- | --- | ---: |",
        ]
        for k in ("1", "2"):
            runs = ", ".join(f"{run['mean_sojourn_s']:.3f}" for run in q["runs"][k])
            wall = ", ".join(f"{run['wall_mean_sojourn_s']:.2f}" for run in q["runs"][k])
            lines.append(f"| {k} | {means[k]:.3f} | {runs} | {wall} | {q['errors'][k]} |")
        lines += ["", f"2 replicas / 1: **{q['two_over_one']:.3f}**."]
    return "\n".join(lines).strip("\n")
