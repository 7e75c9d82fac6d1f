"""One factory per broker adapter, so the same contract tests drive all of them."""

from __future__ import annotations

import importlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, cast

from adapters.memory import InMemoryAdmin, InMemoryBroker, InMemorySink, InMemorySource, InMemoryTransactionalSink
from adapters.memory.groups import InMemoryGroupOffsets
from application.messages import ConsumedRecord, TopicPartition
from application.ports import GroupOffsets, MessageSink, MessageSource, TopicAdmin, TopicSpec, TransactionalSink


class Recorder:
    """A RebalanceListener that remembers what happened and can commit on revocation."""

    def __init__(self) -> None:
        self.source: MessageSource | None = None
        self.assigned: set[TopicPartition] = set()
        self.history: list[tuple[str, list[TopicPartition]]] = []
        self.positions: dict[TopicPartition, int] = {}

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.update(partitions)
        self.history.append(("assigned", list(partitions)))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        mine = {p: o for p, o in self.positions.items() if p in set(partitions)}
        if mine and self.source is not None:
            self.source.commit(mine)
        self.assigned.difference_update(partitions)
        self.history.append(("revoked", list(partitions)))

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.difference_update(partitions)
        self.history.append(("lost", list(partitions)))

    def saw(self, records: Sequence[ConsumedRecord]) -> None:
        for record in records:
            self.positions[TopicPartition(record.topic, record.partition)] = record.offset + 1


class AdapterKit(ABC):
    name: str
    quiet_s = 2.0  # how long read_all waits for more once it has what was expected

    @abstractmethod
    def source(self, group: str) -> MessageSource: ...

    @abstractmethod
    def sink(self) -> MessageSink: ...

    @abstractmethod
    def admin(self) -> TopicAdmin: ...

    @abstractmethod
    def group_offsets(self) -> GroupOffsets: ...

    @abstractmethod
    def transactional_sink(self, transactional_id: str) -> TransactionalSink: ...

    def topic(self, partitions: int, max_message_bytes: int | None = None, *, prefix: str = "contract") -> str:
        """A new topic (created through the admin adapter), with that ``max.message.bytes`` if given."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin = self.admin()
        try:
            [report] = admin.ensure_topics([TopicSpec(name, partitions, 1, max_message_bytes)])
            assert report.status == "created", report
        finally:
            admin.close()
        return name

    def read_all(self, topic: str, expected: int, timeout_s: float = 30.0) -> list[ConsumedRecord]:
        """Everything in ``topic`` (at least ``expected`` records), read by a fresh group that never commits."""
        source = self.source(f"reader-{uuid.uuid4().hex[:8]}")
        recorder = Recorder()
        source.subscribe([topic], recorder)
        records: list[ConsumedRecord] = []
        deadline = time.monotonic() + timeout_s
        try:
            # Quiet means nothing to read only once the reader owns the partitions: with none assigned yet,
            # an empty poll says nothing, and reading "at least 0 records" would pass without looking.
            while (len(records) < expected or not recorder.assigned) and time.monotonic() < deadline:
                records.extend(source.poll_batch(500, 0.2))
            # Anything beyond what was expected (duplicates, or more dead letters than invalid inputs)?
            # Read on until the topic stays quiet for quiet_s: a fixed window missed some with slow clients.
            quiet_until = time.monotonic() + self.quiet_s
            while time.monotonic() < quiet_until and time.monotonic() < deadline:
                batch = source.poll_batch(500, 0.1)
                if batch:
                    records.extend(batch)
                    quiet_until = time.monotonic() + self.quiet_s
        finally:
            source.close()
        return records


class MemoryKit(AdapterKit):
    name = "memory"
    quiet_s = 0.05  # everything published is readable at once

    def __init__(self) -> None:
        self.broker = InMemoryBroker()

    def source(self, group: str) -> MessageSource:
        return InMemorySource(self.broker, group)

    def sink(self) -> MessageSink:
        return InMemorySink(self.broker)

    def admin(self) -> TopicAdmin:
        return InMemoryAdmin(self.broker)

    def group_offsets(self) -> GroupOffsets:
        return InMemoryGroupOffsets(self.broker)

    def transactional_sink(self, transactional_id: str) -> TransactionalSink:
        return InMemoryTransactionalSink(self.broker)


class KafkaKit(AdapterKit):
    """The adapters of one Kafka client on a real broker, imported only when a test asks for that client."""

    package: str  # adapters.<package>: source, sink, admin, groups and transactional modules
    prefix: str  # the client's class-name prefix

    def __init__(self, bootstrap: str) -> None:
        from adapters.kafka_connection import KafkaConnection

        self.connection = KafkaConnection(bootstrap)

    def _adapter(self, module: str, role: str) -> Any:
        return getattr(importlib.import_module(f"adapters.{self.package}.{module}"), f"{self.prefix}{role}")

    def source(self, group: str) -> MessageSource:
        return cast(MessageSource, self._adapter("source", "Source")(self.connection, group, session_timeout_ms=10_000))

    def sink(self) -> MessageSink:
        return cast(MessageSink, self._adapter("sink", "Sink")(self.connection))

    def admin(self) -> TopicAdmin:
        return cast(TopicAdmin, self._adapter("admin", "Admin")(self.connection))

    def group_offsets(self) -> GroupOffsets:
        return cast(GroupOffsets, self._adapter("groups", "GroupOffsets")(self.connection))

    def transactional_sink(self, transactional_id: str) -> TransactionalSink:
        return cast(
            TransactionalSink, self._adapter("transactional", "TransactionalSink")(self.connection, transactional_id)
        )


class ConfluentKit(KafkaKit):
    name, package, prefix = "confluent", "confluent", "Confluent"


class KafkaPythonKit(KafkaKit):
    name, package, prefix = "kafka-python", "kafka_python", "KafkaPython"
