"""The exactly-once use case: each batch's outputs, dead letters and input offsets in one Kafka transaction.

Either all of a batch becomes visible to read_committed consumers together
with its committed input position, or none of it does and the batch is
processed again. Records that keep failing are dead-lettered inside a later
attempt of the same transaction, so a bad record never blocks the stream.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from enum import Enum

from application import dead_letter
from application.errors import BrokerUnavailable, CommitFailed, SinkFull, TransactionAborted
from application.health import HealthState
from application.logs import ThrottledWarning
from application.loop import PipelineLoop
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.ports import Clock, MessageSource, Metrics, TransactionalSink
from application.routing import Routed
from application.settings import PipelineSettings
from domain.model import format_processed_at
from domain.processing import LoginEventProcessor

log = logging.getLogger(__name__)


class _Attempt(Enum):
    COMMITTED = "committed"
    RETRY = "retry"  # aborted; the same batch may be tried again
    GROUP_MOVED_ON = "group moved on"  # aborted; only a poll (rejoining the group) can help


class TransactionalPipeline(PipelineLoop):
    def __init__(
        self,
        source: MessageSource,
        sink: TransactionalSink,
        processor: LoginEventProcessor,
        settings: PipelineSettings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(source, processor, settings, clock=clock, metrics=metrics, health=health, rng=rng)
        self._sink = sink
        self.transactions = 0
        self.aborts = 0
        self._failures: dict[int, DeliveryError] = {}  # index in the batch -> why the last attempt lost it
        self._publish_failed = ThrottledWarning(log)

    def _batch_limit(self) -> int:
        return self._settings.transaction_size

    def _handle(self, records: list[ConsumedRecord]) -> None:
        started = self._clock.monotonic()
        processed_at = format_processed_at(self._clock.now())
        routed = [self._router.route(record, processed_at) for record in records]
        first: dict[TopicPartition, int] = {}
        after: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            first.setdefault(partition, record.offset)
            after[partition] = record.offset + 1
        self.stats.consumed += len(records)
        self._metrics.consumed(len(records))
        attempt = 0
        while (result := self._commit_batch(routed, after)) is not _Attempt.COMMITTED:
            attempt += 1
            self.aborts += 1
            self.stats.retries += 1
            self._metrics.retried(1)
            if result is _Attempt.GROUP_MOVED_ON or self._stop.is_set():
                # Nothing of this batch was committed, so reading it again (here after the consumer
                # rejoins its group, or at the partitions' new owner) keeps every record exactly once.
                self._rewind(first)
                self.stats.consumed -= len(records)
                return
            self.health.heartbeat()  # retrying is progress: a restart would not help a refusing broker
            self._stop.wait(self._settings.retry.backoff(attempt, self._rng))
            self._dead_letter_hopeless(records, routed, attempt)
        self._count(routed)
        self._metrics.batch_processed(self._clock.monotonic() - started, len(records))
        stamp = records[-1].timestamp_ms
        if stamp is not None:
            self._metrics.end_to_end_latency(max(0.0, self._clock.now() - stamp / 1000.0))

    def _commit_batch(self, routed: list[Routed], offsets: dict[TopicPartition, int]) -> _Attempt:
        """One attempt; after an abort, the records that failed are noted on ``self._failures``."""
        self._failures = {}
        try:
            self._sink.begin()
            for index, item in enumerate(routed):
                self._publish(index, item)
            self._sink.commit(offsets, self._source.group_metadata())
        except (TransactionAborted, BrokerUnavailable) as error:
            log.warning("transaction aborted, retrying the batch: %s", error)
            self._abort()
            return _Attempt.RETRY
        except CommitFailed as error:
            log.warning("transaction refused (the consumer must rejoin its group first): %s", error)
            self._abort()
            return _Attempt.GROUP_MOVED_ON
        self.transactions += 1
        self.stats.commits += 1
        self._metrics.committed(len(offsets))
        return _Attempt.COMMITTED

    def _publish(self, index: int, item: Routed) -> None:
        def delivered(error: DeliveryError | None) -> None:
            if error is not None:
                self._failures[index] = error

        while True:
            try:
                self._sink.publish(item.topic, item.key, item.value, item.headers, delivered)
                return
            except SinkFull:
                self._stop.wait(0.01)

    def _dead_letter_hopeless(self, records: list[ConsumedRecord], routed: list[Routed], attempt: int) -> None:
        """Route to the DLQ, for the next attempt, outputs that cannot succeed or have used up their retries."""
        retry = self._settings.retry
        failed_at = format_processed_at(self._clock.now())
        for index, error in self._failures.items():
            if error.collateral:
                continue  # swept away by the abort: it says nothing about this record
            if routed[index].reason is None and (not error.retriable or retry.exhausted(attempt)):
                record = records[index]
                self._publish_failed(
                    "output publish failed for %s[%d]@%d, dead-lettering: %s",
                    record.topic, record.partition, record.offset, error, record=record,
                )  # fmt: skip
                routed[index] = self._router.dead_letter(record, dead_letter.PUBLISH_FAILED, str(error), failed_at)

    def _abort(self) -> None:
        try:
            self._sink.abort()
        except (TransactionAborted, BrokerUnavailable, CommitFailed) as error:
            log.warning("abort failed (the broker aborts it on timeout): %s", error)

    def _rewind(self, first: dict[TopicPartition, int]) -> None:
        still_ours = {partition: offset for partition, offset in first.items() if partition in self._assigned}
        if still_ours:
            self._source.rewind(still_ours)

    def _count(self, routed: list[Routed]) -> None:
        dead: Counter[str] = Counter(item.reason for item in routed if item.reason is not None)
        processed = len(routed) - sum(dead.values())
        self.stats.processed += processed
        self._metrics.processed(processed)
        for reason, count in dead.items():
            self.stats.dead_lettered[reason] += count
            self._metrics.dead_lettered(reason, count)

    def _start(self) -> None:
        try:
            self._sink.prepare()
        except (BrokerUnavailable, TransactionAborted) as error:
            log.warning("cannot claim the transactional id yet (the first transaction will): %s", error)

    def _finish(self) -> None:
        """Nothing is ever in flight between batches: each one committed or aborted before the next poll."""

    def _producer_limit(self) -> int | None:
        return self._sink.max_message_bytes()

    def _close(self) -> None:
        try:
            self._source.close()
        finally:
            self._sink.close()

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self._track_assignment(partitions, ())

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        self._track_assignment((), partitions)
