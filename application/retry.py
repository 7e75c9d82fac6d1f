"""Exponential backoff with full jitter, so retrying instances do not hammer a broker in step."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
