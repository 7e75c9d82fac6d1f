"""A kafka-python idempotent producer behind the MessageSink port.

kafka-python completes each record's future on its sender thread. The port
promises that ``on_delivery`` runs on the caller's thread, from ``poll`` or
``flush`` only, so a completion does nothing but append to a thread-safe deque
(and wake a waiting ``poll``); ``poll`` and ``flush`` run the callbacks.

kafka-python 3.x has no bounded send buffer (``buffer_memory`` is gone), so the
bound is ours: more than ``queue_capacity`` records or ``queue_bytes`` bytes
awaiting their callback makes ``publish`` raise SinkFull.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.codec import has_lz4
from kafka.errors import (
    IllegalStateError,
    InvalidProducerEpochError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    RecordListTooLargeError,
    TransactionAbortedError,
    UnknownProducerIdError,
)

from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python.config import client_config, connection_problem, quiet_repeated_client_logs
from application.errors import InvalidConfiguration, PipelineError, SinkFull
from application.messages import DeliveryError, Headers
from application.ports import DeliveryCallback, MessageSink

log = logging.getLogger(__name__)

# Reliable by default: the broker acknowledges only once all in-sync replicas have the record, and one
# request at a time per broker keeps the client's own retries from reordering records.
#
# Not idempotent: kafka-python 3.0.12 turns any non-retriable error on one batch of an idempotent,
# non-transactional producer (a record larger than the topic accepts, say) into a fatal state that
# fails every later record to every topic, dead letters included. Without idempotence that record
# alone fails and goes to the DLQ. The price is a possible duplicate when a retried request had in
# fact been written, which the at-least-once guarantee allows. (Transactions stay idempotent, and
# there such an error only aborts the transaction.)
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,
    "max_in_flight_requests_per_connection": 1,
    "linger_ms": 5,
    "batch_size": 128 * 1024,
    "compression_type": "lz4" if has_lz4() else None,
    "delivery_timeout_ms": 120_000,
    # Never block the caller. kafka-python 3.x has no buffer limit, so this only bounds the wait for a
    # topic's metadata inside send(); publish() waits for that itself, briefly (see METADATA_WAIT_S).
    "max_block_ms": 0,
}
# How long publish() waits for a topic's metadata before reporting the record as not delivered.
METADATA_WAIT_S = 1.0
_METADATA_STEP_S = 0.005
_CLOSE_FLUSH_S = 10.0
_SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)
_PRODUCER_STATE_ERRORS = (
    TransactionAbortedError, OutOfOrderSequenceNumberError, UnknownProducerIdError, InvalidProducerEpochError,
)  # fmt: skip


_KAFKA_PYTHON_MAX_REQUEST_SIZE = 1_048_576


def _about_the_producer(error: BaseException) -> bool:
    """send() refused for the producer's state, not the record's: kafka-python raises a bare KafkaError
    ("Cannot perform send because at least one previous transactional or idempotent request has failed")
    or an IllegalStateError then."""
    return type(error) is KafkaError or isinstance(error, (IllegalStateError, *_PRODUCER_STATE_ERRORS))


def with_message_limit(defaults: dict[str, Any], max_message_bytes: int | None) -> dict[str, Any]:
    """Our defaults, raised to let records of ``max_message_bytes`` through (the user's settings still win)."""
    if max_message_bytes is None or max_message_bytes <= _KAFKA_PYTHON_MAX_REQUEST_SIZE:
        return defaults
    return {**defaults, "max_request_size": max_message_bytes}


def message_limit(config: Mapping[str, Any]) -> int:
    """The largest record this producer sends: kafka-python's ``max_request_size``."""
    return int(config.get("max_request_size", _KAFKA_PYTHON_MAX_REQUEST_SIZE))


def create_producer(config: dict[str, Any]) -> Any:
    try:
        producer = KafkaProducer(**config)
    except (KafkaConfigurationError, ValueError, TypeError, RuntimeError) as error:
        raise InvalidConfiguration(f"invalid producer configuration: {error}") from None
    quiet_repeated_client_logs()
    return producer


def close_producer(producer: Any, timeout_s: float = 1.0) -> None:
    """Close, stopping the producer's I/O thread even when records are still unsent.

    kafka-python 3.0.12's ``close`` flushes first and raises KafkaTimeoutError there, before it reaches
    its own force-close, so a producer with unsent records kept its sender thread running. A transactional
    one left like that woke up when the broker came back, bumped its epoch and fenced its replacement.
    """
    try:
        producer.close(timeout=timeout_s)
    except KafkaTimeoutError:
        sender = getattr(producer, "_sender", None)  # kafka-python internals: no public force-close
        if sender is None:
            raise
        sender.force_close()  # fails the unsent records and stops the thread after its current step
        sender.join(timeout_s)


def delivery_error(error: BaseException, *, collateral: bool = False) -> DeliveryError:
    retriable = collateral or bool(getattr(error, "retriable", False))
    return DeliveryError(str(error) or type(error).__name__, retriable=retriable, collateral=collateral)


def _header_list(headers: Headers) -> list[tuple[str, bytes]]:
    """kafka-python insists on a list of (str, bytes) tuples; a consumed header may carry None (a null value)."""
    listed = list(headers)
    if all(type(item) is tuple and type(item[1]) is bytes for item in listed):
        return listed
    return [(name, bytes(value or b"")) for name, value in listed]


def _never_sent(future: Any) -> bool | None:
    """Whether a failed record's batch was aborted locally, never sent; None when this cannot be told.

    kafka-python completes an aborted batch with offset and timestamp -1, one the broker refused
    with None (kafka-python 3.x internals, read only).
    """
    batch = getattr(future, "_produce_future", None)
    value = getattr(batch, "value", None)
    if not isinstance(value, tuple) or len(value) < 2:
        return None
    return bool(value[0] == -1 and value[1] == -1)


class _Pending:
    """One record's callback; ``succeeded``/``failed`` run on kafka-python's sender thread and only queue it."""

    __slots__ = ("deliveries", "future", "generation", "on_delivery", "size", "topic")

    def __init__(self, deliveries: Deliveries, topic: str, on_delivery: DeliveryCallback, size: int) -> None:
        self.deliveries = deliveries
        self.topic = topic
        self.on_delivery = on_delivery
        self.size = size
        self.generation = deliveries.generation
        self.future: Any = None

    def succeeded(self, metadata: object) -> None:
        self.deliveries.completed(self, None, None)

    def failed(self, error: BaseException) -> None:
        self.deliveries.completed(self, error, _never_sent(self.future) if self.future is not None else False)


_Outcome = tuple[_Pending, BaseException | None, bool | None]  # record, error, whether it was never sent


class Deliveries:
    """Records sent and not yet reported: sends them, queues their outcomes, runs callbacks on request.

    In a transaction, one record the broker refuses makes kafka-python fail every record not yet sent,
    with the refused one's exception. Such a record is reported as collateral (retriable, and saying
    nothing about the record) unless the broker refused records of its topic with that same error,
    and, for a size error, none smaller than it: then it is judged by the error too, so that a topic
    refusing everything does not take one transaction per record to find out. ``transactional``
    holds the callbacks back until every record of the transaction has its outcome, to judge with
    all of them in view.
    """

    def __init__(self, producer: Any, capacity: int, capacity_bytes: int, *, transactional: bool = False) -> None:
        self._producer = producer
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._transactional = transactional
        self._done: deque[_Outcome] = deque()
        self._arrived = threading.Event()
        self.pending = 0
        self.pending_bytes = 0
        self.failures = 0  # of the current generation, counted as callbacks are served
        self.generation = 0  # a transaction's callbacks are dropped once it is aborted
        self._refused: dict[tuple[str, type], int] = {}  # (topic, error type) -> smallest record refused

    def start(self) -> None:
        """A new transaction: nothing has failed in it yet."""
        self.failures = 0
        self._refused.clear()

    def completed(self, pending: _Pending, error: BaseException | None, never_sent: bool | None) -> None:
        """Any thread: queue an outcome for the caller's thread."""
        self._done.append((pending, error, never_sent))
        self._arrived.set()

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if self.pending >= self._capacity or self.pending_bytes >= self._capacity_bytes:
            raise SinkFull(f"{self.pending} records ({self.pending_bytes} bytes) awaiting acknowledgement")
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        pending = _Pending(self, topic, on_delivery, size)
        self.pending += 1
        self.pending_bytes += size
        if key is None and value is None:
            value = b""  # kafka-python refuses a record with neither; an empty value is the closest it takes
        try:
            future = self._send(topic, key, value, _header_list(headers))
        except (KafkaError, TypeError, ValueError) as error:
            # Refused before it was queued (larger than max_request_size, invalid, no metadata): its callback
            # says so, as for a record the broker refused; nothing about one record escapes the sink. Refused
            # for the producer's state (an earlier record failed the transaction), it says nothing about this
            # record: reported as never sent, which makes it collateral.
            if _about_the_producer(error):
                self.completed(pending, error, True)
            else:
                pending.failed(error)
            return
        pending.future = future
        future.add_callback(pending.succeeded)
        future.add_errback(pending.failed)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        deadline = time.monotonic() + METADATA_WAIT_S
        while True:
            try:
                return self._producer.send(topic, value=value, key=key, headers=headers)
            except KafkaTimeoutError:
                # No metadata for the topic yet: send() gave up after max_block_ms (0: at once), having asked
                # for it. It usually comes within milliseconds (the first record to a topic).
                if time.monotonic() >= deadline:
                    raise KafkaTimeoutError(f"no metadata for topic {topic} yet") from None
                time.sleep(_METADATA_STEP_S)

    def serve(self) -> int:
        """Run the callbacks of what completed so far (not of what they publish meanwhile)."""
        done = self._done
        outcomes = [done.popleft() for _ in range(len(done))]
        for pending, error, never_sent in outcomes:  # what the broker itself refused, first
            if error is not None and never_sent is False and pending.generation == self.generation:
                key = (pending.topic, type(error))
                self._refused[key] = min(self._refused.get(key, pending.size), pending.size)
        served = 0
        for pending, error, never_sent in outcomes:
            self.pending -= 1
            self.pending_bytes -= pending.size
            if pending.generation != self.generation:
                continue  # its transaction was aborted: the caller has moved on
            served += 1
            if error is None:
                pending.on_delivery(None)
                continue
            self.failures += 1
            pending.on_delivery(delivery_error(error, collateral=self._collateral(pending, error, never_sent)))
        return served

    def _collateral(self, pending: _Pending, error: BaseException, never_sent: bool | None) -> bool:
        if isinstance(error, _PRODUCER_STATE_ERRORS):
            return True  # about the producer's sequence numbers or epoch, not about the record
        if not never_sent:
            return False  # the broker's own verdict on this record (or kafka-python's, before sending it)
        smallest_refused = self._refused.get((pending.topic, type(error)))
        if smallest_refused is None:
            return True
        if isinstance(error, _SIZE_ERRORS):
            return pending.size < smallest_refused
        return False

    def wait(self, timeout_s: float) -> None:
        """Until an outcome arrives or ``timeout_s`` passes."""
        if timeout_s <= 0 or self._done:
            return
        self._arrived.clear()
        if not self._done:  # checked after clearing, so an outcome from now on wakes us
            self._arrived.wait(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        """Serve callbacks until none is pending (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._transactional or len(self._done) >= self.pending:
                self.serve()
            if self.pending == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.serve()
                return False
            if len(self._done) < self.pending:
                # Sends what lingers and waits for the broker; its own verdict does not matter (it raises
                # when a batch it waits on was split and re-sent), the callbacks tell what happened.
                with contextlib.suppress(KafkaError):
                    self._producer.flush(timeout=remaining)
                self.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def forget(self) -> None:
        """Drop the callbacks of everything sent so far (an aborted transaction's records)."""
        self.generation += 1
        self.start()
        self.serve()


class KafkaPythonSink(MessageSink):
    def __init__(
        self,
        connection: KafkaConnection,
        *,
        queue_capacity: int = 100_000,
        queue_bytes: int = 64 * 1024 * 1024,
        extra: Mapping[str, Any] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        defaults = with_message_limit({**PRODUCER_DEFAULTS, **(extra or {})}, max_message_bytes)
        config = client_config(connection, "producer", defaults, reserved=("transactional_id",))
        self._limit = message_limit(config)
        self._connection = connection
        self._producer = create_producer(config)
        self._deliveries = Deliveries(self._producer, queue_capacity, queue_bytes)
        self._closed = False

    @property
    def pending(self) -> int:
        """Records published whose callback has not run yet."""
        return self._deliveries.pending

    def max_message_bytes(self) -> int | None:
        return self._limit

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        self._deliveries.send(topic, key, value, headers, on_delivery)

    def poll(self, timeout_s: float) -> None:
        self._deliveries.wait(timeout_s)
        self._deliveries.serve()

    def problem(self) -> PipelineError | None:
        return connection_problem(self._connection)

    def flush(self, timeout_s: float) -> bool:
        return self._deliveries.flush(timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._deliveries.flush(_CLOSE_FLUSH_S):
            log.warning(
                "producer closed with %d record(s) unacknowledged; their offsets were not committed",
                self._deliveries.pending,
            )
        try:
            close_producer(self._producer)
        except KafkaError as error:
            log.warning("producer close: %s", error)
