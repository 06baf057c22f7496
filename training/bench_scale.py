"""Training time and peak memory on a large simulated history (`make`-free: run it directly).

    .venv/bin/python training/bench_scale.py --rows 1000000 --config training/configs/large.yaml

The history is made by `agentlb.training.synthetic` in chunks of 50,000 tasks (one simulation
per chunk, seeds 0.., arrival times shifted so the chunks follow each other) and cached as
Parquet under var/bench/. `agentlb train --history ... --json --no-export` then runs in a
child process with a fresh AGENTLB_HOME; its wall time and peak RSS (getrusage of children)
are printed as JSON, with the pipeline's own stage timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 50_000


def make_history(rows: int, out: Path) -> Path:
    import pandas as pd

    from agentlb.training.synthetic import synthetic_history

    if out.is_file():
        return out
    frames = []
    offset = 0.0
    for seed, start in enumerate(range(0, rows, CHUNK)):
        chunk = synthetic_history(n_tasks=min(CHUNK, rows - start), seed=seed)
        chunk["arrival_time"] += offset
        offset = float(chunk["arrival_time"].max()) + 1.0
        frames.append(chunk)
        print(f"simulated {start + len(chunk)} / {rows} tasks", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames, ignore_index=True).to_parquet(out, index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("var/bench"))
    args = parser.parse_args()
    history = make_history(args.rows, args.cache / f"synthetic-{args.rows}.parquet")
    agentlb = Path(sys.executable).parent / "agentlb"
    command = [str(agentlb), "train", "--history", str(history), "--json", "--no-export"]
    if args.config:
        command += ["--config", str(args.config)]
    with tempfile.TemporaryDirectory(prefix="agentlb-bench-") as home:
        env = {**os.environ, "AGENTLB_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("AGENTLB_MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        wall_s = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"train failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": args.rows,
                "command": " ".join(command[1:]),
                "wall_s": round(wall_s, 1),
                "pipeline_total_s": round(summary["total_s"], 1),
                "fit_s": round(summary["fit_s"], 1),
                "load_validate_s": round(summary["load_validate_s"], 1),
                "encode_s": round(summary["encode_s"], 1),
                "peak_rss_mb": round(peak_mb),
                "candidates": {
                    c["name"]: {
                        "mae": round(c["mae"], 3),
                        "p90_coverage": round(c["p90_coverage"], 3),
                        "train_s": round(c["train_s"], 1),
                    }
                    for c in summary["candidates"]
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
