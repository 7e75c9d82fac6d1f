"""Test doubles shared by the unit tests."""

from application.ports import Clock


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

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds
