"""The at-least-once consume-process-publish-commit use case.

Guarantee: an input offset is committed only when every record before it has
been acknowledged by the broker on the output or the dead-letter topic. A
crash at any moment therefore re-delivers, and never loses, a record.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
from collections import Counter
from collections.abc import Sequence

from application import dead_letter
from application.errors import BrokerUnavailable, CommitFailed, SinkFull
from application.health import HealthState
from application.messages import ConsumedRecord, DeliveryError, TopicPartition
from application.offsets import OffsetLedger, PartitionLedger
from application.ports import Clock, MessageSink, MessageSource, Metrics
from application.rate_limit import RateLimiter
from application.settings import PipelineSettings
from application.stats import PipelineStats
from domain.model import format_processed_at
from domain.outcomes import Processed
from domain.processing import LoginEventProcessor

log = logging.getLogger(__name__)

_IDLE_SERVE_S = 0.05
_BROKER_RETRY_CEILING_S = 30.0


class _Delivery:
    """One input record on its way to the output or the DLQ; it is also its own delivery callback."""

    __slots__ = ("attempts", "headers", "key", "ledger", "pipeline", "reason", "record", "timed", "topic", "value")

    def __init__(
        self,
        pipeline: Pipeline,
        record: ConsumedRecord,
        ledger: PartitionLedger,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        reason: str | None,
    ) -> None:
        self.pipeline = pipeline
        self.record = record
        self.ledger = ledger
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = headers
        self.attempts = 0
        self.reason = reason  # None while headed for the output topic
        self.timed = False

    def __call__(self, error: DeliveryError | None) -> None:
        self.pipeline._delivered(self, error)


class Pipeline:
    """Implements RebalanceListener too: the source calls back into it when partitions move."""

    def __init__(
        self,
        source: MessageSource,
        sink: MessageSink,
        processor: LoginEventProcessor,
        settings: PipelineSettings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._processor = processor
        self._settings = settings
        self._clock = clock or Clock()
        self._metrics = metrics or Metrics()
        self.health = health or HealthState(self._clock)
        self._rng = rng or random.Random()
        self._limiter = (
            RateLimiter(settings.max_records_per_second, self._clock) if settings.max_records_per_second else None
        )
        self.stats = PipelineStats()
        self._ledger = OffsetLedger()
        self._assigned: set[TopicPartition] = set()
        self._in_flight = 0
        self._blocked_dead_letters: set[_Delivery] = set()
        self._paused = False
        self._retries: list[tuple[float, int, _Delivery]] = []
        self._retry_sequence = itertools.count()
        self._last_commit = self._clock.monotonic()
        self._pending_counts: Counter[str] = Counter()
        self._pending_processed = 0
        self._last_activity = self._clock.monotonic()  # last record or assignment: the idle clock's start

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> PipelineStats:
        """Run until ``stop`` is set, ``max_messages`` records are done, or no record came for ``idle_timeout_s``.

        Every exit path drains in-flight records and commits what was acknowledged.
        """
        stop = stop or threading.Event()
        settings = self._settings
        self._source.subscribe([settings.input_topic], self)
        self.health.running = True
        self._last_activity = self._clock.monotonic()
        broker_failures = 0
        try:
            while not stop.is_set():
                self.health.heartbeat()
                self._sink.poll(0)
                self._publish_due_retries()
                self._apply_backpressure()
                self._report()
                wanted = settings.batch_size
                if max_messages is not None:
                    wanted = min(wanted, max_messages - self.stats.consumed)
                    if wanted <= 0:
                        break
                if self._paused:
                    self._sink.poll(_IDLE_SERVE_S)
                    wanted = 0
                elif self._limiter is not None:
                    wanted = self._limiter.acquire(wanted)
                try:
                    records = self._source.poll_batch(wanted, self._poll_timeout() if wanted else 0.0)
                except BrokerUnavailable as error:
                    broker_failures += 1
                    self._broker_down(error, broker_failures)
                    continue
                if broker_failures or not self.health.broker_available:
                    self._broker_up(broker_failures)
                    broker_failures = 0
                if self._limiter is not None and wanted:
                    self._limiter.refund(wanted - len(records))
                now = self._clock.monotonic()
                if records:
                    self._last_activity = now
                    self._handle(records)
                elif idle_timeout_s is not None and now - self._last_activity >= idle_timeout_s and not self._in_flight:
                    log.info("no record for %.1fs: stopping", idle_timeout_s)
                    break
                self._maybe_commit()
        finally:
            self._shutdown()
        return self.stats

    def _poll_timeout(self) -> float:
        timeout = self._settings.poll_timeout_s
        if self._in_flight:
            timeout = min(timeout, _IDLE_SERVE_S)  # do not sit on acknowledgements waiting for new input
        if self._retries:
            timeout = min(timeout, max(0.0, self._retries[0][0] - self._clock.monotonic()))
        return timeout

    def _broker_down(self, error: BrokerUnavailable, failures: int) -> None:
        if self.health.broker_available or failures == 1:
            log.warning("broker unavailable, retrying with backoff: %s", error)
        self.health.broker_available = False
        self.health.last_error = str(error)
        self._sink.poll(0)
        delay = min(_BROKER_RETRY_CEILING_S, self._settings.retry.base_backoff_s * 2 ** min(failures, 16))
        self._clock.sleep(self._rng.uniform(delay / 2, delay))

    def _broker_up(self, failures: int) -> None:
        if failures:
            log.info("broker reachable again after %d failed attempts", failures)
        self.health.broker_available = True
        self.health.last_error = ""

    # -- processing ---------------------------------------------------------------------------

    def _handle(self, records: list[ConsumedRecord]) -> None:
        started = self._clock.monotonic()
        processed_at = format_processed_at(self._clock.now())
        settings = self._settings
        processor = self._processor
        ledger_for = self._ledger.partition
        ledger: PartitionLedger | None = None
        ledger_key: tuple[str, int] | None = None
        delivery: _Delivery | None = None
        for record in records:
            key = (record.topic, record.partition)
            if key != ledger_key:
                ledger, ledger_key = ledger_for(*key), key
            assert ledger is not None
            ledger.track(record.offset)
            try:
                outcome = processor.process(record.value, processed_at)
                if isinstance(outcome, Processed):
                    event = outcome.event
                    output_key = record.key
                    if output_key is None and event.user_id is not None:
                        output_key = event.user_id.encode()
                    delivery = _Delivery(
                        self, record, ledger, settings.output_topic, output_key,
                        processor.encode(event), record.headers, None,
                    )  # fmt: skip
                else:
                    delivery = self._dead_letter(record, ledger, outcome.reason.value, outcome.detail, processed_at)
            except Exception as error:
                log.debug("processing error at %s[%d]@%d", record.topic, record.partition, record.offset, exc_info=True)
                message = f"{type(error).__name__}: {error}"
                delivery = self._dead_letter(record, ledger, dead_letter.PROCESSING_ERROR, message, processed_at)
            self._in_flight += 1
            self._publish(delivery)
        if delivery is not None and delivery.record.timestamp_ms is not None:
            delivery.timed = True  # sample one latency per batch: per-record histograms cost more than they tell
        self.stats.consumed += len(records)
        self._metrics.consumed(len(records))
        self._metrics.batch_processed(self._clock.monotonic() - started, len(records))

    def _dead_letter(
        self, record: ConsumedRecord, ledger: PartitionLedger, reason: str, error: str, failed_at: str
    ) -> _Delivery:
        headers = dead_letter.dead_letter_headers(record, reason, error, failed_at)
        return _Delivery(self, record, ledger, self._settings.dlq_topic, record.key, record.value, headers, reason)

    def _publish(self, delivery: _Delivery) -> None:
        while True:
            try:
                self._sink.publish(delivery.topic, delivery.key, delivery.value, delivery.headers, delivery)
                return
            except SinkFull:
                # Producer queue full: stop fetching until it drains; the record in hand waits its turn.
                self._pause()
                self._sink.poll(_IDLE_SERVE_S)

    # -- acknowledgements and retries ----------------------------------------------------------

    def _delivered(self, delivery: _Delivery, error: DeliveryError | None) -> None:
        ledger = delivery.ledger
        if ledger.retired:
            return  # revoked meanwhile: the partition's new owner re-reads this record
        if error is None:
            ledger.pending.discard(delivery.record.offset)
            self._in_flight -= 1
            if delivery.reason is None:
                self._pending_processed += 1
                if delivery.timed:
                    stamp = delivery.record.timestamp_ms or 0
                    self._metrics.end_to_end_latency(max(0.0, self._clock.now() - stamp / 1000.0))
            else:
                self._pending_counts[delivery.reason] += 1
                self._blocked_dead_letters.discard(delivery)
            return
        delivery.attempts += 1
        retry = self._settings.retry
        if delivery.reason is None:
            if error.retriable and not retry.exhausted(delivery.attempts):
                self._schedule_retry(delivery)
                return
            log.warning(
                "output publish failed for %s[%d]@%d after %d attempt(s), dead-lettering: %s",
                delivery.record.topic, delivery.record.partition, delivery.record.offset, delivery.attempts, error,
            )  # fmt: skip
            failed_at = format_processed_at(self._clock.now())
            replacement = self._dead_letter(delivery.record, ledger, dead_letter.PUBLISH_FAILED, str(error), failed_at)
            self._publish(replacement)
            return
        # The DLQ itself refused the record: never drop it, never commit past it; hold consumption.
        if delivery not in self._blocked_dead_letters:
            self._blocked_dead_letters.add(delivery)
            log.error(
                "dead-letter publish failed for %s[%d]@%d, pausing consumption and retrying: %s",
                delivery.record.topic, delivery.record.partition, delivery.record.offset, error,
            )  # fmt: skip
        self._schedule_retry(delivery)

    def _schedule_retry(self, delivery: _Delivery) -> None:
        delay = self._settings.retry.backoff(delivery.attempts, self._rng)
        heapq.heappush(self._retries, (self._clock.monotonic() + delay, next(self._retry_sequence), delivery))
        self.stats.retries += 1
        self._metrics.retried(1)

    def _publish_due_retries(self) -> None:
        now = self._clock.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, _, delivery = heapq.heappop(self._retries)
            if not delivery.ledger.retired:
                self._publish(delivery)

    # -- flow control --------------------------------------------------------------------------

    def _apply_backpressure(self) -> None:
        limit = self._settings.max_in_flight
        if self._in_flight >= limit or self._blocked_dead_letters:
            self._pause()
        elif self._paused and self._in_flight <= limit // 2:
            self._resume()

    def _pause(self) -> None:
        if not self._paused and self._assigned:
            self._source.pause(sorted(self._assigned))
            log.info("pausing %d partition(s): %d records in flight", len(self._assigned), self._in_flight)
        self._paused = True

    def _resume(self) -> None:
        if self._assigned:
            self._source.resume(sorted(self._assigned))
            log.info("resuming %d partition(s)", len(self._assigned))
        self._paused = False

    def _report(self) -> None:
        if self._pending_processed:
            self.stats.processed += self._pending_processed
            self._metrics.processed(self._pending_processed)
            self._pending_processed = 0
        if self._pending_counts:
            for reason, count in self._pending_counts.items():
                self.stats.dead_lettered[reason] += count
                self._metrics.dead_lettered(reason, count)
            self._pending_counts.clear()
        self._metrics.in_flight(self._in_flight)
        self._metrics.paused_partitions(len(self._assigned) if self._paused else 0)

    # -- commits, rebalances, shutdown ---------------------------------------------------------

    def _maybe_commit(self) -> None:
        if self._clock.monotonic() - self._last_commit >= self._settings.commit_interval_s:
            self._commit(asynchronous=True)

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
            log.warning("commit failed, will retry with the next one: %s", error)
            return
        self._ledger.mark_committed(offsets)
        self.stats.commits += 1
        self._metrics.committed(len(offsets))

    def _drain(self, timeout_s: float) -> bool:
        """Serve acknowledgements and due retries until nothing is in flight or time runs out."""
        deadline = self._clock.monotonic() + timeout_s
        while self._in_flight > 0:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            self._publish_due_retries()
            wait = min(remaining, _IDLE_SERVE_S)
            if self._retries:
                wait = min(wait, max(0.0, self._retries[0][0] - self._clock.monotonic()))
            self._sink.poll(wait)
        return True

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self._last_activity = self._clock.monotonic()
        self._assigned.update(partitions)
        self.health.assigned_partitions = len(self._assigned)
        if self._paused and partitions:
            self._source.pause(list(partitions))
        log.info("assigned %s", _describe(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Finish and commit what was consumed from the departing partitions before they go."""
        revoked = {(p.topic, p.partition) for p in partitions}
        if not self._drain(self._settings.shutdown_timeout_s):
            log.warning(
                "revocation: %d record(s) still in flight; their partitions' next owner re-reads them", self._in_flight
            )
        self._commit(asynchronous=False, only=revoked)
        abandoned = self._ledger.retire(revoked)
        self._in_flight -= abandoned
        self.stats.abandoned += abandoned
        self._blocked_dead_letters = {d for d in self._blocked_dead_letters if not d.ledger.retired}
        self._assigned.difference_update(partitions)
        self.health.assigned_partitions = len(self._assigned)
        log.info("revoked %s", _describe(partitions))

    def _shutdown(self) -> None:
        self.health.running = False
        try:
            if not self._drain(self._settings.shutdown_timeout_s):
                log.warning("shutdown: %d record(s) not acknowledged in time; they will be re-read", self._in_flight)
            self._report()
            self._commit(asynchronous=False)
        finally:
            try:
                self._source.close()
            finally:
                self._sink.close()
        log.info(
            "stopped: consumed=%d processed=%d dead_lettered=%d commits=%d",
            self.stats.consumed, self.stats.processed, sum(self.stats.dead_lettered.values()), self.stats.commits,
        )  # fmt: skip


def _describe(partitions: Sequence[TopicPartition]) -> str:
    if not partitions:
        return "no partitions"
    by_topic: dict[str, list[int]] = {}
    for partition in partitions:
        by_topic.setdefault(partition.topic, []).append(partition.partition)
    return ", ".join(f"{topic}{sorted(numbers)}" for topic, numbers in sorted(by_topic.items()))
