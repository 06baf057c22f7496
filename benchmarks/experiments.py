"""Online experiments in the simulator: the A/A false-positive rate of the always-valid verdict
and the tasks an A/B test needs to decide, on the benchmark's scenarios.

    .venv/bin/python benchmarks/experiments.py            # writes docs/results/experiments.json
                                                          # and its section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agentlb.experiments.design import Arm, design
from agentlb.experiments.docs import render_markdown
from agentlb.generated_docs import write_sections_of
from agentlb.sim.experiment import simulate_experiments

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "experiments.json"
AA_SCENARIOS = ("homogeneous", "heterogeneous", "surveillance")
AB_SCENARIOS = (
    "homogeneous",
    "heterogeneous",
    "specialists",
    "degradation",
    "flaky",
    "bursty",
    "surveillance",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--aa-seeds", type=int, default=200)
    parser.add_argument("--ab-seeds", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    started = time.perf_counter()
    aa_plan = design("aa", [Arm("a", "least_connection", 0.5), Arm("b", "least_connection", 0.5)])
    ab_plan = design("ab", [Arm("control", "least_connection", 0.5), Arm("hybrid", "hybrid", 0.5)])
    aa = []
    for scenario in AA_SCENARIOS:
        aa.append(simulate_experiments(scenario, aa_plan, range(args.aa_seeds), args.tasks))
        print(f"A/A {scenario}: decided {aa[-1]['decided_share']:.3f}", file=sys.stderr)
    ab = []
    for scenario in AB_SCENARIOS:
        ab.append(simulate_experiments(scenario, ab_plan, range(1000, 1000 + args.ab_seeds), args.tasks))
        print(f"A/B {scenario}: decided {ab[-1]['decided_share']:.2f} {ab[-1]['winners']}", file=sys.stderr)
    for row in (*aa, *ab):
        row.pop("runs")
    results = {
        "command": "python benchmarks/experiments.py "
        f"--aa-seeds {args.aa_seeds} --ab-seeds {args.ab_seeds} --tasks {args.tasks}",
        "alpha": aa_plan.alpha,
        "wall_s": time.perf_counter() - started,
        "aa": aa,
        "ab": ab,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    section = render_markdown(results)
    if not args.no_doc:
        write_sections_of(REPO, args.out)
    print(section)


if __name__ == "__main__":
    main()
