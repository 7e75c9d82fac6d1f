"""The ceiling: what confluent-kafka and the broker allow in Python here, with no processing at all.

A raw consume -> produce -> commit loop. Records are copied, key and value
unchanged, to the output topic; nothing is parsed. The producer has the
project's own reliability settings (``PRODUCER_DEFAULTS``: acks=all,
idempotence, linger 2 ms, lz4), and an input offset is committed only once
every record of its batch, and of every batch before it, has been acknowledged
(delivery callbacks, so batches are pipelined rather than flushed one by one).

Configured like the service: KAFKA_BOOTSTRAP_SERVERS, INPUT_TOPIC,
OUTPUT_TOPIC, CONSUMER_GROUP. Stops on SIGTERM or SIGINT after flushing and
committing. Run: ``python -m bench.ceiling``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import deque
from types import FrameType
from typing import cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from adapters.confluent.sink import PRODUCER_DEFAULTS

BATCH = 1000
# consume() waits until BATCH records or this timeout: short, so that a light load is not held back for latency.
CONSUME_TIMEOUT_S = 0.01
COMMIT_EVERY_S = 0.1


class Batch:
    __slots__ = ("failed", "offsets", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.offsets: dict[int, int] = {}  # input partition -> next offset to commit
        self.failed: str | None = None

    def delivered(self, error: KafkaError | None, _message: Message) -> None:
        self.remaining -= 1
        if error is not None:
            self.failed = error.str()


class Ceiling:
    def __init__(self, bootstrap: str, input_topic: str, output_topic: str, group: str) -> None:
        self.input = input_topic
        self.output = output_topic
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "queued.max.messages.kbytes": 16_384,  # as the service's consumer
            }
        )
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS})
        self.pending: deque[Batch] = deque()
        self.acknowledged: dict[int, int] = {}  # offsets whose batches (and all before) are acknowledged
        self.committed: dict[int, int] = {}
        self.last_commit = 0.0
        self.stopping = False

    def on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self.drain()

    def settle(self) -> None:
        """Move fully acknowledged batches, oldest first, into the offsets to commit."""
        while self.pending and self.pending[0].remaining == 0:
            batch = self.pending.popleft()
            if batch.failed is not None:
                raise RuntimeError(f"delivery failed: {batch.failed}")
            self.acknowledged.update(batch.offsets)

    def commit(self, *, force: bool = False) -> None:
        if self.acknowledged == self.committed:
            return
        now = time.monotonic()
        if not force and now - self.last_commit < COMMIT_EVERY_S:
            return
        offsets = [TopicPartition(self.input, p, o) for p, o in self.acknowledged.items()]
        if force:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        else:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        self.committed = dict(self.acknowledged)
        self.last_commit = now

    def drain(self) -> None:
        self.producer.flush(60)
        self.settle()
        self.commit(force=True)
        self.acknowledged.clear()
        self.committed.clear()

    def run(self) -> None:
        self.consumer.subscribe([self.input], on_revoke=self.on_revoke)
        produce = self.producer.produce
        output = self.output
        while not self.stopping:
            messages = self.consumer.consume(BATCH, timeout=CONSUME_TIMEOUT_S)
            if messages:
                batch = Batch()
                callback = batch.delivered
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise RuntimeError(error.str())
                    while True:
                        try:
                            produce(output, message.value(), message.key(), on_delivery=callback)
                            break
                        except BufferError:
                            self.producer.poll(0.01)
                    batch.remaining += 1
                    batch.offsets[cast(int, message.partition())] = cast(int, message.offset()) + 1
                self.pending.append(batch)
            self.producer.poll(0)
            self.settle()
            self.commit(force=not self.pending and not messages)
        self.drain()
        self.consumer.close()


def main() -> int:
    env = os.environ
    ceiling = Ceiling(
        env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        env["INPUT_TOPIC"],
        env["OUTPUT_TOPIC"],
        env["CONSUMER_GROUP"],
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        ceiling.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ceiling.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
