"""Records a client refused when they were queued, reported the way the broker's refusals are.

A client checks some things before a record ever leaves the process: its size
against the producer's own limit, its arguments, its partition. confluent-kafka
raises from ``produce()`` then, kafka-python from ``send()``. Such a refusal is
about this one record, so it must not escape the sink (that stopped every
partition for good): the sink notes it here instead, and its ``poll`` or
``flush`` runs the record's callback with a non-retriable DeliveryError carrying
the client's text, on the caller's thread as the MessageSink port promises. The
pipeline then treats it as any other refused record: an output record goes to
the DLQ as ``publish_failed``, a refused dead letter stops its partition.

Retrying cannot help: the same client refuses the same record the same way.
"""

from __future__ import annotations

from collections import deque

from application.messages import DeliveryError
from application.ports import DeliveryCallback


class Refusals:
    """Callbacks owed for refused records; ``since_start`` counts them per transaction."""

    __slots__ = ("_owed", "since_start")

    def __init__(self) -> None:
        self._owed: deque[tuple[DeliveryCallback, DeliveryError]] = deque()
        self.since_start = 0

    def __bool__(self) -> bool:
        return bool(self._owed)

    def refuse(self, on_delivery: DeliveryCallback, reason: str) -> None:
        self._owed.append((on_delivery, DeliveryError(reason, retriable=False)))
        self.since_start += 1

    def start(self) -> None:
        """A new transaction: nothing refused in it yet."""
        self.since_start = 0

    def serve(self) -> int:
        """Run the callbacks owed so far (not those of records the callbacks publish meanwhile)."""
        owed = self._owed
        count = len(owed)
        for _ in range(count):
            on_delivery, error = owed.popleft()
            on_delivery(error)
        return count
