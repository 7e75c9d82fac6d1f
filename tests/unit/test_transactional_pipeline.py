"""The exactly-once pipeline on the in-memory broker's transactions."""

import json
import random
import threading
from collections.abc import Mapping
from typing import Any

from adapters.generator import LoginGenerator
from adapters.memory import InMemoryBroker, InMemorySource, InMemoryTransactionalSink
from application import dlq_headers
from application.errors import SinkFull, TransactionAborted
from application.exactly_once import ExactlyOncePipeline
from application.messages import DeliveryError, Headers, TopicPartition, header_value
from application.ports import DeliveryCallback, Metrics
from application.retry import RetryPolicy
from application.settings import PipelineSettings
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock, StopAfterRetries

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
GOOD = {"user_id": "u", "app_version": "2.3.0", "device_type": "iOS"}


def make(
    broker: InMemoryBroker, metrics: Metrics | None = None, **changes: Any
) -> tuple[ExactlyOncePipeline, InMemoryTransactionalSink]:
    settings = PipelineSettings(
        **{"poll_timeout_s": 0.01, "transaction_size": 100, "retry": RetryPolicy(2, 0.001, 0.002), **changes}
    )
    sink = InMemoryTransactionalSink(broker)
    pipeline = ExactlyOncePipeline(
        InMemorySource(broker, "g"), sink, LoginEventProcessor(), settings, clock=broker.clock, metrics=metrics
    )
    return pipeline, sink


def broker_with(count: int, partitions: int = 2) -> InMemoryBroker:
    """A broker whose clients, and every pipeline made with ``make``, run on one fake clock."""
    broker = InMemoryBroker(default_partitions=partitions, clock=FakeClock())
    for topic in (IN, OUT, DLQ):
        broker.create_topic(topic, partitions)
    for record in LoginGenerator(seed=5).records(count):
        broker.append(IN, None, record.value)
    return broker


def test_every_record_lands_exactly_once_in_whole_transactions() -> None:
    broker = broker_with(1000)
    pipeline, sink = make(broker)
    stats = pipeline.run(idle_timeout_s=0.05)
    assert stats.consumed == 1000 == len(broker.records(OUT)) + len(broker.records(DLQ))
    assert sink.committed_transactions == pipeline.transactions >= 10  # at most 100 records each
    assert {broker.committed("g", TopicPartition(IN, p)) for p in range(2)} == {
        broker.end_offset(TopicPartition(IN, p)) for p in range(2)
    }


def test_an_aborted_transaction_publishes_nothing_and_is_retried_whole() -> None:
    broker = broker_with(50, partitions=1)
    broker.fail_publishes(OUT, count=1)  # the first attempt of the first batch fails
    pipeline, sink = make(broker)
    pipeline.run(idle_timeout_s=0.05)
    assert sink.aborted_transactions == 1
    values = [r.value for r in broker.records(OUT)] + [r.value for r in broker.records(DLQ)]
    assert len(values) == 50 == len(set(values))  # the retried batch did not double anything


def test_a_record_the_output_keeps_refusing_is_dead_lettered_as_publish_failed() -> None:
    broker = broker_with(0, partitions=1)
    broker.append(IN, b"k", json.dumps(GOOD).encode())
    broker.fail_publishes(OUT)  # forever
    pipeline, sink = make(broker)
    stats = pipeline.run(idle_timeout_s=0.05)
    assert stats.dead_lettered == {"publish_failed": 1}
    [letter] = broker.records(DLQ)
    assert (letter.key, letter.value) == (b"k", json.dumps(GOOD).encode())
    assert header_value(letter.headers, dlq_headers.REASON) == b"publish_failed"
    assert sink.aborted_transactions == 3  # the first try and RETRY_LIMIT=2 retries
    assert broker.committed("g", TopicPartition(IN, 0)) == 1


