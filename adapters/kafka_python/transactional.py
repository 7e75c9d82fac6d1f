"""A transactional kafka-python producer behind the TransactionalSink port (exactly-once mode).

Checked against Apache Kafka 4.4 with kafka-python 3.0.12: commit, abort,
offsets committed with the consumer's group metadata (KIP-447) and fencing of
an older instance all behave as in the Java client. Two defects of that
kafka-python shape this adapter:

* When the connection to the transaction coordinator fails just as a
  transactional request (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn) is sent,
  kafka-python drops the request, and ``send_offsets_to_transaction``,
  ``commit_transaction`` and ``abort_transaction``, which take no timeout, wait
  forever, even once the broker is back. Each runs on a helper thread and is
  given ``timeout_s``. A commit that does not return in time has an unknown
  outcome, so ``_settle`` finds it out: a fresh producer with the same
  ``transactional_id`` makes the broker finish the transaction (committed or
  aborted, never half), and the group's committed offsets say which. Only if
  that cannot be learnt within ``settle_timeout_s`` does FatalBrokerError ask
  for a restart, which settles it the same way.
* After an abort its state may be wrong (see ``abort``), so every abort
  retires the producer and the next ``begin`` starts a fresh one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import (
    AuthorizationError,
    InvalidProducerEpochError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    ProducerFencedError,
    SaslAuthenticationFailedError,
    UnsupportedVersionError,
)
from kafka.structs import OffsetAndMetadata

from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python.config import (
    OWNERSHIP_LOST,
    client_config,
    connection_problem,
    translate_error,
    unavailable,
)
from adapters.kafka_python.sink import (
    PRODUCER_DEFAULTS,
    Deliveries,
    close_producer,
    create_producer,
    message_limit,
    with_message_limit,
)
from adapters.watchdog import Hung, bounded
from application.errors import BrokerUnavailable, CommitFailed, FatalBrokerError, TransactionAborted
from application.messages import Headers, TopicPartition
from application.ports import DeliveryCallback, TransactionalSink

log = logging.getLogger(__name__)

T = TypeVar("T")

_FATAL = (ProducerFencedError, InvalidProducerEpochError, AuthorizationError, UnsupportedVersionError)
_UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError, NodeNotReadyError)
_ABORT_TIMEOUT_S = 10.0
_SETTLE_PAUSE_S = 1.0
# A transactional call this slow is waiting for a broker: say so then, not only once it gives up.
_SLOW_CALL_S = 5.0
_REQUEST_TIMEOUT_MS = 30_000  # kafka-python's default


class KafkaPythonTransactionalSink(TransactionalSink):
    """A stable ``transactional_id`` per instance lets a restart fence its crashed predecessor at once."""

    def __init__(
        self,
        connection: KafkaConnection,
        transactional_id: str,
        *,
        transaction_timeout_ms: int = 60_000,
        timeout_s: float = 30.0,
        flush_timeout_s: float = 10.0,
        settle_timeout_s: float = 120.0,
        slow_call_s: float = _SLOW_CALL_S,
        queue_capacity: int = 100_000,
        queue_bytes: int = 64 * 1024 * 1024,
        max_message_bytes: int | None = None,
    ) -> None:
        # A record cannot usefully outlive the transaction that carries it.
        delivery_timeout_ms = min(PRODUCER_DEFAULTS["delivery_timeout_ms"], transaction_timeout_ms)
        self._config = client_config(
            connection,
            "producer",
            {
                **with_message_limit(PRODUCER_DEFAULTS, max_message_bytes),
                "enable_idempotence": True,  # transactions need it; here a refused record only aborts them
                "max_in_flight_requests_per_connection": 5,
                "transactional_id": transactional_id,
                "transaction_timeout_ms": transaction_timeout_ms,
                "delivery_timeout_ms": delivery_timeout_ms,
                # kafka-python refuses a delivery timeout not above linger + request timeout, so a short
                # TRANSACTION_TIMEOUT_MS (under ~30 s) shortens the request timeout with it.
                "request_timeout_ms": min(
                    _REQUEST_TIMEOUT_MS, delivery_timeout_ms - PRODUCER_DEFAULTS["linger_ms"] - 1
                ),
                # Bounds init_transactions() (and a first send's wait for a topic's metadata).
                "max_block_ms": 10_000,
            },
            reserved=("transactional_id", "enable_idempotence"),
        )
        # To read the group's committed offsets when a commit's outcome must be found out (see _settle).
        self._reader_config = client_config(
            connection, "consumer", {"enable_auto_commit": False, "isolation_level": "read_committed"}
        )
        self._connection = connection
        self._transactional_id = transactional_id
        self._timeout_s = timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._settle_timeout_s = settle_timeout_s
        self._slow_call_s = slow_call_s
        self._capacity = (queue_capacity, queue_bytes)
        self._ready = False
        self._open = False
        self._producer: Any = create_producer(self._config)  # no I/O yet: a bad setting fails here, at start
        self._deliveries: Deliveries | None = Deliveries(self._producer, *self._capacity, transactional=True)

    def max_message_bytes(self) -> int | None:
        return message_limit(self._config)

    # -- errors ----------------------------------------------------------------------------------

    def _fatal_state(self) -> bool:
        manager = getattr(self._producer, "_transaction_manager", None)  # kafka-python internals, read only
        check = getattr(manager, "has_fatal_error", None)
        return bool(check()) if callable(check) else False

    def _failure(self, error: BaseException) -> Exception:
        if isinstance(error, (AuthorizationError, SaslAuthenticationFailedError)):
            resources = {"transactional-id": self._transactional_id}
            return translate_error(error, self._connection, operation="Write", resources=resources)
        if isinstance(error, _FATAL) or self._fatal_state():
            return FatalBrokerError(str(error))
        if isinstance(error, OWNERSHIP_LOST):
            return CommitFailed(str(error))
        if isinstance(error, _UNREACHABLE):
            return unavailable(error, self._connection.bootstrap_servers, self._connection)
        return TransactionAborted(str(error))

    def _bounded(self, what: str, call: Callable[[], T], timeout_s: float | None = None) -> T:
        """``call()`` given at most ``timeout_s`` (see the module docstring); reported once it waits ``slow_call_s``."""
        limit = self._timeout_s if timeout_s is None else timeout_s
        return bounded(what, call, limit, slow_call_s=self._slow_call_s, logger=log, thread_name=f"kafka-python-{what}")

    # -- TransactionalSink -----------------------------------------------------------------------

    def prepare(self) -> None:
        if self._producer is None:
            self._producer = create_producer(self._config)
            self._deliveries = Deliveries(self._producer, *self._capacity, transactional=True)
        if self._ready:
            return
        try:
            self._producer.init_transactions()  # fences any earlier instance with our id; max_block_ms bounds it
        except KafkaTimeoutError as error:
            # The broker did not answer in time; kafka-python may have dropped the request, so start afresh.
            self._discard()
            problem = connection_problem(self._connection)  # a refused login or TLS handshake, if it was one
            raise problem or BrokerUnavailable(f"broker unavailable: cannot initialise transactions: {error}") from None
        except KafkaError as error:
            raise self._failure(error) from None
        self._ready = True

    def begin(self) -> None:
        self.prepare()
        try:
            self._producer.begin_transaction()
            assert self._deliveries is not None
            self._deliveries.start()
        except KafkaTimeoutError as error:
            self._discard()  # as in prepare: start afresh
            problem = connection_problem(self._connection)
            raise problem or BrokerUnavailable(f"broker unavailable: cannot begin a transaction: {error}") from None
        except KafkaError as error:
            raise self._failure(error) from None
        self._open = True

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if self._deliveries is None or not self._open:
            raise RuntimeError("publish outside a transaction")
        self._deliveries.send(topic, key, value, headers, on_delivery)

    def poll(self, timeout_s: float) -> None:
        if self._deliveries is not None:
            self._deliveries.wait(timeout_s)  # completed records make room once their callbacks are served
            self._deliveries.serve()

    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        if self._deliveries is None or not self._open:
            raise RuntimeError("commit outside a transaction")
        deliveries = self._deliveries
        if not deliveries.flush(self._flush_timeout_s):  # nothing is committed yet: aborting is safe
            raise BrokerUnavailable(
                f"broker unavailable: {deliveries.pending} record(s) not acknowledged within {self._flush_timeout_s:g}s"
            )
        if deliveries.failures:
            raise TransactionAborted(f"{deliveries.failures} record(s) of the transaction were not delivered")
        payload = {
            KafkaTopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
            for tp, offset in offsets.items()
        }
        producer = self._producer
        try:
            self._bounded("send-offsets", lambda: producer.send_offsets_to_transaction(payload, group_metadata))
            self._bounded("commit", producer.commit_transaction)
        except Hung as error:
            self._settle(offsets, group_metadata, error)  # returns if it committed after all
        except KafkaError as error:
            raise self._failure(error) from None
        self._open = False

    def _settle(self, offsets: Mapping[TopicPartition, int], group_metadata: object, cause: Hung) -> None:
        """Find out how a transaction whose commit never returned ended: return if committed, else raise.

        A fresh producer's init_transactions first finishes it on the broker (commits it if the commit
        request got there, aborts it otherwise); the group's committed offsets then tell which it was.
        """
        log.warning("broker unavailable or unresponsive (%s): finding out whether the transaction committed", cause)
        self._open = False
        self._discard()
        group_id = getattr(group_metadata, "group_id", group_metadata)
        if not isinstance(group_id, str):
            raise FatalBrokerError(f"{cause}; no group id to check the outcome against")
        deadline = time.monotonic() + self._settle_timeout_s
        while True:
            try:
                self._producer = create_producer(self._config)
                self._deliveries = Deliveries(self._producer, *self._capacity, transactional=True)
                self._producer.init_transactions()
                self._ready = True
                committed = self._committed(group_id, offsets)
                break
            except KafkaError as error:
                self._discard()
                if time.monotonic() >= deadline:
                    raise FatalBrokerError(f"{cause}; its outcome is still unknown: {error}") from None
                time.sleep(_SETTLE_PAUSE_S)
        if all(committed.get(tp) == offset for tp, offset in offsets.items()):
            log.info("the transaction had committed")
            return
        raise TransactionAborted("the transaction whose commit never returned was aborted")

    def _committed(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets, stable ones only (read_committed asks the broker for those)."""
        reader = KafkaConsumer(**{**self._reader_config, "group_id": group_id})
        try:
            return {
                tp: reader.committed(KafkaTopicPartition(tp.topic, tp.partition), timeout_ms=10_000) for tp in offsets
            }
        finally:
            reader.close(autocommit=False, timeout_ms=1_000)

    def abort(self) -> None:
        """Abort, and start the next transaction on a fresh producer.

        After some aborts kafka-python's own state is wrong (a batch split, or a producer epoch bumped
        mid-transaction, leaves sequence numbers the broker refuses), so the producer is replaced.
        The new one's init_transactions also finishes this transaction on the broker, should the abort
        itself not get through, so a failed abort needs no more than a warning, unless we were fenced.
        """
        if not self._open:
            return
        self._open = False
        producer = self._producer
        failure: BaseException | None = None
        try:
            self._bounded("abort", producer.abort_transaction, timeout_s=min(self._timeout_s, _ABORT_TIMEOUT_S))
        except (KafkaError, Hung) as error:
            failure = error
        fenced = failure is not None and (isinstance(failure, _FATAL) or self._fatal_state())
        self._discard()
        if fenced:
            raise FatalBrokerError(str(failure))
        if failure is not None:
            log.warning("abort did not complete (the next transaction's producer aborts it): %s", failure)

    def close(self) -> None:
        try:
            self.abort()
        except FatalBrokerError as error:  # closing anyway
            log.warning("closing a fenced transactional producer: %s", error)
        finally:
            self._discard()

    def _discard(self) -> None:
        producer, self._producer, self._deliveries = self._producer, None, None
        self._ready = self._open = False
        if producer is not None:
            try:
                self._bounded("close", lambda: close_producer(producer), timeout_s=_ABORT_TIMEOUT_S)
            except (KafkaError, Hung) as error:
                log.warning("transactional producer close: %s", error)
