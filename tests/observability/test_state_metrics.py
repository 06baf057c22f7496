"""The scrape-time gauges on their own: the normalised load variance, and the store operations
exported from the start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentlb.observability import STORE_OPERATIONS, Metrics, variance_ratio

SRC = Path(__file__).resolve().parents[2] / "src" / "agentlb"


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ([0.5, 0.5, 0.5], 0.0),  # even
        ([1.0, 0.0, 0.0, 0.0], 1.0),  # as uneven as a mean of 0.25 allows
        ([0.0, 0.0], 0.0),  # idle fleet: no bound to divide by
        ([], 0.0),
        ([0.6, 0.4], 0.04),  # variance 0.01 over 0.5 x 0.5
    ],
)
def test_variance_ratio(loads: list[float], expected: float) -> None:
    import statistics

    variance = statistics.pvariance(loads) if loads else 0.0
    assert variance_ratio(loads, variance) == pytest.approx(expected)


def test_every_store_operation_the_service_counts_is_exported_from_the_start() -> None:
    counted = set()
    for path in SRC.rglob("*.py"):
        counted |= set(re.findall(r'_store_failed\(\s*"([a-z_]+)"', path.read_text()))
    assert counted and counted <= set(STORE_OPERATIONS), counted - set(STORE_OPERATIONS)
    metrics = Metrics()
    for operation in STORE_OPERATIONS:
        value = metrics.registry.get_sample_value(
            "load_balancer_store_write_failures_total", {"operation": operation}
        )
        assert value == 0.0
