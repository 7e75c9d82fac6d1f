"""The behaviour the pipeline relies on, checked identically for every broker adapter.

Runs against the in-memory broker always, and against a real Apache Kafka
broker for confluent-kafka and kafka-python. Where the in-memory broker
differed from Kafka, this suite is where it showed.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest

from application.errors import GroupInUse
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.ports import TopicSpec
from tests.contract.kits import AdapterKit, Recorder

POLL_S = 0.2
DEADLINE_S = 45.0


def publish(
    kit: AdapterKit, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> list[DeliveryError | None]:
    sink = kit.sink()
    results: list[DeliveryError | None] = []
    try:
        for key, value, headers in records:
            sink.publish(topic, key, value, headers, results.append)
        assert sink.flush(30.0)
    finally:
        sink.close()
    return results


def consume(
    kit: AdapterKit, topic: str, group: str, wanted: int, recorder: Recorder | None = None
) -> list[ConsumedRecord]:
    recorder = recorder or Recorder()
    source = kit.source(group)
    recorder.source = source
    source.subscribe([topic], recorder)
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(records) < wanted and time.monotonic() < deadline:
            batch = source.poll_batch(wanted - len(records), POLL_S)
            recorder.saw(batch)
            records.extend(batch)
        if recorder.positions:
            source.commit(dict(recorder.positions))
    finally:
        source.close()
    return records


def test_keys_headers_and_order_survive_across_partitions(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=3)
    sent = [
        (f"user-{n % 10}".encode(), f"value-{n}".encode(), [("trace", f"t{n}".encode()), ("n", b"")]) for n in range(60)
    ]
    sent.append((None, b"no key", []))
    assert publish(kit, topic, sent) == [None] * len(sent)

    received = kit.read_all(topic, len(sent))
    assert sorted(r.value or b"" for r in received) == sorted(v for _, v, _ in sent)
    by_value = {r.value: r for r in received}
    for key, value, headers in sent:
        record = by_value[value]
        assert record.key == key
        assert list(record.headers) == headers
        assert record.topic == topic
    partitions_of_key: dict[bytes | None, set[int]] = defaultdict(set)
    for record in received:
        partitions_of_key[record.key].add(record.partition)
    assert all(len(parts) == 1 for key, parts in partitions_of_key.items() if key is not None)
    assert len({r.partition for r in received}) > 1  # keys really spread over partitions
    for key in {k for k, _, _ in sent if k is not None}:
        offsets = [r.offset for r in received if r.key == key]
        values = [
            int((r.value or b"").split(b"-")[1])
            for r in sorted((r for r in received if r.key == key), key=lambda r: r.offset)
        ]
        assert values == sorted(values), "one key's records keep their publish order"
        assert len(offsets) == len(set(offsets))


def test_delivery_is_acknowledged_only_once_the_broker_has_the_record(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=1)
    sink = kit.sink()
    results: list[DeliveryError | None] = []
    try:
        sink.publish(topic, b"k", b"acknowledged", [], results.append)
        assert results == []  # never from inside publish: callbacks run from poll or flush
        assert sink.flush(30.0)
        assert results == [None]
    finally:
        sink.close()
    [record] = kit.read_all(topic, 1)
    assert (record.key, record.value, record.offset) == (b"k", b"acknowledged", 0)


def test_committed_offsets_survive_a_consumer_restart(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=1)
    publish(kit, topic, [(None, f"r{n}".encode(), []) for n in range(20)])
    group = f"restart-{uuid.uuid4().hex[:8]}"  # unique: a group left over from an earlier run has members
    first = kit.source(group)
    recorder = Recorder()
    first.subscribe([topic], recorder)
    seen: list[ConsumedRecord] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < 12 and time.monotonic() < deadline:
        seen.extend(first.poll_batch(12 - len(seen), POLL_S))
    assert len(seen) >= 12
    first.commit({TopicPartition(topic, 0): 7})  # pretend only the first 7 were finished
    recorder.positions.clear()  # and commit nothing more on the way out
    first.close()

    again = consume(kit, topic, group, wanted=13)
    assert [r.offset for r in again] == list(range(7, 20))  # exactly after the last commit, nothing skipped


def test_a_second_member_takes_over_partitions_without_loss(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=4)
    total = 400
    publish(kit, topic, [(f"k{n}".encode(), f"v{n}".encode(), []) for n in range(total)])
    group = f"rebalance-{uuid.uuid4().hex[:8]}"
    first, second = Recorder(), Recorder()
    source_a, source_b = kit.source(group), kit.source(group)
    first.source, second.source = source_a, source_b
    source_a.subscribe([topic], first)
    seen: dict[str, list[ConsumedRecord]] = {"a": [], "b": []}
    deadline = time.monotonic() + DEADLINE_S
    while not seen["a"] and time.monotonic() < deadline:  # the first member starts alone...
        batch = source_a.poll_batch(50, POLL_S)
        first.saw(batch)
        seen["a"].extend(batch)
    assert first.assigned == {TopicPartition(topic, p) for p in range(4)}
    source_b.subscribe([topic], second)  # ...then a second member joins mid-stream
    try:
        while len(seen["a"]) + len(seen["b"]) < total and time.monotonic() < deadline:
            for name, source, recorder in (("a", source_a, first), ("b", source_b, second)):
                batch = source.poll_batch(25, 0.1)
                recorder.saw(batch)
                seen[name].extend(batch)
        # Let a final rebalance settle, then check that partitions ended up shared.
        settle = time.monotonic() + 3.0
        while (not first.assigned or not second.assigned) and time.monotonic() < settle:
            for name, source, recorder in (("a", source_a, first), ("b", source_b, second)):
                batch = source.poll_batch(25, 0.1)
                recorder.saw(batch)
                seen[name].extend(batch)
        final_a, final_b = set(first.assigned), set(second.assigned)
    finally:
        source_a.close()
        source_b.close()
    values = [r.value for r in seen["a"] + seen["b"]]
    assert set(values) == {f"v{n}".encode() for n in range(total)}, "no record lost"
    assert len(values) == total, "an orderly rebalance with commit-on-revoke re-delivers nothing"
    assert final_a and final_b
    assert not final_a & final_b
    assert final_a | final_b == {TopicPartition(topic, p) for p in range(4)}
    assert any(event == "revoked" for event, _ in first.history)


def test_paused_partitions_deliver_nothing_until_resumed(kit: AdapterKit) -> None:
    topic = kit.topic(partitions=1)
    publish(kit, topic, [(None, b"first", [])])
    source = kit.source(f"pause-{uuid.uuid4().hex[:8]}")
    recorder = Recorder()
    source.subscribe([topic], recorder)
    try:
        got: list[ConsumedRecord] = []
        deadline = time.monotonic() + DEADLINE_S
        while not got and time.monotonic() < deadline:
            got = source.poll_batch(10, POLL_S)
        assert [r.value for r in got] == [b"first"]
        partition = TopicPartition(topic, 0)
        source.pause([partition])
        publish(kit, topic, [(None, b"second", [])])
        paused_until = time.monotonic() + 1.5
        while time.monotonic() < paused_until:
            assert source.poll_batch(10, POLL_S) == []
        source.resume([partition])
        got = []
        deadline = time.monotonic() + DEADLINE_S
        while not got and time.monotonic() < deadline:
            got = source.poll_batch(10, POLL_S)
        assert [r.value for r in got] == [b"second"]
    finally:
        source.close()


def test_a_poll_returns_what_has_arrived_without_waiting_for_a_full_batch(kit: AdapterKit) -> None:
    """The port's promise (at most ``timeout_s`` for the *first* record): light load is served at once."""
    topic = kit.topic(partitions=1)
    publish(kit, topic, [(None, b"warm-up", [])])
    source = kit.source(f"arrived-{uuid.uuid4().hex[:8]}")
    source.subscribe([topic], Recorder())
    try:
        got: list[ConsumedRecord] = []
        deadline = time.monotonic() + DEADLINE_S
        while not got and time.monotonic() < deadline:  # joined, assigned, fetching
            got = source.poll_batch(500, POLL_S)
        assert [r.value for r in got] == [b"warm-up"]
        publish(kit, topic, [(None, f"r{n}".encode(), []) for n in range(3)])
        started = time.monotonic()
        got = source.poll_batch(500, 20.0)  # far fewer than 500 arrive: the poll must not sit out the 20 s
        waited = time.monotonic() - started
        while len(got) < 3 and time.monotonic() < deadline:
            got += source.poll_batch(500, POLL_S)
        assert got and waited < 10.0, f"waited {waited:.1f}s for {len(got)} record(s)"
        assert [r.value for r in got] == [b"r0", b"r1", b"r2"]
    finally:
        source.close()


