"""A crashed exactly-once instance leaves its transaction open: each source must say which partitions it blocks.

Until the broker aborts such a transaction (at its transaction timeout), a
read-committed member gets no committed offset for the partitions whose offsets
the transaction committed, so it reads nothing from them. The pipeline's idle
timeout must not read that silence as "drained" (a CI run once stopped a
survivor with half the input unread); ``MessageSource.unreadable`` is how it tells.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from application.messages import ConsumedRecord, TopicPartition
from tests.contract.kits import AdapterKit, ConfluentKit, KafkaPythonKit, Recorder

pytestmark = pytest.mark.integration

KITS = {"confluent": ConfluentKit, "kafka-python": KafkaPythonKit}
RECORDS = 10


def open_transaction_committing(bootstrap: str, topic: str, group: str, offset: int) -> Producer:
    """A transaction that commits ``offset`` for partition 0 as a member of ``group``, left open."""
    member = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    member.subscribe([topic])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), "the helper member never joined the group"
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{group}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.send_offsets_to_transaction([KafkaTopicPartition(topic, 0, offset)], member.consumer_group_metadata(), 30)
    member.close()  # as if it had crashed: its transaction stays open
    return producer


@pytest.mark.parametrize("client", list(KITS))
def test_partitions_held_by_an_open_transaction_are_reported_until_it_ends(kafka_bootstrap: str, client: str) -> None:
    kit: AdapterKit = KITS[client](kafka_bootstrap)
    topic = kit.topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(RECORDS):
        producer.produce(topic, f"record {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    group = f"held-{uuid.uuid4().hex[:8]}"
    transaction = open_transaction_committing(kafka_bootstrap, topic, group, offset=RECORDS // 2)

    source = kit.source(group)
    recorder = Recorder()
    source.subscribe([topic], recorder)
    records: list[ConsumedRecord] = []
    # Assigned, and a few seconds more: long enough to have read partition 0 if anything allowed it.
    deadline = time.monotonic() + 30
    looked_until = time.monotonic() + 5
    while (len(recorder.assigned) < 2 or time.monotonic() < looked_until) and time.monotonic() < deadline:
        records.extend(source.poll_batch(100, 0.2))
    held = TopicPartition(topic, 0)
    try:
        assert recorder.assigned == {held, TopicPartition(topic, 1)}
        assert not [r for r in records if r.partition == 0], "read past an offset the broker holds back"
        assert held in source.unreadable()

        transaction.abort_transaction(30)
        deadline = time.monotonic() + 60
        while source.unreadable() and time.monotonic() < deadline:
            records.extend(source.poll_batch(100, 0.5))
        assert source.unreadable() == []
        while len(records) < RECORDS and time.monotonic() < deadline:
            records.extend(source.poll_batch(100, 0.5))
        # The aborted commit never counted: partition 0 is read from its start.
        assert sorted(r.offset for r in records if r.partition == 0) == list(range(RECORDS))
    finally:
        source.close()
