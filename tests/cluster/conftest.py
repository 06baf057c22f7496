"""Fixtures of the cluster tests (helpers live in cluster_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_support import ClusterResources, cluster_resources


@pytest.fixture
def resources() -> Iterator[ClusterResources]:
    yield from cluster_resources()
