"""The at-least-once pipeline, driven through the in-memory broker adapters."""

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from adapters.generator import LoginGenerator
from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from application import dlq_headers
from application.at_least_once import AtLeastOncePipeline
from application.errors import BrokerUnavailable
from application.messages import TopicPartition, header_value
from application.ports import RebalanceListener
from application.retry import RetryPolicy
from application.settings import PipelineSettings
from domain.outcomes import Outcome
from domain.processing import LoginEventProcessor
from tests.fakes import FakeClock, StopAfterRetries

IN, OUT, DLQ = "user-login", "processed-user-login", "user-login-dlq"
GOOD = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "iOS", "ip": "84.115.150.27", "locale": "RU"}
FAST_RETRY = RetryPolicy(limit=2, base_backoff_s=0.001, max_backoff_s=0.005)


def settings(**changes: Any) -> PipelineSettings:
    base: dict[str, Any] = {
        "poll_timeout_s": 0.01,
        "commit_interval_s": 0.0,
        "retry": FAST_RETRY,
        "shutdown_timeout_s": 2.0,
    }
    return PipelineSettings(**{**base, **changes})


def make_broker(partitions: int = 2) -> InMemoryBroker:
    """A broker whose clients, and every pipeline made with ``make_pipeline``, run on one fake clock."""
    broker = InMemoryBroker(default_partitions=partitions, clock=FakeClock())
    for topic in (IN, OUT, DLQ):
        broker.create_topic(topic, partitions)
    return broker


def make_pipeline(
    broker: InMemoryBroker, group: str = "g", *, source: InMemorySource | None = None, **changes: Any
) -> AtLeastOncePipeline:
    return AtLeastOncePipeline(
        source or InMemorySource(broker, group),
        InMemorySink(broker),
        LoginEventProcessor(),
        changes.pop("s", None) or settings(**changes),
        clock=broker.clock,
        metrics=changes.pop("metrics", None),
    )


def committed(broker: InMemoryBroker, group: str = "g", partitions: int = 2) -> dict[int, int]:
    return {p: broker.committed(group, TopicPartition(IN, p)) or 0 for p in range(partitions)}


def end_offsets(broker: InMemoryBroker, partitions: int = 2) -> dict[int, int]:
    return {p: broker.end_offset(TopicPartition(IN, p)) for p in range(partitions)}


def test_routes_processed_and_rejected_records() -> None:
    broker = make_broker()
    broker.append(IN, b"given-key", json.dumps(GOOD).encode(), [("trace", b"t-1")])
    broker.append(IN, None, json.dumps({**GOOD, "user_id": "u-2"}).encode())
    broker.append(IN, b"k3", b"{not json", [("trace", b"t-3")])
    stats = make_pipeline(broker).run(idle_timeout_s=0.05)

    assert (stats.consumed, stats.processed, dict(stats.dead_lettered)) == (3, 2, {"malformed_json": 1})
    outputs = {record.key: record for record in broker.records(OUT)}
    assert set(outputs) == {b"given-key", b"u-2"}  # input key kept, else user_id
    published = json.loads(outputs[b"given-key"].value or b"")
    assert published["locale"] == "ru" and published["processed_at"].endswith("Z")
    assert header_value(outputs[b"given-key"].headers, "trace") == b"t-1"

    [letter] = broker.records(DLQ)
    assert (letter.key, letter.value) == (b"k3", b"{not json")
    headers = dict(letter.headers)
    assert headers["trace"] == b"t-3"
    assert headers[dlq_headers.REASON] == b"malformed_json"
    assert headers[dlq_headers.ERROR]
    assert headers[dlq_headers.SOURCE_TOPIC] == IN.encode()
    source = next(r for r in broker.records(IN) if r.value == b"{not json")
    assert headers[dlq_headers.SOURCE_PARTITION] == str(source.partition).encode()
    assert headers[dlq_headers.SOURCE_OFFSET] == str(source.offset).encode()
    assert headers[dlq_headers.FAILED_AT].decode().endswith("Z")
    assert committed(broker) == end_offsets(broker)


def test_every_generated_record_is_accounted_for_with_its_expected_reason() -> None:
    broker = make_broker(4)
    expected: Counter[str | None] = Counter()
    for record in LoginGenerator(seed=7).records(3000):
        broker.append(IN, record.key, record.value)
        expected[record.expected_reason] += 1
    stats = make_pipeline(broker).run(idle_timeout_s=0.05)
    assert stats.processed == expected[None] == len(broker.records(OUT))
    assert dict(stats.dead_lettered) == {reason: n for reason, n in expected.items() if reason}
    assert committed(broker, partitions=4) == end_offsets(broker, 4)


