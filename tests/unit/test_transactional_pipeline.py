"""The exactly-once pipeline on the in-memory broker's transactions."""

import json
import threading
from collections.abc import Mapping
from typing import Any

from adapters.generator import LoginGenerator
from adapters.memory import InMemoryBroker, InMemorySource, InMemoryTransactionalSink
from application import dead_letter
from application.messages import TopicPartition, header_value
from application.ports import Metrics
from application.retry import RetryPolicy
from application.settings import PipelineSettings
from application.transactional import TransactionalPipeline
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock, StopAfterRetries

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
GOOD = {"user_id": "u", "app_version": "2.3.0", "device_type": "iOS"}


def make(
    broker: InMemoryBroker, metrics: Metrics | None = None, **changes: Any
) -> tuple[TransactionalPipeline, InMemoryTransactionalSink]:
    settings = PipelineSettings(
        **{"poll_timeout_s": 0.01, "transaction_size": 100, "retry": RetryPolicy(2, 0.001, 0.002), **changes}
    )
    sink = InMemoryTransactionalSink(broker)
    pipeline = TransactionalPipeline(
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
    assert header_value(letter.headers, dead_letter.REASON) == b"publish_failed"
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
