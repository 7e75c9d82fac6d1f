"""The embedded broker's retention, its fed topics and its producer's batched delivery."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from adapters.memory import InMemoryBroker, InMemorySink, InMemorySource
from application.messages import DeliveryError, TopicPartition
from tests.fakes import FakeClock

TOPIC = "t"


class Listener:
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None: ...


def broker(partitions: int = 1) -> InMemoryBroker:
    memory = InMemoryBroker(partitions, clock=FakeClock())
    memory.create_topic(TOPIC)
    return memory


def test_retention_drops_the_oldest_records_and_offsets_keep_counting() -> None:
    memory = broker()
    memory.retain(TOPIC, 10)
    for number in range(100):
        memory.append(TOPIC, None, f"v{number}".encode())
    partition = TopicPartition(TOPIC, 0)
    kept = memory.records(TOPIC)
    assert 10 <= len(kept) <= 20  # trimmed to 10 once there are more than 20
    assert [r.offset for r in kept] == list(range(100 - len(kept), 100))
    assert [r.value for r in kept] == [f"v{n}".encode() for n in range(100 - len(kept), 100)]
    assert memory.end_offset(partition) == 100 and memory.start_offset(partition) == kept[0].offset
    # A reader behind the log start continues from it, as with auto.offset.reset=earliest.
    assert memory.read(partition, 0, 3) == kept[:3]


def test_without_retention_everything_is_kept() -> None:
    memory = broker()
    for _ in range(1000):
        memory.append(TOPIC, None, b"x")
    assert len(memory.records(TOPIC)) == 1000 and memory.start_offset(TopicPartition(TOPIC, 0)) == 0


def test_retention_is_per_topic() -> None:
    memory = broker()
    memory.create_topic("other")
    memory.retain(TOPIC, 1)
    for _ in range(50):
        memory.append(TOPIC, None, b"x")
        memory.append("other", None, b"y")
    assert len(memory.records(TOPIC)) <= 2 and len(memory.records("other")) == 50
    with pytest.raises(ValueError, match="at least 1"):
        memory.retain(TOPIC, 0)


def test_a_fed_topic_is_written_as_it_is_read_and_stays_small() -> None:
    memory = broker(partitions=4)
    memory.retain(TOPIC, 30)
    pulled = 0

    def values() -> Iterator[tuple[bytes | None, bytes | None]]:
        nonlocal pulled
        for number in range(5000):
            pulled += 1
            yield None, str(number).encode()

    memory.feed(TOPIC, values(), ahead=10)
    assert pulled == 0 and memory.records(TOPIC) == []  # nothing generated before anyone reads
    source = InMemorySource(memory, "g")
    source.subscribe([TOPIC], Listener())
    seen: list[int] = []
    largest = 0
    while len(seen) < 5000:
        batch = source.poll_batch(25, 0.0)
        assert batch, f"stalled after {len(seen)} records"
        seen.extend(int(r.value or b"") for r in batch)
        largest = max(largest, len(memory.records(TOPIC)))
        assert pulled - len(seen) <= 4 * 10 * 2  # never more than two top-ups ahead of the reader
    assert sorted(seen) == list(range(5000))  # every record exactly once
    assert largest <= 4 * 60  # each partition at most twice its retention
    assert source.poll_batch(25, 0.0) == []  # exhausted: nothing more, and no error
    assert memory.feed_seconds(TOPIC) >= 0.0


def test_a_batch_of_publishes_is_stored_in_order_with_one_callback_each() -> None:
    memory = broker(partitions=2)
    sink = InMemorySink(memory)
    results: list[DeliveryError | None] = []
    for number in range(10):
        sink.publish(TOPIC, b"k", f"v{number}".encode(), (("h", b"1"),), results.append)
    sink.poll(0)
    assert results == [None] * 10
    stored = memory.records(TOPIC)
    assert [r.value for r in stored] == [f"v{n}".encode() for n in range(10)]  # one key: one partition, in order
    assert [r.offset for r in stored] == list(range(10)) and all(r.headers == (("h", b"1"),) for r in stored)


def test_an_injected_failure_still_fails_exactly_the_records_it_names() -> None:
    memory = broker()
    memory.fail_publishes(TOPIC, count=2)
    sink = InMemorySink(memory)
    results: list[DeliveryError | None] = []
    for number in range(5):
        sink.publish(TOPIC, None, f"v{number}".encode(), (), results.append)
    sink.poll(0)
    assert [r is None for r in results] == [False, False, True, True, True]
    assert [r.value for r in memory.records(TOPIC)] == [b"v2", b"v3", b"v4"]
