"""A minimal discrete-event engine: a heap of (time, seq, event), nothing else.

It knows nothing of agents or tasks (SimPy's separation); ties at the same instant are broken
by insertion order, so a run is a pure function of its inputs. Measured ~2.8x faster than
SimPy 4.1 on the same 50-agent queueing model (docs/benchmarks.md, simulator section).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Handler = Callable[[float, Any], None]


class Engine:
    """Runs handlers in time order; `now` is the simulated clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Handler, Any]] = []
        self._seq = 0
        self.events_processed = 0

    def clock(self) -> float:
        """The simulated clock, injected into the tracker."""
        return self.now

    def at(self, when: float, handler: Handler, payload: Any = None) -> None:
        """Schedule `handler(when, payload)`; an instant in the past runs at `now`."""
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, handler, payload))

    def run(self, until: float = float("inf")) -> None:
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] <= until:
            when, _, handler, payload = pop(queue)
            self.now = when
            self.events_processed += 1
            handler(when, payload)

    @property
    def pending(self) -> int:
        return len(self._queue)
