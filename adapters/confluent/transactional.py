"""A transactional confluent-kafka producer behind the TransactionalSink port (exactly-once mode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from adapters.confluent.config import (
    OWNERSHIP_LOST,
    is_not_authorized,
    is_unreachable,
    reporting_config,
    translate,
)
from adapters.confluent.sink import PRODUCER_DEFAULTS, message_limit, produce, with_message_limit
from adapters.kafka_connection import KafkaConnection
from adapters.refusals import Refusals
from adapters.watchdog import Hung, bounded
from application.errors import (
    BrokerUnavailable,
    CommitFailed,
    FatalBrokerError,
    InvalidConfiguration,
    TransactionAborted,
)
from application.messages import Headers, TopicPartition
from application.ports import DeliveryCallback, TransactionalSink

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0
_ABORT_STEP_S = 1.0  # abort_transaction's timeout per try; deliveries are served between tries
_WATCHDOG_GRACE_S = 5.0
_COMMIT_ATTEMPTS = 3
_FENCED = {KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._FENCED}


def _guarded(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, given up on after its timeout plus a grace period (``Hung``).

    librdkafka's send_offsets_to_transaction can block forever when the group
    coordinator goes away mid-call, ignoring its timeout (confluentinc/librdkafka
    #5456, #5511, open as of 2.16); the stuck producer is then abandoned and replaced.
    """
    what = getattr(call, "__name__", "transactional call")
    return bounded(what, lambda: call(*args), _TIMEOUT_S + _WATCHDOG_GRACE_S, thread_name="kafka-transaction-call")


