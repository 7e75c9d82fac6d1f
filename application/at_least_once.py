"""The at-least-once consume-process-publish-commit use case (the default guarantee).

An input offset is committed only when every record before it has been
acknowledged by the broker on the output or the dead-letter topic. A crash
at any moment therefore re-delivers, and never loses, a record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from application.errors import BrokerUnavailable, CommitFailed, SinkFull
from application.logs import record_context
from application.loop import STALL_LOG_INTERVAL_S, PipelineLoop, describe, describe_stall
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.offsets import OffsetLedger, PartitionLedger
from application.ports import MessageSink
from application.retry import RetryQueue
from application.routing import Routed
from domain.model import format_processed_at

log = logging.getLogger(__name__)

_SERVE_S = 0.05


class _Delivery:
    """One input record on its way to the output or the DLQ (``routed``); it is also its own delivery callback."""

    __slots__ = ("ledger", "pipeline", "plain", "record", "retries", "routed")

    def __init__(
        self, pipeline: AtLeastOncePipeline, record: ConsumedRecord, ledger: PartitionLedger, routed: Routed
    ) -> None:
        # Headed for the output topic and no latency sample: the case the callback handles inline.
        self.plain = routed.reason is None
        self.pipeline = pipeline
        self.record = record
        self.ledger = ledger
        self.routed = routed
        self.retries = 0

    @property
    def timed(self) -> bool:
        """Its acknowledgement is the batch's latency sample (see ``AtLeastOncePipeline._handle``)."""
        return self.routed.reason is None and not self.plain

    def __call__(self, error: DeliveryError | None) -> None:
        # The success case inline: it runs once per record, and a method call more costs ~3% here.
        if error is None and self.plain and not self.ledger.retired:
            self.ledger.pending.discard(self.record.offset)
            pipeline = self.pipeline
            pipeline._in_flight -= 1
            pipeline._acknowledged_processed += 1
            return
        self.pipeline._delivered(self, error)


