"""A producer for the in-memory broker: records reach the broker, and callbacks fire, on poll or flush."""

from __future__ import annotations

from collections import deque

from adapters.memory.broker import InMemoryBroker, UnknownTopic
from adapters.refusals import Refusals
from application.errors import SinkFull
from application.messages import DeliveryError, Headers
from application.ports import DeliveryCallback, MessageSink

_Queued = tuple[str, bytes | None, bytes | None, Headers, DeliveryCallback, int]


class InMemorySink(MessageSink):
    def __init__(self, broker: InMemoryBroker, *, queue_capacity: int = 100_000) -> None:
        self._broker = broker
        self._clock = broker.clock
        self._capacity = queue_capacity
        self._queue: deque[_Queued] = deque()
        self._refusals = Refusals()
        self._limits = broker.message_limits

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if len(self._queue) >= self._capacity:
            raise SinkFull(f"{len(self._queue)} records queued")
        if self._limits and topic in self._limits:
            refusal = self._broker.refusal(topic, key, value, headers)
            if refusal is not None:
                self._refusals.refuse(on_delivery, refusal)
                return
        self._queue.append((topic, key, value, headers, on_delivery, int(self._clock.now() * 1000)))

    def _deliver_queued(self) -> None:
        # Only what was queued before this call: callbacks may queue more (a retry, a dead letter).
        queue = self._queue
        if len(queue) > 1:
            batch = [queue.popleft() for _ in range(len(queue))]
            if self._broker.accepts_all({queued[0] for queued in batch}):
                # The common case, stored at once: one lock and one wake-up for the batch, then the callbacks.
                self._broker.append_many(
                    [(topic, key, value, headers, stamp) for topic, key, value, headers, _, stamp in batch]
                )
                for queued in batch:
                    queued[4](None)
                return
            queue.extendleft(reversed(batch))
        for _ in range(len(queue)):
            topic, key, value, headers, on_delivery, stamp = self._queue.popleft()
            error = self._broker.take_failure(topic)
            if error is None:
                try:
                    self._broker.append(topic, key, value, headers, timestamp_ms=stamp)
                except UnknownTopic:
                    error = DeliveryError(f"unknown topic {topic}", retriable=True)
            on_delivery(error)

    def poll(self, timeout_s: float) -> None:
        if self._refusals:
            self._refusals.serve()
            timeout_s = 0.0
        if self._queue:
            self._deliver_queued()
        else:
            self._clock.sleep(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        deadline = self._clock.monotonic() + timeout_s
        while (self._queue or self._refusals) and self._clock.monotonic() < deadline:
            self._refusals.serve()
            self._deliver_queued()
        return not self._queue and not self._refusals

    def close(self) -> None:
        self.flush(5.0)
