"""The ports: what the use cases need from the outside world, and nothing more."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from application.errors import InvalidConfiguration, PipelineError, SinkFull, UnsupportedOperation
from application.messages import ConsumedRecord, DeliveryError, Headers, TopicPartition

DeliveryCallback = Callable[[DeliveryError | None], None]

# How long one wait for room in a full producer queue serves acknowledgements (DeliverySink.publish_when_room).
ROOM_WAIT_S = 0.05


class RebalanceListener(Protocol):
    """Called from inside ``MessageSource.poll_batch`` when the group moves partitions."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Taken away without notice (the session expired): too late to commit them."""


@dataclass(frozen=True, slots=True)
class GroupView:
    """The consumer group as one member can tell it, from the broker's description of the group.

    Only a Stable group's ownership is settled. While it rebalances (PreparingRebalance,
    CompletingRebalance, or Reconciling/Assigning under the consumer protocol) the broker may be waiting
    for a member that stopped responding, which it drops only once its session times out; it may still
    list that member with the partitions it held, which nobody reads meanwhile.
    """

    state: str  # the broker's name for it: "Stable", "PreparingRebalance", "Empty" ...
    joined: bool  # this member is one of the group's members (its join has reached the broker)
    partitions: frozenset[TopicPartition]  # every partition of the subscribed topics
    owned: frozenset[TopicPartition]  # those assigned to a member of the group, as the broker lists them
    mine: frozenset[TopicPartition]  # those assigned to this member (it may not have been told yet)
    members: int
    session_timeout_s: float  # the longest a member that stopped responding keeps its partitions

    @property
    def stable(self) -> bool:
        return self.state == "Stable" and self.joined

    @property
    def unowned(self) -> list[TopicPartition]:
        return sorted(self.partitions - self.owned)


class MessageSource(ABC):
    """A consumer-group member reading records and committing positions by hand.

    Raises only PipelineErrors: BrokerUnavailable (or its AuthenticationFailed, TlsFailed) while the
    cluster cannot be used, NotAuthorized when an ACL is missing, CommitFailed from ``commit``,
    InvalidConfiguration from the constructor, FatalBrokerError when the client cannot continue.
    """

    @abstractmethod
    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None: ...

    @abstractmethod
    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first one."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        """Store the next offset to read per partition; raises CommitFailed if the group refuses."""

    @abstractmethod
    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abstractmethod
    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Leave the group promptly so its partitions move without waiting for a session timeout."""

    def lag(self) -> dict[TopicPartition, int]:
        """Records between this member's position and each assigned partition's end, where known."""
        return {}

    def unreadable(self) -> list[TopicPartition]:
        """Assigned partitions whose start offset is not known yet, so nothing can be read from them.

        A read-committed member gets no committed offset while a transaction that committed one is
        still open: a crashed exactly-once instance's, until the broker aborts it at its transaction
        timeout. "No record for a while" says nothing about such partitions.
        """
        return []

    def group_view(self) -> GroupView | None:
        """The group's state as the broker describes it now; None when this source cannot tell.

        For idle checks only (a request to the group coordinator, bounded in time), never per record.
        Raises BrokerUnavailable when the broker does not answer in time, UnsupportedOperation when it
        refuses to describe the group (so asking again will not help).
        """
        return None

    def group_metadata(self) -> object:
        """The group's identity for a transactional offset commit (exactly-once mode only)."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot take part in transactions")

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Move the read position back, so an aborted transaction's records are read again."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot rewind")


class DeliverySink(ABC):
    """A producer that reports each record's fate through a callback, served by ``poll``: what both sinks share.

    Raises SinkFull from ``publish``; each subclass names what else it raises. A refused record is a
    DeliveryError passed to its callback, never raised.
    """

    @abstractmethod
    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        """Queue one record; raises SinkFull when the local queue has no room (see ``publish_when_room``).

        ``on_delivery`` runs later, on the caller's thread, from ``poll`` or ``flush``,
        with None once the broker has the record or a DeliveryError. A record the client
        refuses to queue (too large for the producer, invalid) is reported the same way,
        with a non-retriable DeliveryError carrying the client's text: nothing about one
        record raises from here.
        """

    @abstractmethod
    def poll(self, timeout_s: float) -> None:
        """Serve pending delivery callbacks, waiting at most ``timeout_s`` for one to arrive."""

    @abstractmethod
    def close(self) -> None: ...

    def max_message_bytes(self) -> int | None:
        """The largest record the producer itself lets through, where the adapter knows it."""
        return None

    def publish_when_room(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        on_delivery: DeliveryCallback,
        waiting: Callable[[], bool] | None = None,
    ) -> bool:
        """``publish``, and while the producer's queue is full, make room and try again: the one answer to SinkFull.

        Room comes from acknowledgements, so the wait is ``poll``: it serves them, and returns as soon as
        one arrives. Before each wait ``waiting()`` runs (to pause fetching, or to give up: False stops
        trying and returns False). The at-least-once per-record path calls ``publish`` itself, and this
        only on SinkFull: one call less per record.
        """
        while True:
            try:
                self.publish(topic, key, value, headers, on_delivery)
                return True
            except SinkFull:
                if waiting is not None and not waiting():
                    return False
                self.poll(ROOM_WAIT_S)


class MessageSink(DeliverySink):
    """A producer whose records the broker takes one by one.

    Raises SinkFull from ``publish``; NotAuthorized or FatalBrokerError from ``poll``/``flush`` once the
    producer cannot continue (e.g. the principal may not write idempotently); InvalidConfiguration
    from the constructor.
    """

    @abstractmethod
    def flush(self, timeout_s: float) -> bool:
        """Wait for every queued record's callback; True when none is left."""

    def problem(self) -> PipelineError | None:
        """Why the cluster cannot be used now, when the client knows: a refused login, a TLS failure, a
        missing ACL. For a caller that sees records time out to name the cause (e.g. ``pipeline produce``)."""
        return None


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    max_message_bytes: int | None = None  # the topic's max.message.bytes when created; None: the broker's