class ConfluentTransactionalSink(TransactionalSink):
    """A stable ``transactional_id`` per instance lets a restart fence its crashed predecessor at once.

    Without one, the predecessor's open transaction would hold back read_committed
    consumers until ``transaction.timeout.ms`` expires.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        transactional_id: str,
        *,
        transaction_timeout_ms: int = 60_000,
        max_message_bytes: int | None = None,
    ) -> None:
        self.errors, config = reporting_config(
            connection,
            "transactional producer",
            {
                **with_message_limit(PRODUCER_DEFAULTS, max_message_bytes),
                "transactional.id": transactional_id,
                "transaction.timeout.ms": transaction_timeout_ms,
                # librdkafka insists that a record cannot outlive the transaction that carries it.
                "delivery.timeout.ms": min(PRODUCER_DEFAULTS["delivery.timeout.ms"], transaction_timeout_ms),
            },
        )
        self._config = config
        self._connection = connection
        self._id = transactional_id
        self._producer = self._new_producer()
        self._ready = False
        self._open = False
        self._refusals = Refusals()  # records librdkafka refused to queue in the open transaction

    def max_message_bytes(self) -> int | None:
        return message_limit(self._config)

    def _new_producer(self) -> Producer:
        try:
            return Producer(self._config)
        except KafkaException as error:
            raise InvalidConfiguration(f"invalid producer configuration: {error.args[0].str()}") from None

    def _replace_producer(self, why: str) -> TransactionAborted:
        """A fresh producer with the same transactional id fences the old one; the broker aborts its transaction."""
        log.warning("%s; replacing the transactional producer", why)
        self._producer = self._new_producer()  # the old one is dropped (or left to its stuck daemon thread)
        self._ready = False
        self._open = False
        return TransactionAborted(f"{why}; producer replaced")

    def _replace_wedged_producer(self, hung: Hung) -> TransactionAborted:
        return self._replace_producer(f"{hung} (librdkafka #5456)")

    def _failure(self, exception: KafkaException) -> Exception:
        error: KafkaError = exception.args[0]
        if is_not_authorized(error):
            resources = {"transactional-id": self._id}
            return translate(error, self.errors, operation="Write", resources=resources, connection=self._connection)
        if error.fatal():
            if error.code() in _FENCED:
                return FatalBrokerError(f"another instance took over transactional id {self._id!r}: {error.str()}")
            # Fatal for this producer object only (e.g. INVALID_TXN_STATE after an outage): start a new one.
            return self._replace_producer(f"fatal producer error: {error.str()}")
        if error.code() in OWNERSHIP_LOST:
            return CommitFailed(error.str())
        if is_unreachable(error) and not error.txn_requires_abort():
            self._producer.poll(0)  # serves the error callback, which knows a refused login or TLS handshake
            return self.errors.unavailable() if self.errors.problem is not None else BrokerUnavailable(error.str())
        return TransactionAborted(error.str())

    def prepare(self) -> None:
        if self._ready:
            return
        try:
            _guarded(self._producer.init_transactions, _TIMEOUT_S)  # fences any earlier instance with our id
        except KafkaException as exception:
            raise self._failure(exception) from None
        except Hung as hung:
            raise self._replace_wedged_producer(hung) from None
        self._ready = True

    def begin(self) -> None:
        self.prepare()
        try:
            self._producer.begin_transaction()
            self._open = True
            self._refusals.start()
        except KafkaException as exception:
            raise self._failure(exception) from None
        except Hung as hung:
            raise self._replace_wedged_producer(hung) from None

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        try:
            produce(self._producer, topic, key, value, headers, on_delivery, self._refusals)
        except KafkaException as exception:
            # e.g. _STATE: an earlier failure left the transaction needing an abort before anything else.
            raise self._failure(exception) from None

    def poll(self, timeout_s: float) -> None:
        if self._refusals:
            self._refusals.serve()
            timeout_s = 0.0  # the caller has callbacks to act on now
        self._producer.poll(timeout_s)

    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        if self._refusals.since_start:
            # Committing would commit the offsets of records that are not in the transaction: abort it,
            # and let the callbacks say which records the next attempt must dead-letter.
            refused = self._refusals.since_start
            self._refusals.serve()
            raise TransactionAborted(f"{refused} record(s) of the transaction were refused by the producer")
        partitions = [KafkaTopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            _guarded(self._producer.send_offsets_to_transaction, partitions, group_metadata, _TIMEOUT_S)
        except KafkaException as exception:
            raise self._failure(exception) from None
        except Hung as hung:
            raise self._replace_wedged_producer(hung) from None
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                _guarded(self._producer.commit_transaction, _TIMEOUT_S)
                self._open = False
                return
            except Hung as hung:
                raise self._replace_wedged_producer(hung) from None
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.retriable() and not error.txn_requires_abort() and attempt < _COMMIT_ATTEMPTS:
                    continue  # the commit's outcome is unknown: asking again is the documented remedy
                raise self._failure(exception) from None

    def abort(self) -> None:
        """Abort, serving delivery reports meanwhile; a producer that cannot abort is replaced.

        librdkafka's abort waits until every queued record has had its delivery report served, and
        only ``poll`` serves them. Aborting without polling timed out with records remaining, and
        left the producer refusing everything ("abort_transaction already in progress") for good.
        """
        self._refusals.serve()  # what the aborted attempt could not even queue: the pipeline judges it
        if not self._open:
            return
        self._open = False
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            self._producer.poll(0)  # the reports run our callbacks, on this thread, as the port promises
            try:
                _guarded(self._producer.abort_transaction, _ABORT_STEP_S)
                return
            except KafkaException as exception:
                error: KafkaError = exception.args[0]
                if error.fatal() or not error.retriable() or time.monotonic() >= deadline:
                    if error.fatal() and error.code() in _FENCED:
                        raise self._failure(exception) from None
                    raise self._replace_producer(f"abort failed: {error.str()}") from None
            except Hung as hung:
                raise self._replace_wedged_producer(hung) from None

    def close(self) -> None:
        """Never raises: closing must not mask the error that made us close."""
        if self.errors.fatal is not None:
            return  # a producer in a fatal state can neither abort nor flush; the broker aborts what is open
        try:
            if self._open:
                self._producer.abort_transaction(5.0)
            self._producer.flush(5.0)
        except Exception as error:  # noqa: BLE001 - best effort on the way out, whatever the binding raises
            log.warning("transactional producer closed uncleanly (the broker aborts what is open): %s", error)
