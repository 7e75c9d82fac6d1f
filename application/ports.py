"""The ports: what the use cases need from the outside world, and nothing more."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from application.errors import PipelineError, UnsupportedOperation
from application.messages import ConsumedRecord, DeliveryError, Headers, TopicPartition

DeliveryCallback = Callable[[DeliveryError | None], None]


class RebalanceListener(Protocol):
    """Called from inside ``MessageSource.poll_batch`` when the group moves partitions."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Taken away without notice (the session expired): too late to commit them."""


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

    def group_metadata(self) -> object:
        """The group's identity for a transactional offset commit (exactly-once mode only)."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot take part in transactions")

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Move the read position back, so an aborted transaction's records are read again."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot rewind")


class MessageSink(ABC):
    """A producer that reports each record's fate through a callback.

    Raises SinkFull from ``publish``; NotAuthorized or FatalBrokerError from ``poll``/``flush`` once the
    producer cannot continue (e.g. the principal may not write idempotently); InvalidConfiguration
    from the constructor. A refused record is a DeliveryError passed to its callback, never raised.
    """

    @abstractmethod
    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        """Queue one record; raises SinkFull when the local queue has no room.

        ``on_delivery`` runs later, on the caller's thread, from ``poll`` or ``flush``,
        with None once the broker has the record or a DeliveryError.
        """

    @abstractmethod
    def poll(self, timeout_s: float) -> None:
        """Serve pending delivery callbacks."""

    @abstractmethod
    def flush(self, timeout_s: float) -> bool:
        """Wait for every queued record's callback; True when none is left."""

    @abstractmethod
    def close(self) -> None: ...

    def problem(self) -> PipelineError | None:
        """Why the cluster cannot be used now, when the client knows: a refused login, a TLS failure, a
        missing ACL. For a caller that sees records time out to name the cause (e.g. ``pipeline produce``)."""
        return None


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int


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

    @abstractmethod
    def ensure_topics(self, specs: Sequence[TopicSpec]) -> list[TopicReport]: ...

    def close(self) -> None:  # noqa: B027 - optional hook: not every admin holds connections
        """Release the client's connections."""


class TransactionalSink(ABC):
    """A producer that writes a batch of records and the input offsets they consume atomically.

    Raises TransactionAborted (retry the batch), CommitFailed, BrokerUnavailable (or its subclasses),
    NotAuthorized (e.g. on the transactional id), FatalBrokerError (fenced), InvalidConfiguration.
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
    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        """As MessageSink.publish; a record becomes visible to read_committed consumers only on commit."""

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        """Commit records and offsets together; TransactionAborted means abort and retry, FatalBrokerError stop."""

    @abstractmethod
    def abort(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Clock:
    """Wall and monotonic time; tests substitute a fake to make time-based behaviour deterministic."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Metrics:
    """Observations the pipeline reports, in batches so the hot path stays cheap; the base ignores them."""

    def consumed(self, count: int) -> None:
        pass

    def processed(self, count: int) -> None:
        pass

    def dead_lettered(self, reason: str, count: int) -> None:
        pass

    def retried(self, count: int) -> None:
        pass

    def committed(self, count: int) -> None:
        pass

    def batch_processed(self, seconds: float, records: int) -> None:
        pass

    def end_to_end_latency(self, seconds: float) -> None:
        pass

    def in_flight(self, count: int) -> None:
        pass

    def paused_partitions(self, count: int) -> None:
        pass

    def consumer_lag(self, partition: TopicPartition, lag: int) -> None:
        pass
