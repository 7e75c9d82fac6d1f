"""kafka-python exactly-once: calls waiting on an absent broker are reported; a discarded producer stops."""

import logging
import threading
from collections.abc import Iterator

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from adapters.kafka_connection import KafkaConnection
from adapters.kafka_python.sink import Deliveries, close_producer
from adapters.kafka_python.transactional import KafkaPythonTransactionalSink
from adapters.watchdog import Hung
from application.messages import DeliveryError


@pytest.fixture
def sink() -> Iterator[KafkaPythonTransactionalSink]:
    # No I/O until the first transactional call: nothing listens on port 1, and nothing needs to.
    created = KafkaPythonTransactionalSink(KafkaConnection("127.0.0.1:1"), "unit-test", timeout_s=2.0, slow_call_s=0.05)
    yield created
    created.close()


class _SetOnWarning(logging.Handler):
    """Sets ``event`` when the slow-call warning is logged: the moment the test waits for."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "broker unavailable or unresponsive" in record.getMessage():
            self._event.set()


def test_a_slow_call_is_reported_while_it_waits_then_its_result_returned(
    sink: KafkaPythonTransactionalSink, caplog: pytest.LogCaptureFixture
) -> None:
    warned = threading.Event()

    def commit() -> str:
        # The warning must appear while the call still waits: it is what lets the call return.
        return "committed" if warned.wait(5.0) else "returned without a warning"

    caplog.set_level(logging.INFO, logger="adapters.kafka_python.transactional")
    handler = _SetOnWarning(warned)
    logger = logging.getLogger("adapters.kafka_python.transactional")
    logger.addHandler(handler)
    try:
        assert sink._bounded("commit", commit) == "committed"
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("commit has waited 0.05s for Kafka (gives up after 2s)" in m for m in warnings)
    assert any(m.startswith("commit completed after") for m in infos)


def test_a_quick_call_logs_nothing(sink: KafkaPythonTransactionalSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="adapters.kafka_python.transactional")
    sink._slow_call_s = 1.0
    assert sink._bounded("commit", lambda: 42) == 42
    assert caplog.records == []


def test_a_call_that_never_returns_gives_up_at_the_timeout(
    sink: KafkaPythonTransactionalSink, caplog: pytest.LogCaptureFixture
) -> None:
    never = threading.Event()
    with pytest.raises(Hung, match=r"abort did not complete within 0\.2s"):
        sink._bounded("abort", lambda: never.wait(5.0), timeout_s=0.2)
    assert any("abort has waited" in r.getMessage() for r in caplog.records)
    never.set()


class _SenderStuckRetrying(threading.Thread):
    """Stands in for kafka-python's sender thread, retrying unsent records until force-closed."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._forced = threading.Event()

    def run(self) -> None:
        self._forced.wait(10.0)

    def force_close(self) -> None:
        self._forced.set()


class _ProducerWithUnsentRecords:
    """kafka-python 3.0.12's close with unsent records: its flush times out before any force-close."""

    def __init__(self) -> None:
        self._sender = _SenderStuckRetrying()
        self._sender.start()

    def close(self, timeout: float) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")


def test_closing_a_producer_with_unsent_records_stops_its_io_thread() -> None:
    producer = _ProducerWithUnsentRecords()
    close_producer(producer, timeout_s=1.0)
    assert not producer._sender.is_alive()


class _ProducerInAFailedTransaction:
    """kafka-python's send() once an earlier record failed the transaction: a bare KafkaError."""

    def send(self, topic: str, **record: object) -> None:
        raise KafkaError("Cannot perform send because at least one previous transactional or idempotent request")


class _ProducerRefusingTheRecord:
    def send(self, topic: str, **record: object) -> None:
        raise MessageSizeTooLargeError("The message is 2000000 bytes when serialized")


@pytest.mark.parametrize(
    ("producer", "collateral"), [(_ProducerInAFailedTransaction(), True), (_ProducerRefusingTheRecord(), False)]
)
def test_a_send_refused_for_the_producers_state_says_nothing_about_the_record(
    producer: object, collateral: bool
) -> None:
    deliveries = Deliveries(producer, capacity=10, capacity_bytes=10_000, transactional=True)
    outcomes: list[DeliveryError | None] = []
    deliveries.send("out", b"k", b"v", (), outcomes.append)
    deliveries.serve()
    [error] = outcomes
    assert error is not None and error.collateral is collateral


@pytest.mark.parametrize("transaction_timeout_ms", [1_000, 15_000, 60_000])
def test_a_short_transaction_timeout_is_a_valid_producer_configuration(transaction_timeout_ms: int) -> None:
    """kafka-python refuses delivery_timeout_ms <= linger_ms + request_timeout_ms, which TRANSACTION_TIMEOUT_MS
    under 30 s used to produce: the service exited with "invalid producer configuration" at start."""
    created = KafkaPythonTransactionalSink(
        KafkaConnection("127.0.0.1:1"), "unit-test", transaction_timeout_ms=transaction_timeout_ms
    )
    try:
        config = created._config
        assert config["delivery_timeout_ms"] == transaction_timeout_ms
        assert config["delivery_timeout_ms"] > config["linger_ms"] + config["request_timeout_ms"]
        assert config["request_timeout_ms"] == min(30_000, transaction_timeout_ms - config["linger_ms"] - 1)
    finally:
        created.close()
