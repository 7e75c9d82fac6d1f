"""``publish_all``: every record accounted for, and a bounded wait when acknowledgements stop coming."""

from collections.abc import Iterator

from application.errors import SinkFull
from application.messages import Headers
from application.ports import DeliveryCallback, MessageSink
from application.producing import publish_all
from tests.fakes import FakeClock


class SilentSink(MessageSink):
    """Takes records and never acknowledges them (an unreachable cluster); time passes while it is served."""

    def __init__(self, clock: FakeClock, capacity: int, acknowledge_every_poll: int = 0) -> None:
        self._clock = clock
        self._capacity = capacity
        self._acknowledge = acknowledge_every_poll
        self.waiting: list[DeliveryCallback] = []
        self.flushes: list[float] = []

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if len(self.waiting) >= self._capacity:
            raise SinkFull("full")
        self.waiting.append(on_delivery)

    def poll(self, timeout_s: float) -> None:
        self._clock.advance(max(timeout_s, 0.05))
        for callback in self.waiting[: self._acknowledge]:
            callback(None)
        del self.waiting[: self._acknowledge]

    def flush(self, timeout_s: float) -> bool:
        self.flushes.append(timeout_s)
        self.poll(timeout_s)
        return not self.waiting

    def close(self) -> None:
        pass


def records(count: int | None) -> Iterator[tuple[bytes | None, bytes]]:
    index = 0
    while count is None or index < count:
        index += 1
        yield None, b"{}"


def test_gives_up_within_the_timeout_when_nothing_is_acknowledged() -> None:
    clock = FakeClock()
    sink = SilentSink(clock, capacity=100)
    started = clock.monotonic()
    summary = publish_all(records(None), sink, "t", clock=clock, timeout_s=30.0)
    assert summary.gave_up
    assert summary.sent == 100 and summary.acknowledged == 0 and summary.pending == 100
    assert 30.0 <= clock.monotonic() - started <= 31.0


def test_waits_at_most_the_timeout_for_the_last_acknowledgements() -> None:
    clock = FakeClock()
    sink = SilentSink(clock, capacity=1_000_000)
    started = clock.monotonic()
    summary = publish_all(records(500), sink, "t", clock=clock, timeout_s=10.0)
    assert summary.gave_up and summary.sent == 500 and summary.pending == 500
    assert 10.0 <= clock.monotonic() - started <= 11.0
    assert sum(sink.flushes) <= 11.0


def test_slow_but_steady_acknowledgements_are_not_a_stall() -> None:
    clock = FakeClock()
    sink = SilentSink(clock, capacity=10, acknowledge_every_poll=1)  # one record per 0.05 s
    summary = publish_all(records(2_000), sink, "t", clock=clock, timeout_s=1.0)
    assert not summary.gave_up
    assert summary.acknowledged == 2_000 and summary.pending == 0
    assert clock.monotonic() - 1000.0 > 1.0  # far longer than the timeout in all: only silence counts
