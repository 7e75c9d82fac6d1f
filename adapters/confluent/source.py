"""A confluent-kafka consumer behind the MessageSource port: manual commits, batch polling, rebalance callbacks."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from adapters.confluent.config import (
    OWNERSHIP_LOST,
    client_config,
    is_not_authorized,
    reporting_config,
    translate,
    unavailable,
)
from adapters.kafka_source import ConsumerOptions, KafkaSource
from application.errors import (
    BrokerUnavailable,
    CommitFailed,
    InvalidConfiguration,
    PipelineError,
    UnsupportedOperation,
)
from application.messages import CREATE_TIME, LOG_APPEND_TIME, ConsumedRecord, TopicPartition
from application.ports import GroupView, RebalanceListener

log = logging.getLogger(__name__)

_PROBE_INTERVAL_S = 1.0
# Once a record is in hand, how long a poll may wait for more to fill its batch.
_GATHER_S = 0.002
_PROBE_TIMEOUT_S = 2.0
# How long to wait for a committed offset before calling its partition unreadable for now.
_COMMITTED_QUERY_TIMEOUT_S = 5.0
# A commit refused for lost ownership: the next owner re-reads from the last commit. librdkafka adds its
# own two for a consumer (its assignment lost, or revoked while the commit was in flight).
_COMMIT_OWNERSHIP_LOST = OWNERSHIP_LOST | {KafkaError._ASSIGNMENT_LOST, KafkaError._STATE}
_IGNORED_CONSUME_ERRORS = {KafkaError._PARTITION_EOF}
# By librdkafka's TIMESTAMP_NOT_AVAILABLE (0), TIMESTAMP_CREATE_TIME (1), TIMESTAMP_LOG_APPEND_TIME (2).
_TIMESTAMP_TYPES = (None, CREATE_TIME, LOG_APPEND_TIME)
# Describing the group (at idle checks only): the longest one answer may take.
_DESCRIBE_TIMEOUT_S = 5.0
# The broker refuses to describe the group (or this client to ask): asking again will not help.
_CANNOT_DESCRIBE = {
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.UNSUPPORTED_VERSION,
    KafkaError._UNSUPPORTED_FEATURE,
    KafkaError._INVALID_ARG,
}
# librdkafka's names for the group states, as the broker spells them.
_STATES = {
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "STABLE": "Stable",
    "EMPTY": "Empty",
    "DEAD": "Dead",
}


def _ours(partitions: Sequence[KafkaTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


class ConfluentSource(KafkaSource):
    def _start(self, options: ConsumerOptions) -> None:
        self._admin: AdminClient | None = None  # created at the first idle check that describes the group
        self.errors, config = reporting_config(
            self._connection,
            "consumer",
            {
                "group.id": options.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": options.auto_offset_reset,
                "session.timeout.ms": options.session_timeout_ms,
                "isolation.level": options.isolation_level,
                # Bound what librdkafka prefetches per partition, so memory stays flat whatever the backlog.
                "queued.max.messages.kbytes": 16_384,
                "on_commit": self._on_commit,
                **options.extra,
            },
        )
        try:
            self._consumer = Consumer(config)
        except KafkaException as error:
            raise InvalidConfiguration(f"invalid consumer configuration: {error.args[0].str()}") from None
        self._listener: RebalanceListener | None = None
        self._verified = False
        self._last_probe = 0.0

    # -- rebalance callbacks, called by librdkafka from inside consume() -------------------

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._verified = True
        self.errors.reachable()
        if self._listener is not None:
            self._listener.on_assigned(_ours(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        if self._listener is not None:
            self._listener.on_revoked(_ours(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        log.warning("partitions lost (session expired?): %s; their next owner re-reads them", _ours(partitions))
        if self._listener is not None:
            self._listener.on_lost(_ours(partitions))

    def _on_commit(self, error: KafkaError | None, partitions: list[KafkaTopicPartition]) -> None:
        if error is not None and error.code() != KafkaError._NO_OFFSET:
            log.warning("asynchronous commit failed (the next commit covers it): %s", error.str())

    # -- MessageSource -----------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._listener = listener
        self._topics = list(topics)
        self._consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _probe(self) -> None:
        """Ask the cluster for metadata; raise BrokerUnavailable if it does not answer."""
        now = time.monotonic()
        if now - self._last_probe < _PROBE_INTERVAL_S:
            raise self.errors.unavailable()
        self._last_probe = now
        try:
            self._consumer.list_topics(timeout=_PROBE_TIMEOUT_S)
        except KafkaException as error:
            raise self._translate(error) from None
        self._verified = True
        self.errors.reachable()

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        if not self._verified or self.errors.unreachable:
            try:
                self._probe()
            except BrokerUnavailable as down:
                # librdkafka hands over its error callbacks only inside consume(): serve them, so that
                # the error names the cause (a refused login, a TLS failure), keeping what it returns.
                records = self._consume(max_records, 0.0)
                if records:
                    return records
                raise self.errors.known_cause() or down from None
        return self._consume(max_records, timeout_s)

    def _consume(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        if self.errors.fatal is not None:
            raise self._translate(self.errors.fatal)
        wanted = max(max_records, 1)
        consume = self._consumer.consume
        try:
            # Serve what has arrived: consume(n, timeout) waits for n records or the whole timeout, so at
            # light load a record would sit in the queue until a batch fills up. Take what is queued; if
            # nothing is, wait for the first record only; then top the batch up for at most _GATHER_S, so
            # that under load batches stay full (tiny batches measured slower) and light load waits ~2 ms.
            messages: list[Message] = consume(wanted, 0)
            if not messages and timeout_s > 0:
                messages = consume(1, timeout_s)
            if messages and len(messages) < wanted and timeout_s > 0:
                messages += consume(wanted - len(messages), min(timeout_s, _GATHER_S))
        except KafkaException as failure:
            raise self._translate(failure) from None
        records: list[ConsumedRecord] = []
        # Untyped on purpose: the stubs make every accessor Optional, but an error-free message has them all.
        new_record: Any = ConsumedRecord
        for message in messages:
            error = message.error()
            if error is not None:
                self._consume_error(error)
                continue
            timestamp_type, timestamp = message.timestamp()
            records.append(
                new_record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    message.headers() or (),
                    timestamp if timestamp_type else None,
                    _TIMESTAMP_TYPES[timestamp_type],
                )
            )
        return records

    def _consume_error(self, error: KafkaError) -> None:
        if error.code() in _IGNORED_CONSUME_ERRORS:
            return
        if error.fatal() or is_not_authorized(error):
            raise self._translate(error)
        if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            self._raise_if_hidden()
            log.warning("input topic missing (create it with `pipeline topics ensure`): %s", error.str())
            return
        log.warning("consume error: %s", error.str())

    def _raise_if_hidden(self) -> None:
        """A topic this principal may not Describe looks missing to a subscriber: ask, and say so instead."""
        for topic in self._topics:
            try:
                metadata = self._consumer.list_topics(topic, timeout=_PROBE_TIMEOUT_S).topics.get(topic)
            except KafkaException:
                return  # cannot tell: the warning below stands
            if metadata is not None and metadata.error is not None and is_not_authorized(metadata.error):
                raise translate(
                    metadata.error,
                    self.errors,
                    operation="Describe",
                    resources={"topic": topic},
                    connection=self._connection,
                )

    def commit(self, offsets: Mapping[TopicPartition, int], *, asynchronous: bool = False) -> None:
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
                return
            result = self._consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exception:
            error = exception.args[0]
            if error.code() == KafkaError._NO_OFFSET:
                return
            if error.code() in _COMMIT_OWNERSHIP_LOST:
                raise CommitFailed(error.str()) from None
            # Coordinator moving or loading, timeouts, transport: the next commit will cover these offsets.
            raise self._translate(exception) from None
        for partition in result:
            if partition.error is not None:
                raise CommitFailed(f"{partition.topic}[{partition.partition}]: {partition.error.str()}")

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.pause([KafkaTopicPartition(p.topic, p.partition) for p in partitions])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._consumer.resume([KafkaTopicPartition(p.topic, p.partition) for p in partitions])

    def lag(self) -> dict[TopicPartition, int]:
        lags = {}
        try:
            assigned = self._consumer.assignment()
            for position in self._consumer.position(assigned):
                _, high = self._consumer.get_watermark_offsets(position, cached=True)
                if high >= 0 and position.offset >= 0:
                    lags[TopicPartition(position.topic, position.partition)] = max(0, high - position.offset)
        except KafkaException:
            return {}
        return lags

    def unreadable(self) -> list[TopicPartition]:
        """librdkafka knows a position only once it has handed out a record, so ask for the rest's start.

        Its committed-offset query, like the fetcher's, waits while a transaction holds the offset back.
        """
        try:
            unread = [p for p in self._consumer.position(self._consumer.assignment()) if p.offset < 0]
        except KafkaException:  # local state only: not expected, and nothing to say about partitions then
            return []
        if not unread:
            return []
        try:
            found = self._consumer.committed(unread, _COMMITTED_QUERY_TIMEOUT_S)
        except KafkaException:
            return _ours(unread)
        return _ours([p for p in found if p.error is not None])

    def group_view(self) -> GroupView:
        """The group coordinator's description of the group, and the subscribed topics' partitions."""
        try:
            if self._admin is None:
                self._admin = AdminClient(client_config(self._connection, "admin", {}))
            future = self._admin.describe_consumer_groups([self._group_id], request_timeout=_DESCRIBE_TIMEOUT_S)
            description = future[self._group_id].result(timeout=_DESCRIBE_TIMEOUT_S + 1)
            partitions: set[TopicPartition] = set()
            for topic in self._topics:
                metadata = self._consumer.list_topics(topic, timeout=_DESCRIBE_TIMEOUT_S).topics.get(topic)
                if metadata is not None and metadata.error is None:
                    partitions.update(TopicPartition(topic, number) for number in metadata.partitions)
            member_id = self._consumer.memberid() or ""
        except KafkaException as exception:
            error = exception.args[0] if exception.args else None
            if isinstance(error, KafkaError) and error.code() in _CANNOT_DESCRIBE:
                raise UnsupportedOperation(f"cannot describe group {self._group_id}: {error.str()}") from None
            raise unavailable(exception, self._servers) from None
        except concurrent.futures.TimeoutError:
            raise BrokerUnavailable(
                f"group {self._group_id}: no description within {_DESCRIBE_TIMEOUT_S:.0f}s from {self._servers}"
            ) from None
        except RuntimeError as error:  # the consumer is closed
            raise UnsupportedOperation(str(error)) from None
        state = getattr(description.state, "name", str(description.state))
        owned: set[TopicPartition] = set()
        mine: set[TopicPartition] = set()
        for member in description.members:
            held = {TopicPartition(p.topic, p.partition) for p in member.assignment.topic_partitions} & partitions
            owned |= held
            if member.member_id == member_id:
                mine = held
        return GroupView(
            state=_STATES.get(state, state.title()),
            joined=bool(member_id) and any(m.member_id == member_id for m in description.members),
            partitions=frozenset(partitions),
            owned=frozenset(owned),
            mine=frozenset(mine),
            members=len(description.members),
            session_timeout_s=self._session_timeout_s,
        )

    def close(self) -> None:
        self._admin = None
        try:
            self._consumer.close()  # runs the revoke callback, then leaves the group
        except (KafkaException, RuntimeError) as error:
            log.warning("consumer close: %s", error)

    # -- for exactly-once: the transaction needs the group's identity and rewinds on abort ----------

    def group_metadata(self) -> object:
        try:
            return self._consumer.consumer_group_metadata()
        except KafkaException as error:
            raise self._translate(error) from None

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            for tp, offset in offsets.items():
                self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as error:
            raise self._translate(error) from None

    def _translate(self, error: KafkaException | KafkaError) -> PipelineError | Exception:
        resources = {"group": self._group_id, "topic": ",".join(self._topics)}
        return translate(error, self.errors, operation="Read", resources=resources, connection=self._connection)
