"""Publishing a stream of records with delivery accounting: the data generator's use case."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from application.messages import DeliveryError
from application.ports import Clock, MessageSink
from application.rate_limit import RateLimiter

_FLUSH_TIMEOUT_S = 60.0
_SERVE_EVERY = 1_000  # records between two deliveries of acknowledgements


@dataclass(slots=True)
class PublishSummary:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    last_error: str = ""
    gave_up: bool = False  # no record was acknowledged for ``timeout_s``: sending stopped early

    @property
    def pending(self) -> int:
        return self.sent - self.acknowledged - self.failed


def publish_all(
    records: Iterable[tuple[bytes | None, bytes]],
    sink: MessageSink,
    topic: str,
    *,
    records_per_second: float | None = None,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
    timeout_s: float = _FLUSH_TIMEOUT_S,
) -> PublishSummary:
    """Publish until ``records`` ends or ``stop`` is set; then wait for every acknowledgement.

    Gives up (``gave_up``) once ``timeout_s`` passes without a single acknowledgement while records wait
    for one (the cluster unreachable, say): it stops sending and waits no longer, so a caller learns
    within about ``timeout_s`` that records were not delivered, instead of waiting for ever.
    """
    clock = clock or Clock()
    limiter = RateLimiter(records_per_second, clock) if records_per_second else None
    summary = PublishSummary()
    started = clock.monotonic()
    progress = _Progress(summary, clock, timeout_s)

    def delivered(error: DeliveryError | None) -> None:
        if error is None:
            summary.acknowledged += 1
        else:
            summary.failed += 1
            summary.last_error = str(error)

    allowance = 0
    pending_records = iter(records)
    while stop is None or not stop.is_set():  # asked before the next record is made: none is made and dropped
        try:
            key, value = next(pending_records)
        except StopIteration:
            break
        if limiter is not None and allowance == 0:
            allowance = limiter.acquire(1_000)
        if not sink.publish_when_room(topic, key, value, (), delivered, progress.flowing):
            break
        summary.sent += 1
        allowance = max(0, allowance - 1)
        if summary.sent % _SERVE_EVERY == 0:
            sink.poll(0)
        if clock.monotonic() >= progress.deadline and progress.stalled():  # a publish may block (no metadata)
            break
    while not summary.gave_up and summary.pending and not sink.flush(min(1.0, progress.remaining())):
        progress.stalled()
    summary.elapsed_s = clock.monotonic() - started
    return summary


class _Progress:
    """Whether acknowledgements still arrive: ``stalled`` once none has for ``timeout_s`` with records waiting."""

    def __init__(self, summary: PublishSummary, clock: Clock, timeout_s: float) -> None:
        self._summary = summary
        self._clock = clock
        self._timeout_s = timeout_s
        self._acknowledged = summary.acknowledged
        self._since = clock.monotonic()

    @property
    def deadline(self) -> float:
        """Before this (monotonic) time ``stalled`` cannot be true: callers may skip asking until then."""
        return self._since + self._timeout_s

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock.monotonic())

    def flowing(self) -> bool:
        """While the producer's queue is full: whether to wait on for room (False once ``stalled``)."""
        return not self.stalled()

    def stalled(self) -> bool:
        summary = self._summary
        if summary.acknowledged != self._acknowledged or summary.pending + summary.failed == 0:
            self._acknowledged = summary.acknowledged
            self._since = self._clock.monotonic()
            return False
        if self.remaining() > 0:
            return False
        summary.gave_up = True
        return True
