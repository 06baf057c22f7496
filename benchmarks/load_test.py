"""HTTP load test: `/load-balancing/select-agent` against a bare FastAPI endpoint, same server.

    .venv/bin/python benchmarks/load_test.py                # wrk from apt: apt-get install -y wrk
    .venv/bin/python benchmarks/load_test.py --agents 100 --duration 10 --repeats 3 --json

One server process (uvicorn, one worker, the production app from `create_app`, JSON selection
logs on, SQLite dispatch log on) serves both endpoints. The bare endpoint `POST /bench/bare`
parses the same body with the same schema and the same access dependency and returns a
constant answer, so the ratio isolates what selecting an agent (and logging the dispatch)
costs. The two are measured alternately, `--repeats` times each, and medians are printed.
The fleet: `--agents` agents whose concurrency never binds, warmed with real outcomes of
0.5-3.5 s (2 s on average). wrk cannot report outcomes, so tasks left in flight expire after
`--expiry` s, standing in for their completion: the default, 2 s, is the typical task's duration,
which keeps the in-flight state of a fleet at steady state (about 20 running tasks per agent
at 1,000 selections/s, none overdue). `--expiry 30` is the stress case: every agent holds
hundreds of tasks, far past their predicted time, in its in-flight state.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlb.api.deps import ClientDep
from agentlb.api.schemas import SelectAgentRequest

BODY = {
    "required_capabilities": ["video_analysis"],
    "task_type": "video_task",
    "task_requirements": {"priority": "high", "complexity": "medium", "frames": 1200},
    "strategy": "hybrid",
    "top_k": 1,
}
TASK_TYPES = ("video_task", "detection_task", "triage_task")
IN_FLIGHT_EXPIRY_S = 2.0
WARM_DURATIONS_S = (0.5, 3.5)


# --- the server under test ----------------------------------------------------------------
def serve(home: Path, port: int, expiry_s: float = IN_FLIGHT_EXPIRY_S) -> None:
    """Run the production app plus the bare endpoint (called in the server subprocess)."""
    import uvicorn
    from fastapi import FastAPI

    from agentlb.api import create_app, tune_gc
    from agentlb.observability import configure_logging
    from agentlb.settings import load_settings

    settings = load_settings(home=home, in_flight_expiry_s=expiry_s, model_poll_interval_s=0)
    configure_logging(settings.log_level)
    app: FastAPI = create_app(settings)
    constant = {
        "selected_agent_id": "agent-0",
        "task_id": "0" * 32,
        "strategy_used": "hybrid",
        "confidence_score": 1.0,
        "fallback_used": False,
    }

    @app.post("/bench/bare")
    async def bare(body: SelectAgentRequest, _: ClientDep) -> dict[str, Any]:
        return constant

    tune_gc()  # as `agentlb serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning", backlog=4096)


def prepare_home(home: Path, n_agents: int) -> None:
    from agentlb.domain import Agent
    from agentlb.settings import load_settings
    from agentlb.store import Store

    settings = load_settings(home=home)
    store = Store.open(settings.db_url)
    try:
        for i in range(n_agents):
            store.add_agent(
                Agent(
                    id=f"agent-{i}",
                    name=f"Agent {i}",
                    capabilities=frozenset({"video_analysis", "object_detection"}),
                    max_concurrency=100_000,
                    weight=1.0 + (i % 4) / 2,
                )
            )
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def start_server(home: Path, port: int, expiry_s: float = IN_FLIGHT_EXPIRY_S) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLB_")}
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--home", str(home), "--expiry", str(expiry_s)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=raise_fd_limit,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/load-balancing/health", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start within 60 s")


def wait_for_evaluator(base: str, timeout_s: float = 120.0) -> str:
    """The model's evaluator once the service has compiled it (`compiled`), or what still
    serves after `timeout_s` (`lightgbm` when compiling failed or is off)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    evaluator = "lightgbm"
    while time.monotonic() < deadline:
        answer = httpx.get(f"{base}/load-balancing/model", timeout=10).json()
        evaluator = str(answer["predictor"].get("evaluator"))
        if evaluator != "lightgbm":
            break
        time.sleep(0.5)
    return evaluator