def test_stopping_while_the_dlq_refuses_commits_nothing_and_loses_nothing() -> None:
    broker = broker_with(0, partitions=1)
    broker.append(IN, None, b"broken")
    broker.append(IN, None, json.dumps(GOOD).encode())
    broker.fail_publishes(DLQ)
    stop = threading.Event()
    pipeline, sink = make(broker, StopAfterRetries(stop, 5))
    pipeline.run(stop)
    assert sink.aborted_transactions >= 5  # the DLQ kept refusing, and the batch was retried, not dropped
    assert broker.records(OUT) == [] and broker.records(DLQ) == []
    assert broker.committed("g", TopicPartition(IN, 0)) is None

    broker.clear_failures()
    pipeline, _ = make(broker)
    pipeline.run(idle_timeout_s=0.05)
    assert [r.value for r in broker.records(DLQ)] == [b"broken"]
    assert len(broker.records(OUT)) == 1


def test_max_messages_and_restart_resume_after_the_committed_transaction() -> None:
    broker = broker_with(300, partitions=1)
    first, _ = make(broker, transaction_size=40)
    assert first.run(max_messages=120).consumed == 120
    assert broker.committed("g", TopicPartition(IN, 0)) == 120
    second, _ = make(broker, transaction_size=40)
    assert second.run(idle_timeout_s=0.05).consumed == 180
    assert len(broker.records(OUT)) + len(broker.records(DLQ)) == 300


def test_the_transactional_id_is_claimed_before_the_first_poll() -> None:
    """A crashed predecessor's open transaction must be fenced at start, not once records arrive."""
    broker = broker_with(0, partitions=1)
    pipeline, sink = make(broker)
    order: list[str] = []
    prepare, subscribe = sink.prepare, pipeline._source.subscribe

    def recorded_prepare() -> None:
        order.append("prepare")
        prepare()

    def recorded_subscribe(*args: Any) -> None:
        order.append("subscribe")
        subscribe(*args)

    sink.prepare = recorded_prepare  # type: ignore[method-assign]
    pipeline._source.subscribe = recorded_subscribe  # type: ignore[method-assign,assignment]
    pipeline.run(idle_timeout_s=0.05)
    assert order == ["prepare", "subscribe"]
    assert sink.committed_transactions == 0  # no record came, yet the id was claimed


def test_a_commit_refused_because_the_group_moved_on_rewinds_and_reads_the_batch_again() -> None:
    """CommitFailed (as the real sinks raise it) takes the rewind branch: nothing lost, nothing doubled."""
    broker = broker_with(30, partitions=1)
    pipeline, sink = make(broker)
    group_metadata = pipeline._source.group_metadata
    calls = 0

    def stale_once() -> object:
        nonlocal calls
        calls += 1
        return ("g", "a-member-that-left") if calls == 1 else group_metadata()

    pipeline._source.group_metadata = stale_once  # type: ignore[method-assign]
    rewinds: list[dict[TopicPartition, int]] = []
    rewind = pipeline._source.rewind

    def recorded_rewind(offsets: Mapping[TopicPartition, int]) -> None:
        rewinds.append(dict(offsets))
        rewind(offsets)

    pipeline._source.rewind = recorded_rewind  # type: ignore[method-assign]
    stats = pipeline.run(idle_timeout_s=0.05)
    assert rewinds == [{TopicPartition(IN, 0): 0}]  # the refused batch is read again from its first record
    assert sink.aborted_transactions == 1 and sink.committed_transactions >= 1
    assert stats.consumed == 30  # the rewound batch is counted once, when it is processed
    values = [r.value for r in broker.records(OUT)] + [r.value for r in broker.records(DLQ)]
    assert len(values) == 30 == len(set(values))
    assert broker.committed("g", TopicPartition(IN, 0)) == 30


