"""A record the producer refuses when it is queued, for every sink, plain and transactional.

confluent-kafka raises from ``produce()`` and kafka-python from ``send()`` for a record larger than
the producer's own limit; the in-memory sinks refuse one larger than the topic's max.message.bytes.
Every sink must report it through the record's callback as a non-retriable DeliveryError with the
client's text, and raise nothing; a transaction holding it must not commit.
"""

from __future__ import annotations

import time
import uuid

import pytest

from application.errors import TransactionAborted
from application.messages import DeliveryError
from tests.contract.kits import AdapterKit

LIMIT = 1_000_000  # librdkafka's default message.max.bytes; kafka-python's max_request_size is 1 MiB
TOO_LARGE = b"x" * 1_100_000


def limited_topic(kit: AdapterKit) -> str:
    name = kit.topic(1, LIMIT)
    admin = kit.admin()
    try:
        assert admin.max_message_bytes([name, f"missing-{name}"]) == {name: LIMIT}
    finally:
        admin.close()
    return name


def test_a_record_the_producer_refuses_is_reported_through_its_callback(kit: AdapterKit) -> None:
    topic = limited_topic(kit)
    sink = kit.sink()
    outcomes: dict[str, DeliveryError | None] = {}
    try:
        sink.publish(topic, b"k", TOO_LARGE, [("h", b"v")], lambda error: outcomes.__setitem__("large", error))
        sink.publish(topic, b"k", b"small", (), lambda error: outcomes.__setitem__("small", error))
        assert sink.flush(30.0)
    finally:
        sink.close()
    refused = outcomes["large"]
    assert refused is not None and not refused.retriable and not refused.collateral
    assert refused.message, "the client's error text"
    assert outcomes["small"] is None, "the producer goes on with the next record"
    assert [r.value for r in kit.read_all(topic, 1)] == [b"small"]


@pytest.mark.parametrize("polled", [False, True], ids=["commit-at-once", "polled-first"])
def test_a_transaction_with_a_refused_record_does_not_commit(kit: AdapterKit, polled: bool) -> None:
    """Polled first, the sink serves the refusal then, as a MessageSink's poll would: the commit still fails."""
    topic = limited_topic(kit)
    sink = kit.transactional_sink(f"contract-{uuid.uuid4().hex[:8]}")
    outcomes: dict[str, DeliveryError | None] = {}
    try:
        sink.prepare()
        sink.begin()
        sink.publish(topic, b"k", b"small", (), lambda error: outcomes.__setitem__("small", error))
        sink.publish(topic, b"k", TOO_LARGE, (), lambda error: outcomes.__setitem__("large", error))
        deadline = time.monotonic() + 30.0
        while polled and "large" not in outcomes and time.monotonic() < deadline:
            sink.poll(0.1)
        assert not polled or "large" in outcomes, "served by poll, before any commit"
        with pytest.raises(TransactionAborted):
            sink.commit({}, ("contract-group", "member"))
        sink.abort()
    finally:
        sink.close()
    refused = outcomes["large"]
    assert refused is not None and not refused.retriable and not refused.collateral
    assert refused.message
    assert kit.read_all(topic, 0) == [], "nothing of the aborted transaction is visible"