def warm(base: str, n: int) -> None:
    """Real outcomes so EWMAs, success rates and the heuristic's predictions are non-trivial."""
    import random

    import httpx

    rng = random.Random(1)
    with httpx.Client(base_url=base, timeout=10) as http:
        for i in range(n):
            body = {**BODY, "task_type": TASK_TYPES[i % 3], "strategy": "least_connection"}
            chosen = http.post("/load-balancing/select-agent", json=body).json()
            http.post(
                "/load-balancing/update-performance",
                json={
                    "agent_id": chosen["selected_agent_id"],
                    "task_id": chosen["task_id"],
                    "task_duration": rng.uniform(*WARM_DURATIONS_S),
                    "success": rng.random() > 0.05,
                },
            )


# --- in-process breakdown --------------------------------------------------------------------
def breakdown(n_agents: int, model: Path | None = None, iterations: int = 500) -> dict[str, float]:
    """Median microseconds of each stage of one selection, in-process (no HTTP); with `model`,
    the service loads that bundle as its champion."""
    import logging
    import random

    from agentlb.api.schemas import SelectAgentResponse
    from agentlb.domain import Agent, TaskOutcome, TaskRequest
    from agentlb.observability import JsonFormatter, selection_log_fields
    from agentlb.service import AgentLBService
    from agentlb.settings import load_settings

    home = Path(tempfile.mkdtemp(prefix="agentlb-breakdown-"))
    if model is not None:
        shutil.copytree(model.resolve(), home / "models" / "champion")
    service = AgentLBService.open(load_settings(home=home, model_poll_interval_s=0))
    try:
        for i in range(n_agents):
            service.register_agent(
                Agent(
                    id=f"agent-{i}",
                    name=f"Agent {i}",
                    capabilities=frozenset({"video_analysis"}),
                    max_concurrency=100_000,
                )
            )
        rng = random.Random(1)
        for i in range(1000):
            warm_task = TaskRequest(
                task_type=TASK_TYPES[i % 3], required_capabilities=frozenset({"video_analysis"})
            )
            chosen = service.select(warm_task, "least_connection")
            service.report_outcome(
                TaskOutcome(chosen.selected_agent.id, rng.uniform(*WARM_DURATIONS_S), True, chosen.task_id)
            )

        def task() -> TaskRequest:
            return TaskRequest(
                task_type="video_task",
                required_capabilities=frozenset({"video_analysis"}),
                requirements=dict(BODY["task_requirements"]),
            )  # type: ignore[arg-type]

        def median_us(step: Any, iterations: int = iterations) -> float:
            samples = []
            for _ in range(iterations):
                start = time.perf_counter()
                step()
                samples.append(time.perf_counter() - start)
            return statistics.median(samples) * 1e6

        results: list[Any] = []
        record = logging.LogRecord("agentlb.selection", logging.INFO, "", 0, "agent_selected", None, None)
        stages = {
            "balancer.select (hybrid)": median_us(
                lambda: results.append(service.balancer.select(task(), "hybrid"))
            )
        }
        pending = iter(list(results))
        stages["store.record_dispatch"] = median_us(lambda: service.store.record_dispatch(next(pending)))
        batch_size = 32
        batches = [[service.balancer.select(task(), "hybrid") for _ in range(batch_size)] for _ in range(20)]
        queued = iter(batches)
        stages[f"record_dispatches, per row (x{batch_size})"] = (
            median_us(lambda: service.store.record_dispatches(next(queued)), iterations=len(batches))
            / batch_size
        )
        result = results[0]
        stages["metrics"] = median_us(lambda: service.metrics.observe_selection(result, 0.001))
        record.__dict__.update(selection_log_fields(result, 0.001))
        formatter = JsonFormatter()
        stages["JSON log line (format)"] = median_us(lambda: formatter.format(record))
        stages["response JSON"] = median_us(lambda: SelectAgentResponse.json_of(result))
        stages["service.select (all of it)"] = median_us(
            lambda: results.append(service.select(task(), "hybrid"))
        )
        # CPU per selection, in-flight state reset between the two (it grows with every selection)
        settle(service, results + [r for batch in batches for r in batch])
        selected: list[Any] = []
        stages["choose only (CPU/selection)"] = sequential_cpu_us(
            lambda: selected.append(service.choose(task(), "hybrid"))
        )
        for result in selected:
            service.store.record_dispatch(result)  # choose() logs nothing; the outcome needs it
        settle(service, selected)
        stages[f"select_async x{CONCURRENT} (CPU/selection)"] = concurrent_cpu_us(service, task)
        return stages
    finally:
        service.close()
        shutil.rmtree(home, ignore_errors=True)


