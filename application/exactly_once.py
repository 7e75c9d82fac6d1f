"""The exactly-once use case: each batch's outputs, dead letters and input offsets in one Kafka transaction.

Either all of a batch becomes visible to read_committed consumers together
with its committed input position, or none of it does and the batch is
processed again. Records that keep failing are dead-lettered inside a later
attempt of the same transaction, so a bad record never blocks the stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from enum import Enum

from application.errors import BrokerUnavailable, CommitFailed, TransactionAborted
from application.logs import record_context
from application.loop import STALL_LOG_INTERVAL_S, PipelineLoop, describe, describe_stall
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.ports import TransactionalSink
from application.routing import Routed
from domain.model import format_processed_at

log = logging.getLogger(__name__)

# How often a partition stopped at a refused dead letter reads that record again, to try the DLQ once more.
_STALL_RETRY_S = 10.0


class _Attempt(Enum):
    COMMITTED = "committed"
    RETRY = "retry"  # aborted; the same batch may be tried again
    GROUP_MOVED_ON = "group moved on"  # aborted; only a poll (rejoining the group) can help


class _Stall:
    """A partition stopped at ``offset``, whose dead letter the DLQ refuses for good; tried again at ``retry_at``."""

    __slots__ = ("logged_at", "offset", "retry_at", "text")

    def __init__(self, offset: int, text: str, logged_at: float, retry_at: float) -> None:
        self.offset = offset
        self.text = text
        self.logged_at = logged_at
        self.retry_at = retry_at


class ExactlyOncePipeline(PipelineLoop[TransactionalSink]):
    def _setup(self) -> None:
        self.transactions = 0
        self.aborts = 0
        self._failures: dict[int, DeliveryError] = {}  # index in the batch -> why the last attempt lost it
        self._stalls: dict[TopicPartition, _Stall] = {}  # partitions stopped at a dead letter refused for good
        self._released: set[TopicPartition] = set()  # revoked while stopped (and so perhaps still paused)

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
        self._count_consumed(len(records))
        attempt = 0  # the batch's failed attempts: each record's count of tries
        unchanged = 0  # failed attempts since the batch last changed: what the backoff grows with
        while (result := self._commit_batch(routed, after)) is not _Attempt.COMMITTED:
            attempt += 1
            unchanged += 1
            self.aborts += 1
            self._count_retry()
            if result is _Attempt.GROUP_MOVED_ON or self._stop.is_set():
                # Nothing of this batch was committed, so reading it again (here after the consumer
                # rejoins its group, or at the partitions' new owner) keeps every record exactly once.
                self._rewind(first)
                self.stats.consumed -= len(records)
                return
            self.health.heartbeat()  # retrying is progress: a restart would not help a refusing broker
            stopped = self._refused_dead_letters(records, routed)
            if stopped:
                # Commit the rest without those partitions' records from the refused one on; read them again later.
                records, routed, after = self._stop_partitions(stopped, records, routed, after)
                if not records:
                    return
                unchanged = 0
                continue
            if self._dead_letter_hopeless(records, routed, attempt):
                # Progress: the next attempt is not the one that failed, so its wait starts from the base
                # again. A growing wait would make an output refusing record after record crawl.
                unchanged = 1
            self._clock.wait(self._stop, self._settings.retry.backoff(unchanged, self._rng))
        self._count(routed)
        if self._stalls:
            self._clear_stalls(after)
        self._count_batch(started, len(records))
        stamp = records[-1].timestamp_ms
        if stamp is not None:
            self._sample_latency(stamp)

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
        self._count_commit(len(offsets))
        return _Attempt.COMMITTED

    def _publish(self, index: int, item: Routed) -> None:
        def delivered(error: DeliveryError | None) -> None:
            if error is not None:
                self._failures[index] = error

        self._sink.publish_when_room(item.topic, item.key, item.value, item.headers, delivered)

    def _dead_letter_hopeless(self, records: list[ConsumedRecord], routed: list[Routed], attempt: int) -> int:
        """Route to the DLQ, for the next attempt, outputs that cannot succeed or have used up their retries.

        Returns how many it routed there.
        """
        retry = self._settings.retry
        hopeless = 0
        for index, error in self._failures.items():
            if error.collateral:
                continue  # swept away by the abort: it says nothing about this record
            if routed[index].reason is None and (not error.retriable or retry.exhausted(attempt)):
                routed[index] = self._dead_letter_refused_output(records[index], error, attempt)
                hopeless += 1
        return hopeless

    def _refused_dead_letters(self, records: list[ConsumedRecord], routed: list[Routed]) -> dict[TopicPartition, int]:
        """Partition -> index of its first dead letter the last attempt had refused for good."""
        stopped: dict[TopicPartition, int] = {}
        for index in sorted(self._failures):
            error = self._failures[index]
            if routed[index].reason is None or error.retriable or error.collateral:
                continue
            record = records[index]
            stopped.setdefault(TopicPartition(record.topic, record.partition), index)
        return stopped

    def _stop_partitions(
        self,
        stopped: dict[TopicPartition, int],
        records: list[ConsumedRecord],
        routed: list[Routed],
        after: dict[TopicPartition, int],
    ) -> tuple[list[ConsumedRecord], list[Routed], dict[TopicPartition, int]]:
        """Stop each partition at its refused dead letter (paused, rewound, said so); the batch without them."""
        now = self._clock.monotonic()
        rewind: dict[TopicPartition, int] = {}
        for partition, index in stopped.items():
            record, item = records[index], routed[index]
            text = describe_stall(
                record, item.topic, item.key, item.value, item.headers, self._failures[index],
                self._settings.dlq_max_message_bytes, self._producer_limit(),
            )  # fmt: skip
            stall = self._stalls.get(partition)
            if stall is None or now - stall.logged_at >= STALL_LOG_INTERVAL_S:
                log.error("%s", text, extra=record_context(record))
                logged_at = now
            else:
                logged_at = stall.logged_at
            self._stalls[partition] = _Stall(record.offset, text, logged_at, now + _STALL_RETRY_S)
            rewind[partition] = record.offset
        keep = [
            i for i, record in enumerate(records)
            if (stop := rewind.get(TopicPartition(record.topic, record.partition))) is None or record.offset < stop
        ]  # fmt: skip
        kept_records = [records[i] for i in keep]
        kept_routed = [routed[i] for i in keep]
        kept_after = {}
        for partition, offset in after.items():
            stop = rewind.get(partition)
            if stop is None:
                kept_after[partition] = offset
            elif any(r.partition == partition.partition and r.topic == partition.topic for r in kept_records):
                kept_after[partition] = stop
        self.stats.consumed -= len(records) - len(kept_records)
        paused = sorted(p for p in rewind if p in self._assigned)
        if paused:
            self._source.pause(paused)
            self._source.rewind({p: rewind[p] for p in paused})
        self._report_stalls()
        return kept_records, kept_routed, kept_after

    def _serve(self) -> None:
        """Give each stopped partition another try now and then: the DLQ may take the record by now."""
        if not self._stalls:
            return
        now = self._clock.monotonic()
        due = sorted(p for p, stall in self._stalls.items() if stall.retry_at <= now and p in self._assigned)
        if due:
            for partition in due:
                self._stalls[partition].retry_at = float("inf")  # until the record is read and refused again
            self._source.resume(due)

    def _clear_stalls(self, committed: dict[TopicPartition, int]) -> None:
        cleared = [p for p, stall in self._stalls.items() if committed.get(p, -1) > stall.offset]
        for partition in cleared:
            del self._stalls[partition]
        if cleared:
            log.info("%s resumed: the dead letter it stopped at was delivered", describe(cleared))
            self._report_stalls()

    def _report_stalls(self) -> None:
        self.health.partition_stalls = tuple(self._stalls[p].text for p in sorted(self._stalls))
        self._metrics.stalled_partitions(len(self._stalls))

    def _idle(self) -> bool:
        return not self._stalls  # a stopped partition is not drained

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
        self._count_finished(len(routed) - sum(dead.values()), dead)

    def _start(self) -> None:
        try:
            self._sink.prepare()
        except (BrokerUnavailable, TransactionAborted) as error:
            log.warning("cannot claim the transactional id yet (the first transaction will): %s", error)

    def _finish(self) -> None:
        """Nothing is ever in flight between batches: each one committed or aborted before the next poll."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self._track_assignment(partitions, ())
        again = [p for p in partitions if p in self._released]
        if again:
            self._source.resume(again)  # stopped when it left: a client may remember the pause
            self._released.difference_update(again)

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        self._track_assignment((), partitions)
        released = [p for p in partitions if self._stalls.pop(p, None) is not None]
        if released:
            self._released.update(released)
            self._report_stalls()