class AtLeastOncePipeline(PipelineLoop[MessageSink]):
    def _setup(self) -> None:
        self._ledger = OffsetLedger()
        self._in_flight = 0
        # Dead letters the DLQ refused, with the latest refusal: their partitions stop until they get through.
        self._blocked_dead_letters: dict[_Delivery, DeliveryError] = {}
        self._stall_logged: dict[_Delivery, float] = {}  # when each one's ERROR line was last written
        self._held: set[TopicPartition] = set()  # partitions paused for a blocked dead letter
        self._paused = False
        self._retries: RetryQueue[_Delivery] = RetryQueue(self._clock)
        self._last_commit = self._clock.monotonic()
        self._acknowledged_dead: Counter[str] = Counter()
        self._acknowledged_processed = 0

    # -- loop hooks ----------------------------------------------------------------------------

    def _serve(self) -> None:
        self._sink.poll(0)
        self._publish_due_retries()
        self._apply_backpressure()
        self._report()

    def _batch_limit(self) -> int:
        if self._paused:
            self._sink.poll(_SERVE_S)  # wait for acknowledgements rather than for input we will not take
            return 0
        return self._settings.batch_size

    def _poll_timeout(self) -> float:
        timeout = self._settings.poll_timeout_s
        if self._in_flight:
            timeout = min(timeout, _SERVE_S)  # do not sit on acknowledgements waiting for new input
        return self._retries.wait_s(timeout)

    def _idle(self) -> bool:
        return not self._in_flight

    def _after_poll(self) -> None:
        if self._clock.monotonic() - self._last_commit >= self._settings.commit_interval_s:
            self._commit(asynchronous=True)

    def _finish(self) -> None:
        if not self._drain(self._settings.shutdown_timeout_s):
            log.warning("shutdown: %d record(s) not acknowledged in time; they will be re-read", self._in_flight)
        elif self._in_flight:
            log.warning(
                "shutdown: %d record(s) whose dead letter the DLQ refuses stay uncommitted; they will be re-read",
                self._in_flight,
            )
        self._report()
        self._commit(asynchronous=False)

    # -- processing ---------------------------------------------------------------------------

    def _handle(self, records: list[ConsumedRecord]) -> None:
        started = self._clock.monotonic()
        processed_at = format_processed_at(self._clock.now())
        route = self._router.route
        ledger_for = self._ledger.partition
        ledger: PartitionLedger | None = None
        ledger_key: tuple[str, int] | None = None
        delivery: _Delivery | None = None
        publish = self._sink.publish
        for record in records:
            key = (record.topic, record.partition)
            if key != ledger_key:
                ledger, ledger_key = ledger_for(*key), key
            assert ledger is not None
            ledger.track(record.offset)
            routed = route(record, processed_at)
            delivery = _Delivery(self, record, ledger, routed)
            self._in_flight += 1
            try:
                publish(routed.topic, routed.key, routed.value, routed.headers, delivery)
            except SinkFull:
                self._publish(delivery)
        if delivery is not None and delivery.plain and delivery.record.timestamp_ms is not None:
            delivery.plain = False  # timed: one latency sample per batch (per-record histograms cost more)
        self._count_consumed(len(records))
        self._count_batch(started, len(records))

    def _publish(self, delivery: _Delivery) -> None:
        """Queue the record, waiting for room while the producer's queue is full (fetching paused meanwhile)."""
        routed = delivery.routed
        self._sink.publish_when_room(routed.topic, routed.key, routed.value, routed.headers, delivery, self._queue_full)

    def _queue_full(self) -> bool:
        self._pause()  # stop fetching until the queue drains; the record in hand waits its turn
        return True

    # -- acknowledgements and retries ----------------------------------------------------------

    def _delivered(self, delivery: _Delivery, error: DeliveryError | None) -> None:
        ledger = delivery.ledger
        if ledger.retired:
            return  # revoked meanwhile: the partition's new owner re-reads this record
        if error is None:
            ledger.pending.discard(delivery.record.offset)
            self._in_flight -= 1
            reason = delivery.routed.reason
            if reason is None:
                self._acknowledged_processed += 1
                if delivery.timed:
                    self._sample_latency(delivery.record.timestamp_ms or 0)
            else:
                self._acknowledged_dead[reason] += 1
                if self._blocked_dead_letters.pop(delivery, None) is not None:
                    self._stall_logged.pop(delivery, None)
                    record = delivery.record
                    log.info(
                        "dead letter for %s[%d]@%d delivered at last: the partition resumes",
                        record.topic, record.partition, record.offset, extra=record_context(record),
                    )  # fmt: skip
                    self._refresh_stalls()
            return
        delivery.retries += 1
        record = delivery.record
        if delivery.routed.reason is None:
            if error.retriable and not self._settings.retry.exhausted(delivery.retries):
                self._schedule_retry(delivery)
                return
            routed = self._dead_letter_refused_output(record, error, delivery.retries)
            self._publish(_Delivery(self, record, ledger, routed))
            return
        # The DLQ itself refused the record: never drop it, never commit past it; stop its partition
        # (the others keep flowing) and keep trying, so that it resumes once the DLQ takes the record.
        previous = self._blocked_dead_letters.get(delivery)
        newly = previous is None or previous.retriable != error.retriable  # new, or from transient to for good
        self._blocked_dead_letters[delivery] = error
        now = self._clock.monotonic()
        if newly or now - self._stall_logged.get(delivery, now) >= STALL_LOG_INTERVAL_S:
            self._stall_logged[delivery] = now
            if error.retriable:
                log.error(
                    "dead-letter publish failed for %s[%d]@%d, pausing the partition and retrying: %s",
                    record.topic, record.partition, record.offset, error, extra=record_context(record),
                )  # fmt: skip
            else:
                log.error("%s", self._stall_text(delivery, error), extra=record_context(record))
        if newly:
            self._refresh_stalls()
        self._schedule_retry(delivery)

    def _refused_for_good(self) -> int:
        if not self._blocked_dead_letters:
            return 0
        return sum(1 for error in self._blocked_dead_letters.values() if not error.retriable)

    def _stall_text(self, delivery: _Delivery, error: DeliveryError) -> str:
        routed = delivery.routed
        return describe_stall(
            delivery.record, routed.topic, routed.key, routed.value, routed.headers, error,
            self._settings.dlq_max_message_bytes, self._producer_limit(),
        )  # fmt: skip

    def _refresh_stalls(self) -> None:
        """Pause the partitions with a blocked dead letter, resume those without one any more."""
        blocked = self._blocked_dead_letters
        held = {TopicPartition(d.record.topic, d.record.partition) for d in blocked}
        stop = sorted((held - self._held) & self._assigned)
        release = sorted((self._held - held) & self._assigned)
        self._held = held
        if stop:
            self._source.pause(stop)
            log.warning("stopped %s at a dead letter the DLQ refuses; the other partitions go on", describe(stop))
        if release and not self._paused:
            self._source.resume(release)
        for_good: dict[TopicPartition, tuple[int, str]] = {}
        for item, error in blocked.items():
            if not error.retriable:
                key = TopicPartition(item.record.topic, item.record.partition)
                if key not in for_good or item.record.offset < for_good[key][0]:
                    for_good[key] = (item.record.offset, self._stall_text(item, error))
        self.health.partition_stalls = tuple(text for _, text in (for_good[k] for k in sorted(for_good)))
        self._metrics.stalled_partitions(len(for_good))

    def _schedule_retry(self, delivery: _Delivery) -> None:
        self._retries.push(self._settings.retry.backoff(delivery.retries, self._rng), delivery)
        self._count_retry()

    def _publish_due_retries(self) -> None:
        for delivery in self._retries.due():
            if not delivery.ledger.retired:
                self._publish(delivery)

    # -- flow control --------------------------------------------------------------------------

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_in_flight
        if self._in_flight >= limit:
            self._pause()
        elif self._paused and self._in_flight <= limit // 2:
            self._resume()

    def _pause(self) -> None:
        if not self._paused and self._assigned:
            self._source.pause(sorted(self._assigned))
            log.info("pausing %d partition(s): %d records in flight", len(self._assigned), self._in_flight)
        self._paused = True

    def _resume(self) -> None:
        resumed = sorted(self._assigned - self._held)  # a stopped partition waits for its dead letter
        if resumed:
            self._source.resume(resumed)
            log.info("resuming %d partition(s)", len(resumed))
        self._paused = False

    def _report(self) -> None:
        if self._acknowledged_processed or self._acknowledged_dead:
            self._count_finished(self._acknowledged_processed, self._acknowledged_dead)
            self._acknowledged_processed = 0
            self._acknowledged_dead.clear()
        self._metrics.in_flight(self._in_flight)
        self._metrics.paused_partitions(len(self._assigned) if self._paused else len(self._held))

    # -- commits and rebalances ----------------------------------------------------------------

    def _commit(self, *, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        self._last_commit = self._clock.monotonic()
        offsets = self._ledger.commit_candidates(only)
        if not offsets:
            return
        try:
            self._source.commit(offsets, asynchronous=asynchronous)
        except CommitFailed as error:
            log.warning(
                "commit refused (the partitions moved; their new owner re-reads from the last commit): %s", error
            )
            return
        except BrokerUnavailable as error:
            log.warning("commit failed, the next one will cover it: %s", error)
            return
        self._ledger.mark_committed(offsets)
        self._count_commit(len(offsets))

    def _drain(self, timeout_s: float) -> bool:
        """Serve acknowledgements and due retries until nothing is in flight or time runs out.

        Dead letters the DLQ refuses for good are not waited for: only an operator can change that.
        """
        deadline = self._clock.monotonic() + timeout_s
        while self._in_flight > self._refused_for_good():
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            self._publish_due_retries()
            self._sink.poll(self._retries.wait_s(min(remaining, _SERVE_S)))
        return True

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self._track_assignment(partitions, ())
        if partitions:
            # Say it explicitly either way: a client may remember a pause from before the partition left.
            if self._paused:
                self._source.pause(list(partitions))
            else:
                self._source.resume(list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Finish and commit what was consumed from the departing partitions before they go."""
        revoked = {(p.topic, p.partition) for p in partitions}
        if not self._drain(self._settings.shutdown_timeout_s):
            log.warning(
                "revocation: %d record(s) still in flight; the partitions' next owner re-reads them", self._in_flight
            )
        self._commit(asynchronous=False, only=revoked)
        self._forget(partitions)

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Already someone else's: nothing can be committed, so just stop tracking them."""
        self._forget(partitions)

    def _forget(self, partitions: Sequence[TopicPartition]) -> None:
        abandoned = self._ledger.retire({(p.topic, p.partition) for p in partitions})
        self._in_flight -= abandoned
        self.stats.abandoned += abandoned
        self._track_assignment((), partitions)
        if self._blocked_dead_letters:
            self._blocked_dead_letters = {
                d: error for d, error in self._blocked_dead_letters.items() if not d.ledger.retired
            }
            self._stall_logged = {d: at for d, at in self._stall_logged.items() if not d.ledger.retired}
            self._held &= self._assigned
            self._refresh_stalls()