CONCURRENT = 64
CPU_SAMPLES = 2048


def settle(service: Any, results: list[Any]) -> None:
    """Report an outcome for every selection still in flight, so later stages start equal."""
    from agentlb.domain import TaskOutcome

    for result in results:
        if service.tracker.is_in_flight(result.task_id):
            service.report_outcome(TaskOutcome(result.selected_agent.id, 2.0, True, result.task_id))


def concurrent_cpu_us(service: Any, task: Any) -> float:
    """Process CPU per selection with CONCURRENT requests in flight on one event loop, as the
    API runs them: selection on the loop, dispatch record by group commit (writer thread
    included, since process time counts every thread)."""
    import asyncio

    async def client() -> None:
        for _ in range(CPU_SAMPLES // CONCURRENT):
            await service.select_async(task(), "hybrid")

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(CONCURRENT)))

    start = time.process_time()
    asyncio.run(run())
    return (time.process_time() - start) / CPU_SAMPLES * 1e6


def sequential_cpu_us(step: Any) -> float:
    start = time.process_time()
    for _ in range(CPU_SAMPLES):
        step()
    return (time.process_time() - start) / CPU_SAMPLES * 1e6


# --- wrk -------------------------------------------------------------------------------------
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), robust to other load on the host."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, connections: int, duration_s: int, script: Path, server_pid: int) -> dict[str, float]:
    threads = min(2, connections)
    cpu_before = cpu_seconds(server_pid)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, preexec_fn=raise_fd_limit
    ).stdout
    result: dict[str, float] = {"connections": connections}
    result["req_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", output, re.MULTILINE)
        result[f"p{pct}_ms"] = _seconds(match.group(1)) * 1000 if match else float("nan")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    total = re.search(r"(\d+) requests in", output)
    result["requests"] = int(total.group(1)) if total else 0
    result["server_cpu_ms_per_req"] = (
        (cpu_seconds(server_pid) - cpu_before) * 1000 / result["requests"]
        if result["requests"]
        else float("nan")
    )
    return result


