"""Training on 1M, 5M and 10M simulated rows: wall time and peak memory of every process, in
process (`agentlb train --history FILE`) against a LocalCluster (`agentlb train --dask local:2
--history DATASET`), on this machine.

    nice -n 10 .venv/bin/python training/bench_dask.py --rows 1000000 5000000 10000000 \\
        --out training/results/dask.json

The history is the training tests' generator in chunks of 50,000 tasks, seeds 0-19 (the chunks
of `bench_scale.py`'s 1M rows); 5M and 10M rows repeat those 20 simulations with shifted arrival
times and task ids (a simulation takes ~6-15 s per chunk here; LightGBM's cost depends on the
rows, not on their being distinct). The chunks are written one at a time, never whole in
memory, as one Parquet file (what `--history` takes in process) and as a dataset of one
Parquet file per day of arrival time (what `--dask` reads partition by partition), cached
under var/bench/dask/.

Each run is a child process with a fresh AGENTLB_HOME under a hard address-space cap
(RLIMIT_AS, inherited by the cluster's worker processes), niced, and watched: the resident
memory of the command and of each of its child processes is sampled every 0.25 s (psutil), and
the whole tree is killed when its total passes `--tree-cap-gb`. A run that dies under the cap
is recorded with the last stage it reported. Written to training/results/dask.json, the results
also rewrite their section of docs/benchmarks.md (`agentlb render-tables --only training-dask`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "training" / "results" / "dask.json"
CACHE = ROOT / "var" / "bench" / "dask"
CHUNK = 50_000
DISTINCT_CHUNKS = 20
EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: arrival times as real dates
DAY_S = 86_400.0
GIB = 1024**3


def ensure_chunks(cache: Path) -> list[Path]:
    """The 20 simulated chunks (seeds 0-19), simulated once."""
    from agentlb.training.synthetic import synthetic_history

    chunks = cache / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(DISTINCT_CHUNKS):
        path = chunks / f"chunk-{seed:03d}.parquet"
        if not path.is_file():
            staging = path.with_suffix(".tmp")
            synthetic_history(n_tasks=CHUNK, seed=seed).to_parquet(staging, index=False)
            staging.rename(path)
            print(f"simulated chunk {seed + 1}/{DISTINCT_CHUNKS}", file=sys.stderr, flush=True)
        paths.append(path)
    return paths


def write_history(rows: int, cache: Path) -> tuple[Path, Path]:
    """`rows` rows as one Parquet file and as a dataset of one file per day, chunk by chunk."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    single = cache / f"history-{rows}.parquet"
    dataset = cache / f"history-{rows}"
    if single.is_file() and (dataset / "_complete").is_file():
        return single, dataset
    chunks = ensure_chunks(cache)
    dataset.mkdir(parents=True, exist_ok=True)
    for old in dataset.glob("*.parquet"):
        old.unlink()
    writer: pq.ParquetWriter | None = None
    day_writer: pq.ParquetWriter | None = None
    day_open: str | None = None
    offset = EPOCH
    for index in range(rows // CHUNK):
        chunk = pd.read_parquet(chunks[index % DISTINCT_CHUNKS])
        chunk["arrival_time"] = chunk["arrival_time"] + offset
        chunk["task_id"] = f"r{index // DISTINCT_CHUNKS}-" + chunk["task_id"].astype(str)
        offset = float(chunk["arrival_time"].max()) + 1.0
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(single, table.schema)
        writer.write_table(table)
        days = pd.to_datetime(chunk["arrival_time"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
        for day in days.unique():
            part = pa.Table.from_pandas(chunk[days == day], preserve_index=False)
            if day != day_open:
                if day_writer is not None:
                    day_writer.close()
                day_writer, day_open = pq.ParquetWriter(dataset / f"{day}.parquet", part.schema), day
            assert day_writer is not None
            day_writer.write_table(part)
        print(f"wrote {(index + 1) * CHUNK:,} / {rows:,} rows", file=sys.stderr, flush=True)
    for open_writer in (writer, day_writer):
        if open_writer is not None:
            open_writer.close()
    (dataset / "_complete").write_text("")
    return single, dataset


class TreeSampler:
    """Peak resident memory of a process and each of its descendants, sampled in a thread; the
    tree is killed once its total passes `cap_bytes`."""

    def __init__(self, pid: int, cap_bytes: int, every_s: float = 0.25) -> None:
        self.pid, self.cap_bytes, self.every_s = pid, cap_bytes, every_s
        self.peaks: dict[int, dict[str, Any]] = {}
        self.peak_total = 0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in tree:
                try:
                    rss = process.memory_info().rss
                    entry = self.peaks.setdefault(
                        process.pid, {"rss": 0, "cmdline": " ".join(process.cmdline())}
                    )
                except psutil.Error:
                    continue
                entry["rss"] = max(entry["rss"], rss)
                total += rss
            self.peak_total = max(self.peak_total, total)
            if total > self.cap_bytes and not self.killed:
                self.killed = True
                self.kill_tree()
            time.sleep(self.every_s)

    def kill_tree(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in reversed(tree):
            with contextlib.suppress(psutil.Error):
                process.kill()

    def per_process_mb(self) -> dict[str, int]:
        """Peak RSS by role: the command itself (`client`: for --dask also the scheduler and the
        nannies), then each worker process; helpers below 50 MB are left out."""
        named: dict[str, int] = {}
        workers = 0
        for pid, entry in sorted(self.peaks.items()):
            mb = round(entry["rss"] / 2**20)
            if pid == self.pid:
                named["client"] = mb
            elif mb >= 50 and "resource_tracker" not in entry["cmdline"]:
                workers += 1
                named[f"worker {workers}"] = mb
        return named


def measure(
    command: list[str], env: dict[str, str], as_cap_gb: float, tree_cap_gb: float, timeout_s: float
) -> dict[str, Any]:
    """Run `command` under the caps; wall time, per-process peaks, outcome."""
    cap = int(as_cap_gb * GIB)

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.nice(max(0, 10 - os.nice(0)))  # niceness 10, also when the bench itself runs niced

    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limits
    )
    timed_out = False
    with TreeSampler(process.pid, int(tree_cap_gb * GIB)) as sampler:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            sampler.kill_tree()
            stdout, stderr = process.communicate()
    wall_s = time.perf_counter() - started
    entry: dict[str, Any] = {
        "wall_s": round(wall_s, 1),
        "peak_rss_mb": sampler.per_process_mb(),
        "peak_tree_mb": round(sampler.peak_total / 2**20),
        "address_space_cap_gb": as_cap_gb,
    }
    if process.returncode == 0:
        summary = json.loads(stdout)
        lightgbm = next(c for c in summary["candidates"] if c["name"] == "lightgbm")
        entry.update(
            status="ok",
            rows=summary["rows"],
            lightgbm_mae=round(lightgbm["mae"], 4),
            p90_coverage=round(lightgbm["p90_coverage"], 4),
            stages_s={k: round(summary[k], 1) for k in ("load_validate_s", "encode_s", "fit_s", "total_s")},
        )
        return entry
    entry.update(status="failed", returncode=process.returncode, stopped_at=_last_stage(stderr))
    if timed_out:
        entry["error"] = f"stopped after the {timeout_s:g} s time limit"
    elif sampler.killed:
        entry["error"] = "killed by the memory watchdog"
    else:
        entry["error"] = _last_error(stderr)
    return entry


def _last_stage(stderr: str) -> str | None:
    stages = re.findall(r"\[\s*(\d+)%\]\s*([^\n\r]+)", stderr)
    return f"{stages[-1][0]}%: {stages[-1][1].strip()}" if stages else None


def _last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or line.startswith("error:")]
    return (errors[-1] if errors else (lines[-1] if lines else "no output"))[:300]


def dask_history(dataset: Path) -> Any:
    """The per-day Parquet dataset as a Dask frame validated partition by partition."""
    import dask.dataframe as dd

    from agentlb.history import validate_history

    try:
        from agentlb.training.distributed.source import read_partitioned_history
    except ImportError:
        frame = dd.read_parquet(str(dataset / "*.parquet"))
        meta = validate_history(frame.partitions[0].head(100)).frame.iloc[:0]
        return frame.map_partitions(lambda part: validate_history(part).frame, meta=meta)
    return read_partitioned_history(dataset)


def train_dask_child(args: argparse.Namespace) -> None:
    """`agentlb train --dask ADDRESS --history DATASET --json --no-export` with the bench's
    reader: the child process of the --dask measurements."""
    from agentlb.training.config import load_config
    from agentlb.training.distributed.cluster import dask_client, parse_target
    from agentlb.training.distributed.pipeline import run_dask_training

    target = parse_target(args.dask)
    with (
        contextlib.redirect_stdout(sys.stderr),
        dask_client(target, lambda line: print(line, file=sys.stderr, flush=True)) as client,
    ):
        summary = run_dask_training(
            dask_history(args.train_dask),
            client,
            target,
            config=load_config(args.config),
            export=False,
            progress=lambda message, fraction: print(f"[{100 * fraction:3.0f}%] {message}", file=sys.stderr),
        )
    print(json.dumps(summary, default=str), flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    agentlb = str(Path(sys.executable).parent / "agentlb")
    config = str(args.config)
    results: list[dict[str, Any]] = []
    for rows in args.rows:
        single, dataset = write_history(rows, args.cache)
        modes = [
            ("in process", [agentlb, "train", "--history", str(single)]),
            (
                f"dask {args.dask}",
                [sys.executable, __file__, "--train-dask", str(dataset), "--dask", args.dask],
            ),
        ]
        for mode, command in modes:
            if args.only and args.only not in mode:
                continue
            with tempfile.TemporaryDirectory(prefix="agentlb-bench-dask-") as home:
                env = {**os.environ, "AGENTLB_HOME": home, "MLFLOW_DISABLE_TELEMETRY": "true"}
                for name in ("AGENTLB_MLFLOW_TRACKING_URI", "AGENTLB_DASK_SCHEDULER", "AGENTLB_MODEL_URI"):
                    env.pop(name, None)
                cli = ["--json", "--no-export"] if command[0] == agentlb else []
                full = [*command, "--config", config, *cli]
                print(f"{rows:,} rows, {mode}: {' '.join(full[1:])}", file=sys.stderr, flush=True)
                entry = measure(full, env, args.as_cap_gb, args.tree_cap_gb, args.timeout_s)
            shown = " ".join(["agentlb" if full[0] == agentlb else "python", *full[1:]])
            entry.update(history_rows=rows, mode=mode, command=shown.replace(str(ROOT) + "/", ""))
            print(json.dumps(entry), file=sys.stderr, flush=True)
            results.append(entry)
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB)} GiB, shared",
        "config": str(Path(config).relative_to(ROOT)) if Path(config).is_relative_to(ROOT) else config,
        "target": "10M rows through Dask with no process above 8 GiB",
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--dask", default="local:2", help="the --dask address of the cluster runs")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "configs" / "large.yaml")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--as-cap-gb", type=float, default=12.0, help="RLIMIT_AS of every process")
    parser.add_argument("--tree-cap-gb", type=float, default=16.0, help="kill the run above this total RSS")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="stop a run after this long")
    parser.add_argument("--only", default="", help="run only the modes containing this text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="add to the results already in --out")
    parser.add_argument("--train-dask", type=Path, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.train_dask:
        train_dask_child(args)
        return
    document = run(args)
    if args.merge and args.out.is_file():
        previous = json.loads(args.out.read_text())
        fresh = {(r["history_rows"], r["mode"]) for r in document["results"]}
        kept = [r for r in previous["results"] if (r["history_rows"], r["mode"]) not in fresh]
        document["results"] = sorted(kept + document["results"], key=lambda r: (r["history_rows"], r["mode"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    from agentlb.generated_docs import write_sections_of

    written = write_sections_of(ROOT, args.out)
    print(f"wrote {args.out}; docs sections rewritten: {[s.name for s in written]}", file=sys.stderr)


if __name__ == "__main__":
    main()