def test_ensure_topics_creates_once_and_reports_a_mismatch(kit: AdapterKit) -> None:
    name = kit.topic(partitions=2)
    admin = kit.admin()
    try:
        fresh = f"{name}-new"
        first = admin.ensure_topics([TopicSpec(fresh, 3, 1), TopicSpec(name, 2, 1)])
        assert [(r.name, r.status) for r in first] == [(fresh, "created"), (name, "exists")]
        again = admin.ensure_topics([TopicSpec(fresh, 3, 1), TopicSpec(name, 5, 1)])
        assert [(r.name, r.status) for r in again] == [(fresh, "exists"), (name, "mismatch")]
        assert "2" in again[1].detail and "5" in again[1].detail
    finally:
        admin.close()
    publish(kit, name, [(f"k{n}".encode(), b"x", []) for n in range(20)])
    assert {r.partition for r in kit.read_all(name, 20)} <= {0, 1}  # left with its 2 partitions


def test_other_groups_offsets_are_read_and_deleted_without_joining(kit: AdapterKit) -> None:
    topic, other = kit.topic(partitions=2), kit.topic(partitions=1)
    group, never = f"positions-{uuid.uuid4().hex[:8]}", f"never-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    member = kit.source(group)
    member.subscribe([topic, other], recorder)
    deadline = time.monotonic() + DEADLINE_S
    while len(recorder.assigned) < 3 and time.monotonic() < deadline:
        member.poll_batch(10, POLL_S)
    groups = kit.group_offsets()
    try:
        try:
            member.commit({TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 1, TopicPartition(other, 0): 7})
            found = groups.committed([group, never], topic)
            assert found == {group: {TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 1}, never: {}}
            with pytest.raises(GroupInUse, match=group):
                groups.delete_groups([group])  # its member is still there
        finally:
            member.close()
        groups.delete_groups([group, never])  # a group that never committed is no error
        assert groups.committed([group], topic) == {group: {}}
    finally:
        groups.close()
