"""A transactional confluent-kafka producer behind the TransactionalSink port (exactly-once mode)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from adapters.confluent.config import ErrorReporter, KafkaConnection, client_config, is_unreachable
from adapters.confluent.sink import PRODUCER_DEFAULTS, _delivered
from application.errors import BrokerUnavailable, FatalBrokerError, InvalidConfiguration, SinkFull, TransactionAborted
from application.messages import Headers, TopicPartition
from application.ports import DeliveryCallback, TransactionalSink

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
_COMMIT_ATTEMPTS = 3


class ConfluentTransactionalSink(TransactionalSink):
    """A stable ``transactional_id`` per instance lets a restart fence its crashed predecessor at once.

    Without one, the predecessor's open transaction would hold back read_committed
    consumers until ``transaction.timeout.ms`` expires.
    """

    def __init__(
        self, connection: KafkaConnection, transactional_id: str, *, transaction_timeout_ms: int = 60_000
    ) -> None:
        self.errors = ErrorReporter("transactional producer")
        config = client_config(
            connection,
            "producer",
            {
                **PRODUCER_DEFAULTS,
                "transactional.id": transactional_id,
                "transaction.timeout.ms": transaction_timeout_ms,
                # librdkafka insists that a record cannot outlive the transaction that carries it.
                "delivery.timeout.ms": min(PRODUCER_DEFAULTS["delivery.timeout.ms"], transaction_timeout_ms),
                "error_cb": self.errors,
            },
        )
        try:
            self._producer = Producer(config)
        except KafkaException as error:
            raise InvalidConfiguration(f"invalid producer configuration: {error.args[0].str()}") from None
        self._ready = False
        self._open = False

    def _failure(self, exception: KafkaException) -> Exception:
        error: KafkaError = exception.args[0]
        if error.fatal():
            return FatalBrokerError(error.str())
        if is_unreachable(error):
            return BrokerUnavailable(error.str())
        return TransactionAborted(error.str())

    def begin(self) -> None:
        try:
            if not self._ready:
                self._producer.init_transactions(_TIMEOUT_S)  # fences any earlier instance with our id
                self._ready = True
            self._producer.begin_transaction()
            self._open = True
        except KafkaException as exception:
            raise self._failure(exception) from None

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        try:
            self._producer.produce(
                topic, value, key, headers=list(headers) or None, on_delivery=partial(_delivered, on_delivery)
            )
        except BufferError as error:
            self._producer.poll(0.05)
            raise SinkFull(str(error)) from None

    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            self._producer.send_offsets_to_transaction(partitions, group_metadata, _TIMEOUT_S)
        except KafkaException as exception:
            raise self._failure(exception) from None
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                self._producer.commit_transaction(_TIMEOUT_S)
                self._open = False
                return
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.retriable() and not error.txn_requires_abort() and attempt < _COMMIT_ATTEMPTS:
                    continue  # the commit's outcome is unknown: asking again is the documented remedy
                raise self._failure(exception) from None

    def abort(self) -> None:
        if not self._open:
            return
        try:
            self._producer.abort_transaction(_TIMEOUT_S)
        except KafkaException as exception:
            raise self._failure(exception) from None
        finally:
            self._open = False

    def close(self) -> None:
        if self._open:
            try:
                self._producer.abort_transaction(5.0)
            except KafkaException as error:
                log.warning("could not abort the open transaction (the broker will, on timeout): %s", error)
        self._producer.flush(5.0)