def test_transient_publish_failures_are_retried() -> None:
    broker = make_broker()
    broker.append(IN, None, json.dumps(GOOD).encode())
    broker.fail_publishes(OUT, count=2)
    stats = make_pipeline(broker).run(idle_timeout_s=0.1)
    assert stats.retries == 2
    assert len(broker.records(OUT)) == 1 and not broker.records(DLQ)


def test_exhausted_output_retries_go_to_the_dlq_as_publish_failed() -> None:
    broker = make_broker()
    broker.append(IN, b"k", json.dumps(GOOD).encode())
    broker.fail_publishes(OUT, message="output topic unavailable")
    stats = make_pipeline(broker).run(idle_timeout_s=0.1)
    assert stats.retries == FAST_RETRY.limit
    [letter] = broker.records(DLQ)
    assert (letter.key, letter.value) == (b"k", json.dumps(GOOD).encode())
    assert header_value(letter.headers, dlq_headers.REASON) == b"publish_failed"
    assert b"output topic unavailable" in (header_value(letter.headers, dlq_headers.ERROR) or b"")
    assert committed(broker) == end_offsets(broker)


def test_non_retriable_failures_are_dead_lettered_without_retrying() -> None:
    broker = make_broker()
    broker.append(IN, None, json.dumps(GOOD).encode())
    broker.fail_publishes(OUT, count=1, retriable=False, message="record too large")
    stats = make_pipeline(broker).run(idle_timeout_s=0.1)
    assert stats.retries == 0
    assert stats.dead_lettered == Counter({"publish_failed": 1})


def test_nothing_is_committed_past_a_record_the_dlq_refuses() -> None:
    broker = make_broker(1)
    for number in range(5):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode(), partition=0)
    broker.append(IN, None, b"broken", partition=0)  # offset 5 must go to the DLQ
    for number in range(6, 10):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode(), partition=0)
    broker.fail_publishes(DLQ)
    stop = threading.Event()
    pipeline = make_pipeline(broker, s=settings(shutdown_timeout_s=0.2), metrics=StopAfterRetries(stop, 5))
    pipeline.run(stop)
    assert pipeline.stats.retries >= 5  # the DLQ kept refusing, and the record was retried, not dropped
    assert broker.committed("g", TopicPartition(IN, 0)) == 5  # up to, not past, the refused record
    assert not broker.records(DLQ)

    broker.clear_failures()  # the DLQ recovers; a restart re-reads from offset 5 and loses nothing
    make_pipeline(broker).run(idle_timeout_s=0.1)
    assert [r.value for r in broker.records(DLQ)] == [b"broken"]
    assert broker.committed("g", TopicPartition(IN, 0)) == 10


def test_a_refusing_dlq_pauses_consumption() -> None:
    broker = make_broker(1)
    broker.append(IN, None, b"broken", partition=0)
    for number in range(50):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode(), partition=0)
    broker.fail_publishes(DLQ)
    stop = threading.Event()
    metrics = StopAfterRetries(stop, 20)
    pipeline = make_pipeline(broker, s=settings(batch_size=1, shutdown_timeout_s=0.1), metrics=metrics)
    pipeline.run(stop)
    assert 1 in metrics.paused
    assert pipeline.stats.consumed < 10  # it stopped fetching instead of running ahead of the stuck record


def test_a_processing_exception_dead_letters_only_that_record() -> None:
    class Exploding(LoginEventProcessor):
        def process(self, raw: bytes | None, processed_at: str) -> Outcome:
            if raw and b"explode" in raw:
                raise ZeroDivisionError("boom")
            return super().process(raw, processed_at)

    broker = make_broker(1)
    broker.append(IN, None, json.dumps({**GOOD, "note": "explode"}).encode())
    broker.append(IN, None, json.dumps(GOOD).encode())
    pipeline = AtLeastOncePipeline(
        InMemorySource(broker, "g"), InMemorySink(broker), Exploding(), settings(), clock=broker.clock
    )
    stats = pipeline.run(idle_timeout_s=0.05)
    assert stats.processed == 1
    [letter] = broker.records(DLQ)
    assert header_value(letter.headers, dlq_headers.REASON) == b"processing_error"
    assert header_value(letter.headers, dlq_headers.ERROR) == b"ZeroDivisionError: boom"