def created_detail(spec: TopicSpec) -> str:
    """How a created topic is described in its report."""
    detail = f"{spec.partitions} partitions, replication {spec.replication_factor}"
    return detail if spec.max_message_bytes is None else f"{detail}, max.message.bytes {spec.max_message_bytes}"


MAX_MESSAGE_BYTES = "max.message.bytes"


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic configuration a created topic gets (only what the spec sets)."""
    return {} if spec.max_message_bytes is None else {MAX_MESSAGE_BYTES: str(spec.max_message_bytes)}


def refused_topic(name: str, detail: str) -> InvalidConfiguration:
    """The cluster refuses to create ``name`` as configured (and asking again will not help)."""
    check = "check TOPIC_PARTITIONS, TOPIC_REPLICATION_FACTOR"
    return InvalidConfiguration(f"cannot create topic {name} ({check}): {detail}")


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    status: str  # "created", "exists" or "mismatch"
    detail: str = ""


class TopicAdmin(ABC):
    """Creates missing topics; never alters an existing one, only reports how it differs.

    Raises BrokerUnavailable (or AuthenticationFailed, TlsFailed), NotAuthorized, or
    InvalidConfiguration (a bad setting, or a topic the cluster refuses to create as configured).
    """

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> list[TopicReport]:
        """Create the missing topics; report each as "created", "exists" or "mismatch" (partition count)."""
        existing = self._partition_counts([spec.name for spec in specs])
        missing = [spec for spec in specs if spec.name not in existing]
        concurrently = self._create_topics(missing) if missing else set()
        reports = []
        for spec in specs:
            actual = existing.get(spec.name)
            if actual is None:
                created = spec.name not in concurrently
                reports.append(
                    TopicReport(spec.name, "created", created_detail(spec))
                    if created
                    else TopicReport(spec.name, "exists", "created concurrently")
                )
            elif actual != spec.partitions:
                reports.append(
                    TopicReport(spec.name, "mismatch", f"has {actual} partitions, configured {spec.partitions}")
                )
            else:
                reports.append(TopicReport(spec.name, "exists", f"{actual} partitions"))
        return reports

    @abstractmethod
    def _partition_counts(self, names: Sequence[str]) -> dict[str, int]:
        """The partition count of each of ``names`` that exists (missing ones left out); the port's errors."""

    @abstractmethod
    def _create_topics(self, specs: Sequence[TopicSpec]) -> set[str]:
        """Create ``specs`` (with ``topic_configs``); return the names someone else created meanwhile.

        A topic the cluster refuses to create as configured raises ``refused_topic``'s error.
        """

    @abstractmethod
    def max_message_bytes(self, topics: Sequence[str]) -> dict[str, int]:
        """Each existing topic's ``max.message.bytes`` (missing topics are left out); BrokerUnavailable."""

    def close(self) -> None:  # noqa: B027 - optional hook: not every admin holds connections
        """Release the client's connections."""


class GroupOffsets(ABC):
    """Reads and deletes other consumer groups' committed offsets without joining them (DLQ replay positions)."""

    @abstractmethod
    def committed(self, group_ids: Sequence[str], topic: str) -> dict[str, dict[TopicPartition, int]]:
        """Each group's committed next offset per partition of ``topic`` ({} if it has none); BrokerUnavailable."""

    @abstractmethod
    def delete_groups(self, group_ids: Sequence[str]) -> None:
        """Delete these groups and their committed offsets (an unknown one is fine); GroupInUse, BrokerUnavailable."""

    def close(self) -> None:  # noqa: B027 - optional hook: not every implementation holds connections
        """Release the client's connections."""


