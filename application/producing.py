"""Publishing a stream of records with delivery accounting: the data generator's use case."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from application.errors import SinkFull
from application.messages import DeliveryError
from application.ports import Clock, MessageSink
from application.rate_limit import RateLimiter

_SERVE_S = 0.05
_FLUSH_TIMEOUT_S = 60.0


@dataclass(slots=True)
class PublishSummary:
    sent: int = 0
    acknowledged: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    last_error: str = ""

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
) -> PublishSummary:
    """Publish until ``records`` ends or ``stop`` is set; then wait for every acknowledgement."""
    clock = clock or Clock()
    limiter = RateLimiter(records_per_second, clock) if records_per_second else None
    summary = PublishSummary()
    started = clock.monotonic()

    def delivered(error: DeliveryError | None) -> None:
        if error is None:
            summary.acknowledged += 1
        else:
            summary.failed += 1
            summary.last_error = str(error)

    allowance = 0
    for key, value in records:
        if stop is not None and stop.is_set():
            break
        if limiter is not None and allowance == 0:
            allowance = limiter.acquire(1_000)
        while True:
            try:
                sink.publish(topic, key, value, (), delivered)
                break
            except SinkFull:
                sink.poll(_SERVE_S)
        summary.sent += 1
        allowance = max(0, allowance - 1)
        if summary.sent % 1_000 == 0:
            sink.poll(0)
    sink.flush(_FLUSH_TIMEOUT_S)
    summary.elapsed_s = clock.monotonic() - started
    return summary