def test_max_messages_stops_after_that_many_are_done_and_committed() -> None:
    broker = make_broker(1)
    for number in range(100):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode())
    stats = make_pipeline(broker, batch_size=7).run(max_messages=30)
    assert stats.consumed == 30 and stats.finished == 30
    assert broker.committed("g", TopicPartition(IN, 0)) == 30
    assert make_pipeline(broker).run(idle_timeout_s=0.05).consumed == 70  # the rest, from the commit on


def test_a_full_producer_queue_pauses_and_still_delivers_everything() -> None:
    broker = make_broker()
    for number in range(500):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode())
    pipeline = AtLeastOncePipeline(
        InMemorySource(broker, "g"),
        InMemorySink(broker, queue_capacity=10),
        LoginEventProcessor(),
        settings(),
        clock=broker.clock,
    )
    stats = pipeline.run(idle_timeout_s=0.05)
    assert stats.processed == 500 == len(broker.records(OUT))


def test_in_flight_records_are_bounded() -> None:
    class SlowSink(InMemorySink):
        """Acknowledges at most 5 records per poll: the pipeline must wait rather than pile up."""

        peak = 0

        def poll(self, timeout_s: float) -> None:
            SlowSink.peak = max(SlowSink.peak, len(self._queue))
            kept = list(self._queue)[5:]
            for _ in range(len(kept)):
                self._queue.pop()
            super().poll(timeout_s)
            self._queue.extend(kept)

    broker = make_broker()
    for number in range(400):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode())
    pipeline = AtLeastOncePipeline(
        InMemorySource(broker, "g"),
        SlowSink(broker),
        LoginEventProcessor(),
        settings(max_in_flight=50, batch_size=20),
        clock=broker.clock,
    )
    stats = pipeline.run(idle_timeout_s=0.2)
    assert stats.processed == 400
    assert SlowSink.peak <= 50 + 20  # the limit, plus at most one batch taken before pausing


class Turns:
    """Lets one member at a time run from one poll to its next, in a fixed order.

    How the members interleave then depends on neither thread scheduling nor machine speed; with one
    fake clock shared by all of them, neither does anything they time.
    """

    def __init__(self, order: Sequence[str], *, head_start: int) -> None:
        self._order = list(order)  # members still running, in turn order
        self._turn = 0
        self._head_start = head_start  # polls the first member makes before passing the turn on
        self._changed = threading.Condition()

    def take(self, name: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._order[self._turn] == name, timeout=60):
                raise AssertionError(f"{name} never got its turn: {self._order[self._turn]} kept it")

    def pass_on(self, name: str) -> None:
        with self._changed:
            if self._head_start > 0:
                self._head_start -= 1
                return
            self._turn = (self._order.index(name) + 1) % len(self._order)
            self._changed.notify_all()

    def leave(self, name: str) -> None:
        with self._changed:
            index = self._order.index(name)
            self._order.remove(name)
            self._turn = index % len(self._order) if self._order else 0
            self._changed.notify_all()


class TurnTakingSource(InMemorySource):
    """A member that joins the group on its first turn, polls only on its turn, and leaves the rotation on close."""

    def __init__(self, broker: InMemoryBroker, group: str, name: str, turns: Turns) -> None:
        super().__init__(broker, group)
        self._name = name
        self._turns = turns

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._turns.take(self._name)
        super().subscribe(topics, listener)

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        self._turns.pass_on(self._name)
        self._turns.take(self._name)
        return super().poll_batch(max_records, timeout_s)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._turns.leave(self._name)


def test_two_members_share_the_partitions_without_loss_or_duplicates() -> None:
    broker = make_broker(4)
    for record in LoginGenerator(seed=3, invalid_ratio=0).records(4000):
        broker.append(IN, None, record.value)
    turns = Turns(["first", "second"], head_start=4)  # the first reads 4 batches alone, then the second joins
    members = [
        make_pipeline(broker, source=TurnTakingSource(broker, "g", name, turns), batch_size=50)
        for name in ("first", "second")
    ]
    failures: list[BaseException] = []

    def run(member: AtLeastOncePipeline) -> None:
        try:
            member.run(idle_timeout_s=0.3)
        except BaseException as error:  # noqa: BLE001 - reported below, on the test's thread
            failures.append(error)

    runners = [threading.Thread(target=run, args=(member,)) for member in members]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    assert not any(runner.is_alive() for runner in runners)
    assert not failures, failures
    users = [json.loads(r.value or b"")["user_id"] for r in broker.records(OUT)]
    assert len(users) == 4000 == len(set(users))
    first, second = members
    assert first.stats.processed > 200 and second.stats.processed > 0  # both owned partitions mid-stream
    assert first.stats.processed + second.stats.processed == 4000
    assert committed(broker, partitions=4) == end_offsets(broker, 4)


