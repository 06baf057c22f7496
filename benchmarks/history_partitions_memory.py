"""Peak memory of reading the task history whole vs in partitions (issue 21, data side).

    .venv/bin/python benchmarks/history_partitions_memory.py --rows 1000000 --work-dir /tmp/agentlb-mem

Fills a SQLite store with `--rows` simulated tasks (`agentlb.training.synthetic`, imported
100,000 at a time, about 1.5 days of arrivals per 100,000; skipped when the store is already
there), then runs each phase in a fresh process and prints its peak RSS (ru_maxrss) and wall
time:

- whole: `Store.history_frame()` + `validate_history`, the single-process path of `train --from-db`,
  for reference;
- export: `history export --partition-by day` (a day at a time);
- read-store: `read_partitioned_history(db_url=...)`, every partition computed and dropped in
  turn (Dask's synchronous scheduler);
- read-dataset: the same from the exported Parquet dataset.

Every phase runs under an address-space cap (`--cap-gib`, default 8) so it cannot take the
shared machine down; a phase that hits it fails with MemoryError and is reported as such.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 100_000
START = 1_780_000_000.0
PHASES = ("whole", "export", "read-store", "read-dataset")


def _prepare(db: Path, rows: int) -> None:
    from agentlb.store import Store
    from agentlb.training.synthetic import synthetic_history

    store = Store.open(f"sqlite:///{db}")
    try:
        offset = START
        for chunk, start in enumerate(range(0, rows, CHUNK)):
            frame = synthetic_history(min(CHUNK, rows - start), seed=chunk)
            frame["arrival_time"] = offset + frame["arrival_time"] * 3.0
            offset = float(frame["arrival_time"].max()) + 1.0
            store.import_history(frame)
            print(f"  imported {start + len(frame):,} rows", flush=True)
    finally:
        store.close()


def _phase(name: str, db: Path, dataset: Path) -> dict[str, float | int]:
    url = f"sqlite:///{db}"
    started = time.perf_counter()
    largest = 0
    if name == "whole":
        from agentlb.history import validate_history
        from agentlb.store import Store

        store = Store(url)
        rows = len(validate_history(store.history_frame()).frame)
        store.close()
    elif name == "export":
        from agentlb.training.distributed.export import export_partitioned_history

        report = export_partitioned_history(url, dataset, overwrite=True)
        rows = report.rows
    else:
        from agentlb.training.distributed.source import read_partitioned_history

        source = dataset if name == "read-dataset" else None
        frame = read_partitioned_history(source, db_url=None if source else url)
        lengths = frame.map_partitions(len).compute(scheduler="sync")
        rows, largest = int(lengths.sum()), int(lengths.max())
    return {
        "rows": rows,
        "largest_partition_rows": largest,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/agentlb-history-memory"))
    parser.add_argument("--cap-gib", type=float, default=8.0)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    db = args.work_dir / f"history-{args.rows}.db"
    dataset = args.work_dir / f"history-{args.rows}"
    cap = int(args.cap_gib * 2**30)
    if args.phase:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(_phase(args.phase, db, dataset)))
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        print(f"filling {db} with {args.rows:,} simulated tasks", flush=True)
        _prepare(db, args.rows)
    print(f"{'phase':<14}{'rows':>11}{'largest part':>14}{'seconds':>9}{'peak RSS MiB':>14}")
    for phase in PHASES:
        done = subprocess.run(
            [sys.executable, __file__, "--rows", str(args.rows), "--work-dir", str(args.work_dir),
             "--cap-gib", str(args.cap_gib), "--phase", phase],
            capture_output=True, text=True, check=False,
        )
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{phase:<14} failed: {last}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{phase:<14}{result['rows']:>11,}{result['largest_partition_rows']:>14,}"
            f"{result['seconds']:>9}{result['peak_rss_mib']:>14,.0f}"
        )


if __name__ == "__main__":
    main()
