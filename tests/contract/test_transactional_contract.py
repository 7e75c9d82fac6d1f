"""The TransactionalSink contract (exactly-once mode), checked identically on every broker adapter.

A committed transaction makes its records and the input offsets it consumes visible together; an
aborted one neither; and a commit whose consumer no longer owns its partitions raises CommitFailed,
the error on which the exactly-once pipeline rewinds and reads the batch again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from application.errors import CommitFailed
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.ports import MessageSource, TransactionalSink
from tests.contract.kits import AdapterKit, Recorder
from tests.contract.test_adapter_contract import DEADLINE_S, POLL_S, publish


def _read(source: MessageSource, recorder: Recorder, wanted: int) -> list[ConsumedRecord]:
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < wanted and time.monotonic() < deadline:
        records.extend(source.poll_batch(wanted - len(records), POLL_S))
    assert len(records) == wanted and recorder.assigned
    return records


def _input(kit: AdapterKit, values: list[bytes]) -> tuple[str, str, MessageSource, list[ConsumedRecord]]:
    """A one-partition input topic holding ``values``, and a member of a fresh group that has read them."""
    topic = kit.topic(partitions=1)
    publish(kit, topic, [(None, value, []) for value in values])
    group = f"txn-{uuid.uuid4().hex[:8]}"
    source, recorder = kit.source(group), Recorder()
    source.subscribe([topic], recorder)
    return topic, group, source, _read(source, recorder, len(values))


def _committed(kit: AdapterKit, group: str, topic: str) -> dict[TopicPartition, int]:
    offsets = kit.group_offsets()
    try:
        return offsets.committed([group], topic).get(group, {})
    finally:
        offsets.close()


@contextmanager
def _transaction(
    kit: AdapterKit, output: str, records: list[ConsumedRecord]
) -> Iterator[tuple[TransactionalSink, list[DeliveryError | None]]]:
    """A prepared sink with a transaction open holding ``records`` for ``output``, and their delivery reports."""
    sink = kit.transactional_sink(f"contract-{uuid.uuid4().hex[:8]}")
    reports: list[DeliveryError | None] = []
    try:
        sink.prepare()
        sink.begin()
        for record in records:
            sink.publish(output, record.key, record.value, [("seen", b"1")], reports.append)
        yield sink, reports
    finally:
        sink.close()


def test_a_committed_transaction_makes_its_records_and_offsets_visible_together(kit: AdapterKit) -> None:
    topic, group, source, records = _input(kit, [b"a", b"b", b"c"])
    output = kit.topic(partitions=1)
    try:
        with _transaction(kit, output, records) as (sink, reports):
            sink.commit({TopicPartition(topic, 0): records[-1].offset + 1}, source.group_metadata())
    finally:
        source.close()
    assert reports == [None, None, None]  # each record reported delivered, once
    out = kit.read_all(output, 3)
    assert [(r.value, list(r.headers)) for r in out] == [(v, [("seen", b"1")]) for v in (b"a", b"b", b"c")]
    assert _committed(kit, group, topic) == {TopicPartition(topic, 0): 3}


def test_an_aborted_transaction_publishes_nothing_and_commits_no_offsets(kit: AdapterKit) -> None:
    topic, group, source, records = _input(kit, [b"first", b"second"])
    output = kit.topic(partitions=1)
    committed: list[DeliveryError | None] = []
    try:
        with _transaction(kit, output, records[1:]) as (sink, _):
            sink.abort()
            assert _committed(kit, group, topic) == {}
            sink.begin()  # the sink is usable again after an abort
            sink.publish(output, None, records[0].value, [], committed.append)
            sink.commit({TopicPartition(topic, 0): records[0].offset + 1}, source.group_metadata())
    finally:
        source.close()
    assert committed == [None]
    assert [r.value for r in kit.read_all(output, 1)] == [b"first"]  # a read_committed reader never sees b"second"
    assert _committed(kit, group, topic) == {TopicPartition(topic, 0): 1}


def test_a_commit_after_the_group_moved_on_raises_commit_failed_and_the_batch_is_read_again(kit: AdapterKit) -> None:
    topic, group, source, records = _input(kit, [b"x", b"y"])
    output = kit.topic(partitions=1)
    stale = source.group_metadata()
    source.close()  # the member leaves: its group metadata no longer owns the partition
    with _transaction(kit, output, records) as (sink, _):
        with pytest.raises(CommitFailed):
            sink.commit({TopicPartition(topic, 0): records[-1].offset + 1}, stale)
        sink.abort()
    # The records may have reached the log (the real clients report them delivered) but were aborted:
    # a read_committed reader never sees them.
    assert kit.read_all(output, 0) == []
    assert _committed(kit, group, topic) == {}
    # What the pipeline does next: the partition's next owner reads the whole batch again.
    again, recorder = kit.source(group), Recorder()
    again.subscribe([topic], recorder)
    try:
        assert [r.value for r in _read(again, recorder, 2)] == [b"x", b"y"]
    finally:
        again.close()


def test_rewind_reads_the_records_again_from_the_given_offset(kit: AdapterKit) -> None:
    topic, _, source, records = _input(kit, [b"r0", b"r1", b"r2"])
    try:
        source.rewind({TopicPartition(topic, 0): 1})
        recorder = Recorder()
        recorder.assigned.add(TopicPartition(topic, 0))
        assert [r.offset for r in _read(source, recorder, 2)] == [1, 2]
    finally:
        source.close()
    assert [r.offset for r in records] == [0, 1, 2]