def wrk_script(directory: Path, strategy: str = "hybrid") -> Path:
    script = directory / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps({**BODY, 'strategy': strategy}))}\n"
    )
    return script


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument(
        "--strategy", default="hybrid", help="strategy in the select body (the bare endpoint ignores it)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--burst", type=int, default=1000, help="connections for the error check")
    parser.add_argument("--warm", type=int, default=1000, help="select+outcome pairs before measuring")
    parser.add_argument("--json", action="store_true", help="print the JSON record only")
    parser.add_argument("--breakdown", action="store_true", help="in-process cost of each stage, no HTTP")
    parser.add_argument(
        "--expiry",
        type=float,
        default=IN_FLIGHT_EXPIRY_S,
        help="seconds before a task never reported expires from the tracker (bounds in-flight state)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a model bundle (e.g. models/champion) the server loads, so predictive/hybrid use it",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.home, args.serve, args.expiry)
        return 0
    if args.model is not None and not (args.model / "bundle.json").exists():
        print(f"--model {args.model}: no bundle.json there (run agentlb train first)", file=sys.stderr)
        return 2
    if args.breakdown:
        for stage, micros in breakdown(args.agents, args.model).items():
            print(f"{stage:<30}{micros:8.0f} µs")
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="agentlb-load-"))
    prepare_home(home, args.agents)
    if args.model is not None:
        shutil.copytree(args.model.resolve(), home / "models" / "champion")
    port = free_port()
    server = start_server(home, port, args.expiry)
    base = f"http://127.0.0.1:{port}"
    try:
        warm(base, args.warm)
        evaluator = wait_for_evaluator(base) if args.model is not None else "heuristic"
        script = wrk_script(home, args.strategy)
        select_url, bare_url = f"{base}/load-balancing/select-agent", f"{base}/bench/bare"
        run_wrk(select_url, args.connections, 2, script, server.pid)  # warm-up, discarded
        run_wrk(bare_url, args.connections, 2, script, server.pid)
        runs: dict[str, list[dict[str, float]]] = {"select": [], "bare": []}
        for _ in range(args.repeats):
            runs["bare"].append(run_wrk(bare_url, args.connections, args.duration, script, server.pid))
            runs["select"].append(run_wrk(select_url, args.connections, args.duration, script, server.pid))
        burst = {
            "bare": run_wrk(bare_url, args.burst, args.duration, script, server.pid),
            "select": run_wrk(select_url, args.burst, args.duration, script, server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    record = {
        "agents": args.agents,
        "strategy": args.strategy,
        "predictor": "model" if args.model is not None else "heuristic",
        "evaluator": evaluator,
        "in_flight_expiry_s": args.expiry,
        "connections": args.connections,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "select_req_per_s": median("select", "req_per_s"),
        "bare_req_per_s": median("bare", "req_per_s"),
        "ratio": median("select", "req_per_s") / median("bare", "req_per_s"),
        "select_p50_ms": median("select", "p50_ms"),
        "select_p99_ms": median("select", "p99_ms"),
        "bare_p50_ms": median("bare", "p50_ms"),
        "bare_p99_ms": median("bare", "p99_ms"),
        "select_cpu_ms_per_req": median("select", "server_cpu_ms_per_req"),
        "bare_cpu_ms_per_req": median("bare", "server_cpu_ms_per_req"),
        "load_average_1m": os.getloadavg()[0],
        "errors_at_64": sum(r["socket_errors"] + r["non_2xx"] for rs in runs.values() for r in rs),
        "burst_connections": args.burst,
        "burst_select_errors": burst["select"]["socket_errors"] + burst["select"]["non_2xx"],
        "burst_bare_errors": burst["bare"]["socket_errors"] + burst["bare"]["non_2xx"],
        "burst_select_req_per_s": burst["select"]["req_per_s"],
        "burst_select_p99_ms": burst["select"]["p99_ms"],
        "burst_select_requests": burst["select"]["requests"],
        "runs": runs,
        "burst": burst,
    }
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    runs_label = f"{args.repeats} x {args.duration} s (medians)"
    predictor = f"model ({evaluator})" if args.model else "heuristic"
    print(
        f"{args.agents} agents, {args.strategy}, {predictor}, "
        f"{args.connections} connections, {runs_label}, in-flight expiry {args.expiry:g} s"
    )
    print(
        f"  /select-agent  {record['select_req_per_s']:8.0f} req/s   p50 {record['select_p50_ms']:6.2f} ms"
        f"   p99 {record['select_p99_ms']:6.2f} ms"
    )
    print(
        f"  bare endpoint  {record['bare_req_per_s']:8.0f} req/s   p50 {record['bare_p50_ms']:6.2f} ms"
        f"   p99 {record['bare_p99_ms']:6.2f} ms"
    )
    print(f"  ratio select/bare: {record['ratio']:.2f}   errors: {record['errors_at_64']}")
    print(
        f"  server CPU per request: select {record['select_cpu_ms_per_req']:.2f} ms, "
        f"bare {record['bare_cpu_ms_per_req']:.2f} ms (host load average {record['load_average_1m']:.1f})"
    )
    print(
        f"{args.burst} connections: select errors {record['burst_select_errors']} "
        f"({record['burst_select_requests']:.0f} requests, p99 {record['burst_select_p99_ms']:.0f} ms), "
        f"bare errors {record['burst_bare_errors']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
