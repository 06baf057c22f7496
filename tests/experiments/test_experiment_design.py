"""Experiment designs: validation names the field, and tasks are split by a stable hash."""

from __future__ import annotations

import pytest

from agentlb.domain import TaskRequest
from agentlb.errors import ExperimentError
from agentlb.experiments.design import Arm, ExperimentDesign, design
from agentlb.strategies import STRATEGY_NAMES


def two_arms(share_b: float = 0.5) -> list[Arm]:
    return [Arm("control", "least_connection", 1 - share_b), Arm("hybrid", "hybrid", share_b)]


@pytest.mark.parametrize(
    ("arms", "field"),
    [
        ([Arm("a", "least_connection", 1.0)], "arms"),
        ([Arm("a", "least_connection", 0.5), Arm("a", "hybrid", 0.5)], "arms[1].name"),
        ([Arm("a", "least_connection", 0.5), Arm("b", "nope", 0.5)], "arms[1].strategy"),
        ([Arm("a", "least_connection", 0.7), Arm("b", "hybrid", 0.7)], "arms"),
        ([Arm("a", "least_connection", -0.5), Arm("b", "hybrid", 1.5)], "arms[0].share"),
        (
            [Arm("a", "least_connection", 0.5, weights={"predictive": 1.0}), Arm("b", "hybrid", 0.5)],
            "arms[0].weights",
        ),
        (
            [Arm("a", "least_connection", 0.5), Arm("b", "hybrid", 0.5, weights={"telepathy": 1.0})],
            "arms[1].weights",
        ),
        ([Arm("a b", "least_connection", 0.5), Arm("b", "hybrid", 0.5)], "arms[0].name"),
    ],
)
def test_an_invalid_design_names_the_field(arms: list[Arm], field: str) -> None:
    with pytest.raises(ExperimentError) as caught:
        design("x", arms, strategies=STRATEGY_NAMES)
    assert caught.value.field == field


def test_limits_and_scope_are_validated() -> None:
    with pytest.raises(ExperimentError, match="max_tasks"):
        design("x", two_arms(), max_tasks=0)
    with pytest.raises(ExperimentError, match="task_types"):
        design("x", two_arms(), task_types=[])
    with pytest.raises(ExperimentError, match="alpha"):
        design("x", two_arms(), alpha=0.7)


def test_the_split_follows_the_shares_and_a_task_id_always_lands_in_the_same_arm() -> None:
    plan = design("x", two_arms(share_b=0.3))
    arms = [plan.arm_for("e1", f"task-{i}").name for i in range(20_000)]
    assert arms.count("hybrid") / len(arms) == pytest.approx(0.3, abs=0.015)
    assert [plan.arm_for("e1", f"task-{i}").name for i in range(200)] == arms[:200]
    # another experiment splits the same tasks independently
    other = [plan.arm_for("e2", f"task-{i}").name for i in range(20_000)]
    agree = sum(a == b for a, b in zip(arms, other, strict=True)) / len(arms)
    assert agree == pytest.approx(0.7 * 0.7 + 0.3 * 0.3, abs=0.02)


def test_scope_by_task_type_and_capabilities() -> None:
    plan = design("x", two_arms(), task_types=["video"], capabilities=["gpu"])
    assert plan.in_scope(TaskRequest("video", frozenset({"gpu", "fast"})))
    assert not plan.in_scope(TaskRequest("video", frozenset()))
    assert not plan.in_scope(TaskRequest("text", frozenset({"gpu"})))


def test_a_stored_design_reads_back_equal() -> None:
    plan = design(
        "x",
        [Arm("c", "hybrid", 0.5), Arm("w", "hybrid", 0.5, weights={"predictive": 1.0})],
        task_types=["a"],
        max_tasks=10,
        max_duration_s=60.0,
        stop_when_decided=True,
    )
    assert ExperimentDesign.from_dict(plan.as_dict()) == plan
