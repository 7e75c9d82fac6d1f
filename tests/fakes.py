"""Test doubles shared by the unit tests."""

import threading

from application.ports import Clock, Metrics, Waitable


class FakeClock(Clock):
    """Time that moves only when told to (or when something sleeps)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.wall = start
        self.mono = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(seconds, 0.0))

    def wait(self, waitable: Waitable, seconds: float) -> bool:
        """Lets the time pass at once; a set event still ends the wait without it."""
        is_set = getattr(waitable, "is_set", None)
        if is_set is not None and is_set():
            return True
        self.sleep(seconds)
        return False

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class StopAfterRetries(Metrics):
    """Stops a run once it has retried ``retries`` times: a point the pipeline's own progress reaches."""

    def __init__(self, stop: threading.Event, retries: int) -> None:
        self._stop = stop
        self._left = retries
        self.paused: list[int] = []

    def retried(self, count: int) -> None:
        self._left -= count
        if self._left <= 0:
            self._stop.set()

    def paused_partitions(self, count: int) -> None:
        self.paused.append(count)