@pytest.mark.parametrize("partitions", [1, 3])
def test_restart_resumes_exactly_after_the_last_commit(partitions: int) -> None:
    broker = make_broker(partitions)
    for number in range(60):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u{number}"}).encode())
    make_pipeline(broker, batch_size=10).run(max_messages=25)
    make_pipeline(broker, batch_size=10).run(idle_timeout_s=0.05)
    users = [json.loads(r.value or b"")["user_id"] for r in broker.records(OUT)]
    assert sorted(users) == sorted(f"u{n}" for n in range(60))


class _OutageSource(InMemorySource):
    """Delivers the first batch, is unreachable for ``outage_s``, then polls empty once (a group rejoin)."""

    def __init__(self, broker: InMemoryBroker, group: str, outage_s: float) -> None:
        super().__init__(broker, group)
        self._outage_s = outage_s
        self._down_since: float | None = None
        self._rejoined = False

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        if self._down_since is None:
            self._down_since = self._clock.monotonic()
            return super().poll_batch(max_records, timeout_s)
        if self._clock.monotonic() - self._down_since < self._outage_s:
            raise BrokerUnavailable("cannot reach Kafka at memory: simulated outage")
        if not self._rejoined:
            self._rejoined = True
            return []
        return super().poll_batch(max_records, timeout_s)


def _run_until_idle(source_type: Callable[[InMemoryBroker], InMemorySource], idle_timeout_s: float) -> None:
    """100 valid records through a pipeline reading with ``source_type``: all must be done before it stops."""
    broker = make_broker()
    for n in range(100):
        broker.append(IN, None, json.dumps({**GOOD, "user_id": f"u-{n}"}).encode())
    pipeline = make_pipeline(broker, source=source_type(broker), batch_size=10)
    stats = pipeline.run(idle_timeout_s=idle_timeout_s)
    assert stats.consumed == 100
    assert committed(broker) == end_offsets(broker)


def test_an_outage_longer_than_the_idle_timeout_does_not_stop_the_run_early() -> None:
    _run_until_idle(lambda broker: _OutageSource(broker, "g", outage_s=0.4), idle_timeout_s=0.2)


class _HeldBackSource(InMemorySource):
    """Unreadable at the first ``held_checks`` idle checks (a pending transaction holds its offsets back).

    Records flow only after a check found it readable, as a fetch starts only once its offset is known:
    the loop must then give it a whole idle period, not stop at that very check.
    """

    def __init__(self, broker: InMemoryBroker, group: str, held_checks: int) -> None:
        super().__init__(broker, group)
        self._held_checks = held_checks
        self._readable = False

    def poll_batch(self, max_records: int, timeout_s: float) -> list[Any]:
        if not self._readable:
            super().poll_batch(0, 0.0)  # joins the group, delivers nothing
            self._clock.sleep(min(timeout_s, 0.01))
            return []
        return super().poll_batch(max_records, timeout_s)

    def unreadable(self) -> list[TopicPartition]:
        if self._held_checks:
            self._held_checks -= 1
            return self.assignment
        self._readable = True
        return []


def test_the_idle_timeout_waits_for_partitions_that_cannot_be_read_yet() -> None:
    _run_until_idle(lambda broker: _HeldBackSource(broker, "g", held_checks=2), idle_timeout_s=0.05)


def test_the_memory_adapters_wait_and_stamp_on_the_broker_clock() -> None:
    """Waiting an hour on a fake clock takes no real time: no adapter reads the system clock behind its back."""
    broker = make_broker(1)
    clock = broker.clock
    assert isinstance(clock, FakeClock)
    source, sink = InMemorySource(broker, "g"), InMemorySink(broker)
    source.subscribe([IN], make_pipeline(broker))
    started = clock.monotonic()
    assert source.poll_batch(10, timeout_s=3600.0) == []
    sink.poll(60.0)
    assert clock.monotonic() - started >= 3660.0
    sink.publish(IN, None, b"v", (), lambda error: None)
    assert sink.flush(1.0)
    [record] = source.poll_batch(10, timeout_s=0.0)
    assert record.timestamp_ms == int(clock.now() * 1000)