class RefusesOneOutputPerAttempt(InMemoryTransactionalSink):
    """An output topic that refuses every record, one per transaction: the rest of it is swept away as
    collateral, as kafka-python reports a transaction with a refused record."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker)
        self._outputs: list[DeliveryCallback] = []

    def begin(self) -> None:
        super().begin()
        self._outputs = []

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if topic == OUT:
            self._outputs.append(on_delivery)
        else:
            super().publish(topic, key, value, headers, on_delivery)

    def commit(self, offsets: Mapping[TopicPartition, int], group_metadata: object) -> None:
        if self._outputs:
            first, *rest = self._outputs
            first(DeliveryError("record too large for the output", retriable=False))
            for callback in rest:
                callback(DeliveryError("aborted with a refused record", collateral=True))
            raise TransactionAborted("a record of the transaction was refused")
        super().commit(offsets, group_metadata)


class Ceilings(random.Random):
    """Jitter that always waits the longest allowed, and remembers each backoff's ceiling."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append(b)
        return b


def test_an_attempt_that_dead_letters_records_starts_the_backoff_again() -> None:
    """One record dead-lettered per attempt is progress: each wait stays at the base instead of growing."""
    records, base = 50, 0.1
    broker = broker_with(0, partitions=1)
    for _ in range(records):
        broker.append(IN, None, json.dumps(GOOD).encode())
    settings = PipelineSettings(poll_timeout_s=0.01, transaction_size=records, retry=RetryPolicy(5, base, 10.0))
    sink, rng = RefusesOneOutputPerAttempt(broker), Ceilings()
    source = InMemorySource(broker, "g")
    pipeline = ExactlyOncePipeline(source, sink, LoginEventProcessor(), settings, clock=broker.clock, rng=rng)
    started = broker.clock.monotonic()
    stats = pipeline.run(max_messages=records)
    assert rng.asked == [base] * records  # growing, they would have reached the 10 s ceiling at the 8th attempt
    assert broker.clock.monotonic() - started < records * base + 1.0
    assert sink.aborted_transactions == records  # one attempt per refused record, then the commit
    assert stats.dead_lettered == {"publish_failed": records}
    assert len(broker.records(DLQ)) == records and broker.records(OUT) == []
    assert broker.committed("g", TopicPartition(IN, 0)) == records


def test_attempts_without_progress_wait_longer_each_time() -> None:
    """A transient refusal that changes nothing still backs off exponentially."""
    broker = broker_with(0, partitions=1)
    broker.append(IN, None, json.dumps(GOOD).encode())
    broker.fail_publishes(OUT, count=4)  # the first four attempts fail, the fifth goes through
    settings = PipelineSettings(poll_timeout_s=0.01, retry=RetryPolicy(5, 1.0, 100.0))
    sink, rng = InMemoryTransactionalSink(broker), Ceilings()
    source = InMemorySource(broker, "g")
    pipeline = ExactlyOncePipeline(source, sink, LoginEventProcessor(), settings, clock=broker.clock, rng=rng)
    pipeline.run(max_messages=1)
    assert rng.asked == [1.0, 2.0, 4.0, 8.0]
    assert sink.aborted_transactions == 4 and len(broker.records(OUT)) == 1


class RoomOnlyAfterPoll(InMemoryTransactionalSink):
    """A queue with room for one record between two polls: each publish after the first waits for a poll."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(broker)
        self.polls = 0
        self._room = True

    def publish(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: DeliveryCallback
    ) -> None:
        if not self._room:
            raise SinkFull("queue full")
        self._room = False
        super().publish(topic, key, value, headers, on_delivery)

    def poll(self, timeout_s: float) -> None:
        self.polls += 1
        self._room = True
        super().poll(timeout_s)


def test_a_full_transactional_queue_is_waited_out_by_polling_the_sink() -> None:
    broker = broker_with(30, partitions=1)
    sink = RoomOnlyAfterPoll(broker)
    settings = PipelineSettings(poll_timeout_s=0.01, transaction_size=10)
    pipeline = ExactlyOncePipeline(
        InMemorySource(broker, "g"), sink, LoginEventProcessor(), settings, clock=broker.clock
    )
    stats = pipeline.run(max_messages=30)
    assert stats.consumed == 30 == len(broker.records(OUT)) + len(broker.records(DLQ))
    assert sink.polls == 30 - 1 and sink.committed_transactions == 3
