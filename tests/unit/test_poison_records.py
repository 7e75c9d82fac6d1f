"""Records too large for a topic, through the in-memory broker, whose sinks refuse them at publish time.

A Kafka client refuses a record larger than its producer's limit when it is queued, and the broker
refuses one larger than the topic's max.message.bytes in the delivery report: either way the record
takes one path. An output goes to the DLQ as ``publish_failed``; a dead letter the DLQ refuses stops
its own partition (nothing committed past it, the others flowing) until the DLQ takes it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from adapters.memory import (
    InMemoryAdmin,
    InMemoryBroker,
    InMemorySink,
    InMemorySource,
    InMemoryTransactionalSink,
)
from application import dlq_headers
from application.at_least_once import AtLeastOncePipeline
from application.exactly_once import ExactlyOncePipeline
from application.messages import CREATE_TIME, ConsumedRecord, TopicPartition, header_value
from application.ports import Metrics, TopicSpec
from application.retry import RetryPolicy
from application.routing import RecordRouter
from application.settings import PipelineSettings
from domain.outcomes import Outcome
from domain.processing import LoginEventProcessor
from entrypoints.commands.topics import HEADROOM_BYTES, ensure_topics
from entrypoints.config import load_settings
from tests.fakes import FakeClock

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
LIMIT = 1_000
GOOD = {"app_version": "2.3.0", "device_type": "iOS", "ip": "84.115.150.27", "locale": "RU"}
GUARANTEES = ["at-least-once", "exactly-once"]


def good(number: int) -> bytes:
    return json.dumps({**GOOD, "user_id": f"u{number}"}).encode()


BIG = json.dumps({**GOOD, "user_id": "big", "note": "x" * (3 * LIMIT)}).encode()  # valid, so headed for the output


class TickingClock(FakeClock):
    """Fake time that moves a little on every reading, so waits with a deadline always end."""

    def monotonic(self) -> float:
        self.advance(0.001)
        return self.mono


class StoppingSource(InMemorySource):
    """Moves the clock a second per poll and stops the run once ``until`` holds: no real waiting."""

    def __init__(self, broker: InMemoryBroker, clock: FakeClock, stop: threading.Event, until: Callable[[], bool]):
        super().__init__(broker, "g")
        self._clock, self._stop, self._until = clock, stop, until
        self.polls = 0

    def poll_batch(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        self.polls += 1
        self._clock.advance(1.0)
        if self._until() or self.polls > 2_000:
            self._stop.set()
        return super().poll_batch(max_records, 0.0)


class StallMetrics(Metrics):
    def __init__(self) -> None:
        self.stalled = 0

    def stalled_partitions(self, count: int) -> None:
        self.stalled = count


def make_broker(partitions: int = 2, *, dlq_limit: int | None = None) -> InMemoryBroker:
    broker = InMemoryBroker(default_partitions=partitions)
    broker.create_topic(IN, partitions)
    broker.create_topic(OUT, partitions, max_message_bytes=LIMIT)
    broker.create_topic(DLQ, partitions, max_message_bytes=dlq_limit)
    return broker


def settings(**changes: Any) -> PipelineSettings:
    base: dict[str, Any] = {
        "poll_timeout_s": 0.0,
        "commit_interval_s": 0.0,
        "retry": RetryPolicy(limit=2, base_backoff_s=0.001, max_backoff_s=0.002),
        "shutdown_timeout_s": 0.01,
        "transaction_size": 100,
        "consumer_group": "g",
    }
    return PipelineSettings(**{**base, **changes})


def pipeline_for(
    guarantee: str,
    broker: InMemoryBroker,
    source: InMemorySource | None = None,
    *,
    clock: FakeClock | None = None,
    metrics: Metrics | None = None,
    **changes: Any,
) -> AtLeastOncePipeline | ExactlyOncePipeline:
    source = source or InMemorySource(broker, "g")
    if guarantee == "exactly-once":
        return ExactlyOncePipeline(
            source, InMemoryTransactionalSink(broker), LoginEventProcessor(), settings(**changes),
            clock=clock, metrics=metrics,
        )  # fmt: skip
    return AtLeastOncePipeline(
        source, InMemorySink(broker), LoginEventProcessor(), settings(**changes), clock=clock, metrics=metrics
    )


def committed(broker: InMemoryBroker, partition: int) -> int | None:
    return broker.committed("g", TopicPartition(IN, partition))


def users(broker: InMemoryBroker) -> list[str]:
    return [json.loads(r.value or b"")["user_id"] for r in broker.records(OUT)]


def end(broker: InMemoryBroker, partition: int) -> int:
    return broker.end_offset(TopicPartition(IN, partition))


# -- the memory sinks refuse, at publish time, what the topic cannot take ----------------------------------


@pytest.mark.parametrize("transactional", [False, True])
def test_the_memory_sinks_refuse_a_record_too_large_for_its_topic_through_its_callback(transactional: bool) -> None:
    broker = make_broker()
    outcomes: list[Any] = []
    if transactional:
        sink = InMemoryTransactionalSink(broker)
        sink.begin()
        sink.publish(OUT, None, BIG, (), outcomes.append)  # never raises for the record
        assert outcomes == []  # reported later, as the port promises, not from inside publish
        with pytest.raises(Exception, match="refused"):
            sink.commit({}, ("g", "m"))
        sink.abort()
    else:
        plain = InMemorySink(broker)
        plain.publish(OUT, None, BIG, (), outcomes.append)
        plain.publish(OUT, None, b"small", (), outcomes.append)
        assert outcomes == []
        assert plain.flush(1.0)
    [refusal, *rest] = outcomes
    assert refusal is not None and not refusal.retriable and "MSG_SIZE_TOO_LARGE" in str(refusal)
    assert rest == ([] if transactional else [None])
    assert [r.value for r in broker.records(OUT)] == ([] if transactional else [b"small"])


# -- an output the client refuses goes to the DLQ as publish_failed ------------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_an_output_too_large_for_its_topic_reaches_the_dlq_byte_for_byte(guarantee: str) -> None:
    broker = make_broker()
    for number in range(30):
        broker.append(IN, None, good(number), partition=number % 2)
        if number == 10:
            broker.append(IN, b"k", BIG, headers=[("trace", b"t1")], partition=0)
    stats = pipeline_for(guarantee, broker).run(idle_timeout_s=0.05)

    [letter] = broker.records(DLQ)
    assert letter.value == BIG and letter.key == b"k"
    assert header_value(letter.headers, dlq_headers.REASON) == dlq_headers.PUBLISH_FAILED.encode()
    assert b"MSG_SIZE_TOO_LARGE" in (header_value(letter.headers, dlq_headers.ERROR) or b"")
    assert header_value(letter.headers, "trace") == b"t1"
    assert sorted(users(broker)) == sorted(f"u{n}" for n in range(30))
    assert stats.dead_lettered == {dlq_headers.PUBLISH_FAILED: 1}
    assert [committed(broker, p) for p in (0, 1)] == [end(broker, 0), end(broker, 1)]


# -- a dead letter the DLQ refuses stops its partition, and only that one --------------------------------------


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_dead_letter_the_dlq_refuses_stops_only_its_partition_until_the_dlq_takes_it(
    guarantee: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker(dlq_limit=LIMIT)
    for number in range(10):
        broker.append(IN, None, good(number), partition=0)
    broker.append(IN, None, BIG, partition=0)  # offset 10 of partition 0
    for number in range(10, 20):
        broker.append(IN, None, good(number), partition=0)
    for number in range(20, 60):
        broker.append(IN, None, good(number), partition=1)

    clock, stop, metrics = TickingClock(), threading.Event(), StallMetrics()
    phase: dict[str, float] = {}
    pipeline: AtLeastOncePipeline | ExactlyOncePipeline

    seen: dict[str, Any] = {}

    def stopped_and_others_done() -> bool:
        if not (pipeline.health.partition_stalls and committed(broker, 1) == end(broker, 1)):
            return False
        if "since" not in phase:  # seen from inside the run: what /readyz and /metrics say meanwhile
            phase["since"] = clock.mono
            seen["readiness"], seen["stalled"] = pipeline.health.readiness(), metrics.stalled
        return clock.mono - phase["since"] >= 150  # stay stopped for two and a half (fake) minutes

    source = StoppingSource(broker, clock, stop, stopped_and_others_done)
    pipeline = pipeline_for(guarantee, broker, source, clock=clock, metrics=metrics, dlq_max_message_bytes=LIMIT)
    with caplog.at_level(logging.INFO):
        runner = threading.Thread(target=pipeline.run, args=(stop,))
        runner.start()
        runner.join(60)
    assert not runner.is_alive()

    assert committed(broker, 0) == 10, "nothing committed past the refused record"
    assert committed(broker, 1) == end(broker, 1), "the other partition kept flowing"
    assert broker.records(DLQ) == []  # never skipped, never dead-lettered somewhere half-way
    readiness = seen["readiness"]
    assert not readiness.ready
    assert "user-login[0]" in readiness.reason and "offset 10" in readiness.reason
    assert f"max.message.bytes {LIMIT} bytes" in readiness.reason and "Remedy" in readiness.reason
    assert seen["stalled"] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "stopped at offset 10" in r.getMessage()]
    assert 2 <= len(errors) <= 4, "one ERROR line at once, then at most one a minute"  # 150 s stopped
    assert str(len(BIG)) in errors[0].getMessage()

    # The remedy: the DLQ takes larger records now. The same group resumes and loses nothing.
    broker.message_limits.pop(DLQ)
    stop2 = threading.Event()
    again_source = StoppingSource(broker, clock, stop2, lambda: committed(broker, 0) == end(broker, 0))
    again = pipeline_for(guarantee, broker, again_source, clock=clock, metrics=metrics)
    again.run(stop2)
    [letter] = broker.records(DLQ)
    assert letter.value == BIG
    assert header_value(letter.headers, dlq_headers.REASON) == dlq_headers.PUBLISH_FAILED.encode()
    assert set(users(broker)) == {f"u{n}" for n in range(60)}
    assert not again.health.partition_stalls and metrics.stalled == 0


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_stopped_partition_resumes_by_itself_once_the_dlq_takes_the_record(guarantee: str) -> None:
    broker = make_broker(partitions=1, dlq_limit=LIMIT)
    broker.append(IN, None, BIG)
    broker.append(IN, None, good(1))
    clock, stop = TickingClock(), threading.Event()
    raised = {"done": False}
    pipeline: AtLeastOncePipeline | ExactlyOncePipeline

    def until() -> bool:
        if pipeline.health.partition_stalls and not raised["done"]:
            broker.message_limits.pop(DLQ)  # an operator raises the DLQ's max.message.bytes meanwhile
            raised["done"] = True
        return raised["done"] and committed(broker, 0) == 2

    source = StoppingSource(broker, clock, stop, until)
    pipeline = pipeline_for(guarantee, broker, source, clock=clock)
    pipeline.run(stop)
    assert raised["done"] and committed(broker, 0) == 2
    assert [r.value for r in broker.records(DLQ)] == [BIG]
    assert not pipeline.health.partition_stalls


# -- the context a dead letter carries -------------------------------------------------------------------------


def test_dead_letters_name_the_group_the_source_timestamp_and_the_exception_class() -> None:
    class Exploding(LoginEventProcessor):
        def process(self, raw: bytes | None, processed_at: str) -> Outcome:
            if raw == b'{"boom": 1}':
                raise KeyError("boom")
            return super().process(raw, processed_at)

    router = RecordRouter(Exploding(), settings(consumer_group="the-group"))
    record = ConsumedRecord(IN, 3, 7, b"k", b'{"boom": 1}', (), 1_700_000_000_123, CREATE_TIME)
    headers = router.route(record, "2026-01-01T00:00:00.000Z").headers
    assert header_value(headers, dlq_headers.REASON) == b"processing_error"
    assert header_value(headers, dlq_headers.CONSUMER_GROUP) == b"the-group"
    assert header_value(headers, dlq_headers.SOURCE_TIMESTAMP) == b"1700000000123"
    assert header_value(headers, dlq_headers.SOURCE_TIMESTAMP_TYPE) == b"CreateTime"
    assert header_value(headers, dlq_headers.EXCEPTION_CLASS) == b"builtins.KeyError"

    invalid = ConsumedRecord(IN, 0, 1, None, b"not json", (), None, None)
    headers = router.route(invalid, "2026-01-01T00:00:00.000Z").headers
    assert header_value(headers, dlq_headers.REASON) == b"malformed_json"
    assert header_value(headers, dlq_headers.EXCEPTION_CLASS) is None  # only for processing_error
    assert header_value(headers, dlq_headers.SOURCE_TIMESTAMP) is None  # none known


def test_the_memory_source_reports_the_timestamp_type() -> None:
    broker = make_broker()
    broker.append(IN, None, good(1), partition=0, timestamp_ms=5)
    [record] = broker.records(IN)
    assert (record.timestamp_ms, record.timestamp_type) == (5, CREATE_TIME)


# -- limits at start -----------------------------------------------------------------------------------------


def test_ensure_topics_gives_the_output_and_the_dlq_room_for_anything_the_input_holds() -> None:
    broker = InMemoryBroker()
    broker.create_topic("in", 2, max_message_bytes=4_194_304)
    admin = InMemoryAdmin(broker)
    config = load_settings({"INPUT_TOPIC": "in", "OUTPUT_TOPIC": "out", "DLQ_TOPIC": "dlq", "TOPIC_PARTITIONS": "2"})
    reports = ensure_topics(admin, config)
    assert [(r.name, r.status) for r in reports] == [("in", "exists"), ("out", "created"), ("dlq", "created")]
    limits = admin.max_message_bytes(["in", "out", "dlq", "missing"])
    assert limits == {"in": 4_194_304, "out": 4_194_304 + HEADROOM_BYTES, "dlq": 4_194_304 + HEADROOM_BYTES}
    assert admin.ensure_topics([TopicSpec("dlq", 2, 1, 1)])[0].status == "exists"  # never altered


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_dlq_smaller_than_the_input_topic_is_named_once_at_start(
    guarantee: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = make_broker()
    pipeline = pipeline_for(guarantee, broker, input_max_message_bytes=4_194_304, dlq_max_message_bytes=1_048_588)
    with caplog.at_level(logging.WARNING):
        pipeline.run(idle_timeout_s=0.01)
    warnings = [r.getMessage() for r in caplog.records if "max.message.bytes" in r.getMessage()]
    assert len(warnings) == 1
    assert "4194304" in warnings[0] and "1048588" in warnings[0] and DLQ in warnings[0]
