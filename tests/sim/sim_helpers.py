"""Helpers shared by the simulator tests (a unique module name: test folders are not packages)."""

from __future__ import annotations

from pathlib import Path

from agentlb.sim.workload import SimTask

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURE_DIR = REPO_ROOT.parent / "shared" / "data" / "azure_llm_2023"


def make_task(
    i: int,
    arrival_s: float,
    size_s: float,
    task_type: str = "work",
    noise: float = 1.0,
    failure_draw: float = 0.5,
    deadline_s: float | None = None,
) -> SimTask:
    return SimTask(
        index=i,
        task_id=f"t{i}",
        arrival_s=arrival_s,
        task_type=task_type,
        size_s=size_s,
        noise=noise,
        failure_draw=failure_draw,
        attributes={"input_tokens": int(size_s * 400)},
        deadline_s=deadline_s,
    )