class TransactionalSink(DeliverySink):
    """A producer that writes a batch of records and the input offsets they consume atomically.

    Records are published and their callbacks served (``poll``) as by a MessageSink; one becomes visible
    to read_committed consumers only on commit. A transaction with a record the client refused to
    queue does not commit: ``commit`` raises TransactionAborted once that record's callback has said why.

    Raises SinkFull from ``publish``, TransactionAborted (retry the batch), CommitFailed, BrokerUnavailable
    (or its subclasses), NotAuthorized (e.g. on the transactional id), FatalBrokerError (fenced),
    InvalidConfiguration.
    """

    @abstractmethod
    def prepare(self) -> None:
        """Claim the transactional id before consuming; BrokerUnavailable leaves it to the first ``begin``.

        Claiming fences a crashed predecessor with the same id and aborts its open transaction now.
        Left to the first batch, that transaction would hold its partitions' committed offsets unstable,
        so the consumer could fetch nothing from them until ``transaction.timeout.ms`` expired it.
        """

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        """Commit records and offsets together; TransactionAborted means abort and retry, FatalBrokerError stop."""

    @abstractmethod
    def abort(self) -> None: ...


class Waitable(Protocol):
    """A ``threading.Event``, or a ``threading.Condition`` whose lock the caller holds."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Clock:
    """Wall and monotonic time, and every wait; tests substitute a fake to make time-based behaviour deterministic.

    Waiting goes through the clock too, so a fake one can let the time pass at once instead of blocking.
    """

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, waitable: Waitable, seconds: float) -> bool:
        """Wait until ``waitable`` is signalled or ``seconds`` pass; True when it was signalled."""
        return waitable.wait(max(seconds, 0.0))


class Metrics:
    """Observations the pipeline reports, in batches so the hot path stays cheap; the base ignores them."""

    def consumed(self, count: int) -> None:
        """Records read from the input topic."""

    def processed(self, count: int) -> None:
        """Records the output topic acknowledged."""

    def dead_lettered(self, reason: str, count: int) -> None:
        """Records the DLQ acknowledged, by reason code."""

    def retried(self, count: int) -> None:
        """Publishes (at-least-once) or whole transactions (exactly-once) tried again."""

    def committed(self, count: int) -> None:
        """Partition offsets one commit stored."""

    def batch_processed(self, seconds: float, records: int) -> None:
        """How long one polled batch took to handle."""

    def end_to_end_latency(self, seconds: float) -> None:
        """An input record's timestamp to its output's acknowledgement, one record a batch."""

    def in_flight(self, count: int) -> None:
        """Consumed records not yet acknowledged, now."""

    def paused_partitions(self, count: int) -> None:
        """Partitions not fetched now: backpressure, or a dead letter the DLQ refuses."""

    def stalled_partitions(self, count: int) -> None:
        """Partitions stopped at a dead letter the DLQ refuses for good."""

    def consumer_lag(self, partition: TopicPartition, lag: int) -> None:
        """Records between this member's position and the partition's end."""


class RecordSpan(Protocol):
    """One record's processing span, started by ``Tracer.start``."""

    def end(self, reason: str | None, error: str | None = None) -> list[tuple[str, bytes]]:
        """Close the span with the record's fate (``reason``: None for the output topic, the DLQ reason
        otherwise; ``error``: what went wrong, for a processing or publish failure) and return the trace-context
        headers (W3C ``traceparent``, ``tracestate``...) that make this span the parent of the outgoing record.
        Never raises."""
        ...


class _NoSpan:
    __slots__ = ()

    def end(self, reason: str | None, error: str | None = None) -> list[tuple[str, bytes]]:
        return []


_NO_SPAN = _NoSpan()


class Tracer:
    """Spans for the records' processing, continuing each record's trace context; the base traces nothing.

    Only a tracer whose ``enabled`` is True is ever asked for spans: the routing is chosen once, at construction,
    so tracing off costs nothing per record. Nothing here raises: spans leave in the background, and an
    exporter's failure is the adapter's to log.
    """

    enabled: bool = False
    # The headers the trace context travels in; an outgoing record carries the new span's, never stale ones.
    fields: frozenset[str] = frozenset()

    def start(self, record: ConsumedRecord) -> RecordSpan:
        """A span for processing ``record``, the child of the trace context in its headers if it has one."""
        return _NO_SPAN

    def shutdown(self, timeout_s: float) -> None:
        """Send the spans still buffered, waiting at most ``timeout_s``; called once, on the way out."""
