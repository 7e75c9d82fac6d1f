"""A smooth ceiling on records per second (a token bucket holding at most a tenth of a second's worth)."""

from __future__ import annotations

from application.ports import Clock

_BURST_SECONDS = 0.1


class RateLimiter:
    def __init__(self, records_per_second: float, clock: Clock) -> None:
        if records_per_second <= 0:
            raise ValueError("records_per_second must be positive")
        self._rate = records_per_second
        self._capacity = max(1.0, records_per_second * _BURST_SECONDS)
        self._clock = clock
        self._tokens = self._capacity
        self._updated = clock.monotonic()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def acquire(self, wanted: int) -> int:
        """Wait until at least one record may be taken; return how many (1..wanted) may be taken now."""
        self._refill()
        if self._tokens < 1.0:
            self._clock.sleep((1.0 - self._tokens) / self._rate)
            self._refill()
        granted = max(1, min(wanted, int(self._tokens)))
        self._tokens -= granted
        return granted

    def refund(self, unused: int) -> None:
        """Give back what a poll did not use, so an idle topic does not eat the budget."""
        self._tokens = min(self._capacity, self._tokens + unused)
