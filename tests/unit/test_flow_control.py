"""Retry backoff and queue, waiting out a full producer queue, rate limiting and the offset ledger."""

import random

import pytest

from application.errors import SinkFull
from application.messages import Headers
from application.offsets import OffsetLedger
from application.ports import ROOM_WAIT_S, DeliveryCallback, MessageSink
from application.rate_limit import RateLimiter
from application.retry import RetryPolicy, RetryQueue
from tests.fakes import FakeClock


def test_backoff_is_full_jitter_under_an_exponential_capped_ceiling() -> None:
    policy = RetryPolicy(limit=10, base_backoff_s=0.1, max_backoff_s=2.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (40, 2.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(300)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.9  # spread across the whole range, not a fixed step
        assert min(delays) < ceiling * 0.1


def test_retry_limit_counts_retries_after_the_first_attempt() -> None:
    policy = RetryPolicy(limit=2)
    assert [policy.exhausted(attempts) for attempts in (1, 2, 3)] == [False, False, True]
    assert RetryPolicy(limit=0).exhausted(1)


def test_rate_limiter_is_smooth_and_holds_the_ceiling() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock)
    taken = 0
    grants = []
    while clock.monotonic() < 1000.0 + 5.0:
        granted = limiter.acquire(500)
        grants.append(granted)
        taken += granted
    assert 5000 <= taken <= 5000 + 100 + 500  # five seconds' worth, plus at most the small burst
    assert max(grants) <= 100  # never a whole second's records at once


def test_rate_limiter_refunds_what_a_poll_did_not_use() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock)
    assert limiter.acquire(10) == 1
    limiter.refund(1)
    assert limiter.acquire(10) == 1
    assert clock.slept == []


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_limiter_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, FakeClock())


def test_ledger_commits_only_below_the_first_unacknowledged_offset() -> None:
    ledger = OffsetLedger()
    partition = ledger.partition("t", 0)
    for offset in (10, 11, 12, 13):
        partition.track(offset)
    for offset in (10, 12, 13):
        partition.pending.discard(offset)
    assert ledger.commit_candidates() == {("t", 0): 11}
    partition.pending.discard(11)
    candidates = ledger.commit_candidates()
    assert candidates == {("t", 0): 14}
    ledger.mark_committed(candidates)
    assert ledger.commit_candidates() == {}


def test_retired_ledgers_are_forgotten_and_report_what_was_abandoned() -> None:
    ledger = OffsetLedger()
    old = ledger.partition("t", 0)
    old.track(5)
    assert ledger.retire({("t", 0)}) == 1
    assert old.retired
    assert ledger.partition("t", 0) is not old


class RoomAfterPolls(MessageSink):
    """A producer queue that is full until ``polls`` polls have served acknowledgements; time passes in poll."""

    def __init__(self, clock: FakeClock, polls: int) -> None:
        self._clock = clock
        self._full_for = polls
        self.polled: list[float] = []
        self.published: list[bytes | None] = []

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if len(self.polled) < self._full_for:
            raise SinkFull("queue full")
        self.published.append(value)

    def poll(self, timeout_s: float) -> None:
        self.polled.append(timeout_s)
        self._clock.advance(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


def test_a_full_queue_is_waited_out_by_serving_acknowledgements() -> None:
    clock = FakeClock()
    sink = RoomAfterPolls(clock, polls=3)
    asked: list[float] = []

    def waiting() -> bool:
        asked.append(clock.monotonic())
        return True

    assert sink.publish_when_room("t", None, b"v", (), lambda error: None, waiting)
    assert sink.published == [b"v"]
    assert sink.polled == [ROOM_WAIT_S] * 3  # each wait serves acknowledgements, bounded
    assert asked == pytest.approx([1000.0, 1000.0 + ROOM_WAIT_S, 1000.0 + 2 * ROOM_WAIT_S])  # before each wait


def test_a_full_queue_wait_ends_when_the_caller_gives_up() -> None:
    sink = RoomAfterPolls(FakeClock(), polls=100)
    answers = iter([True, True, False])
    assert not sink.publish_when_room("t", None, b"v", (), lambda error: None, lambda: next(answers))
    assert sink.published == [] and len(sink.polled) == 2


def test_the_retry_queue_hands_out_what_is_due_soonest_first() -> None:
    clock = FakeClock()
    queue: RetryQueue[str] = RetryQueue(clock)
    assert not queue and queue.wait_s(0.5) == 0.5
    queue.push(2.0, "late")
    queue.push(1.0, "early")
    queue.push(1.0, "early too")  # same due time: kept in push order
    assert queue.wait_s(5.0) == pytest.approx(1.0) and queue.wait_s(0.25) == 0.25
    assert list(queue.due()) == []
    clock.advance(1.0)
    assert list(queue.due()) == ["early", "early too"]
    assert queue.wait_s(5.0) == pytest.approx(1.0)
    clock.advance(3.0)
    assert queue.wait_s(5.0) == 0.0 and list(queue.due()) == ["late"] and not queue
