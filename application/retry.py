"""Exponential backoff with full jitter, so retrying instances do not hammer a broker in step; the retry queue."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from application.ports import Clock

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    limit: int = 5
    base_backoff_s: float = 0.1
    max_backoff_s: float = 10.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based): uniform in [0, min(max, base * 2**(attempt-1))]."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * (2 ** min(attempt - 1, 62)))
        return (rng or random).uniform(0.0, ceiling)

    def exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` publishes have failed and no retry is left."""
        return attempts > self.limit


class RetryQueue(Generic[T]):
    """Items waiting for their retry, the soonest due first; the one place that knows when the next one is due."""

    __slots__ = ("_clock", "_heap", "_sequence")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, T]] = []
        self._sequence = itertools.count()  # ties keep their order, and items need not compare

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, delay_s: float, item: T) -> None:
        heapq.heappush(self._heap, (self._clock.monotonic() + delay_s, next(self._sequence), item))

    def due(self) -> Iterator[T]:
        """Take the items due now, one by one (those pushed meanwhile with no delay included)."""
        heap = self._heap
        while heap and heap[0][0] <= self._clock.monotonic():
            yield heapq.heappop(heap)[2]

    def wait_s(self, ceiling_s: float) -> float:
        """How long a wait may last without making the next item late: at most ``ceiling_s``."""
        if not self._heap:
            return ceiling_s
        return min(ceiling_s, max(0.0, self._heap[0][0] - self._clock.monotonic()))
