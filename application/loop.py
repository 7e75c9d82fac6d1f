"""The poll loop both delivery guarantees share: when to poll, when to stop, how to ride out an outage."""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence, Set
from typing import Generic, TypeVar

from application import dlq_headers
from application.errors import BrokerUnavailable, UnsupportedOperation
from application.health import HealthState
from application.logs import ThrottledWarning
from application.messages import ConsumedRecord, DeliveryError, Headers, TopicPartition, record_bytes
from application.ports import Clock, DeliverySink, GroupView, MessageSource, Metrics, Tracer
from application.rate_limit import RateLimiter
from application.routing import Routed, make_router
from application.settings import PipelineSettings
from application.stats import PipelineStats
from domain.model import format_processed_at
from domain.processing import LoginEventProcessor

log = logging.getLogger(__name__)

_BROKER_RETRY_CEILING_S = 30.0
_LAG_REPORT_INTERVAL_S = 5.0
# A partition stopped at a refused dead letter says so at most this often (it stays stopped meanwhile).
STALL_LOG_INTERVAL_S = 60.0
_REMINDER_INTERVAL_S = 60.0


SinkT = TypeVar("SinkT", bound=DeliverySink)


class PipelineLoop(ABC, Generic[SinkT]):
    """Subclasses decide what a batch means (``_handle``) and what must finish before stopping (``_finish``).

    What both guarantees do alike lives here: construction, the accounting of stats and metrics,
    dead-lettering a record the output refused (``publish_failed``), latency samples, closing.
    They are also the source's RebalanceListener (``on_assigned``/``on_revoked``).
    """

    def __init__(
        self,
        source: MessageSource,
        sink: SinkT,
        processor: LoginEventProcessor,
        settings: PipelineSettings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._settings = settings
        self._router = make_router(processor, settings, tracer)
        self._clock = clock or Clock()
        self._metrics = metrics or Metrics()
        self.health = health or HealthState(self._clock)
        self._rng = rng or random.Random()
        self._limiter = (
            RateLimiter(settings.max_records_per_second, self._clock) if settings.max_records_per_second else None
        )
        self.stats = PipelineStats()
        self._assigned: set[TopicPartition] = set()
        self._stop = threading.Event()
        self._last_activity = self._clock.monotonic()  # last record or assignment: the idle clock's start
        self._drain_check = DrainCheck(source)
        self._last_lag_report = 0.0
        self._outage = OutageReport(self._clock)
        self._publish_failed = ThrottledWarning(log)
        self._setup()

    # -- hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _handle(self, records: list[ConsumedRecord]) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Called once on the way out, before the source and sink close."""

    @abstractmethod
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abstractmethod
    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.on_revoked(partitions)

    def _setup(self) -> None:
        """The subclass's own state, made at the end of construction."""

    def _serve(self) -> None:
        """Work to do before each poll (acknowledgements, retries, flow control)."""

    def _batch_limit(self) -> int:
        """How many records the next poll may take; 0 pauses fetching."""
        return self._settings.batch_size

    def _poll_timeout(self) -> float:
        return self._settings.poll_timeout_s

    def _idle(self) -> bool:
        """Nothing left in flight, so an idle timeout may stop the run."""
        return True

    def _after_poll(self) -> None:
        """Periodic work after each poll (e.g. commits)."""

    def _start(self) -> None:
        """Work before subscribing (e.g. fencing a predecessor)."""

    def _producer_limit(self) -> int | None:
        """The largest record the sink's producer lets through, where known."""
        return self._sink.max_message_bytes()

    def _close(self) -> None:
        try:
            self._source.close()
        finally:
            self._sink.close()

    # -- what both guarantees count and report alike ----------------------------------------------

    def _count_consumed(self, records: int) -> None:
        self.stats.consumed += records
        self._metrics.consumed(records)

    def _count_finished(self, processed: int, dead_lettered: Mapping[str, int]) -> None:
        """Records the broker took: ``processed`` on the output, the others on the DLQ by reason."""
        if processed:
            self.stats.processed += processed
            self._metrics.processed(processed)
        for reason, count in dead_lettered.items():
            self.stats.dead_lettered[reason] += count
            self._metrics.dead_lettered(reason, count)

    def _count_retry(self) -> None:
        self.stats.retries += 1
        self._metrics.retried(1)

    def _count_commit(self, partitions: int) -> None:
        self.stats.commits += 1
        self._metrics.committed(partitions)

    def _count_batch(self, started: float, records: int) -> None:
        """A batch handled, ``started`` at that monotonic time."""
        self._metrics.batch_processed(self._clock.monotonic() - started, records)

    def _sample_latency(self, timestamp_ms: int) -> None:
        """One end-to-end latency sample: from the input record's timestamp until now."""
        self._metrics.end_to_end_latency(max(0.0, self._clock.now() - timestamp_ms / 1000.0))

    def _dead_letter_refused_output(self, record: ConsumedRecord, error: DeliveryError, attempts: int) -> Routed:
        """The dead letter (``publish_failed``) for a record the output refused for good or after every retry."""
        self._publish_failed(
            "output publish failed for %s[%d]@%d after %d attempt(s), dead-lettering: %s",
            record.topic, record.partition, record.offset, attempts, error, record=record,
        )  # fmt: skip
        failed_at = format_processed_at(self._clock.now())
        return self._router.dead_letter(record, dlq_headers.PUBLISH_FAILED, str(error), failed_at)

    def _check_message_limits(self) -> None:
        """Say once, at start, when the DLQ or the producer takes less than the input topic may hold."""
        settings = self._settings
        wanted = settings.input_max_message_bytes
        if wanted is None:
            return
        short = []
        if settings.dlq_max_message_bytes is not None and settings.dlq_max_message_bytes < wanted:
            short.append(f"DLQ topic {settings.dlq_topic} takes at most {settings.dlq_max_message_bytes} bytes")
        producer = self._producer_limit()
        if producer is not None and producer < wanted:
            short.append(f"the producer sends at most {producer} bytes")
        if short:
            log.warning(
                "%s, but input topic %s holds records of up to %d bytes (max.message.bytes): a record that large "
                "cannot be dead-lettered and would stop its partition; raise %s's max.message.bytes (and any "
                "producer message.max.bytes / max_request_size setting) to at least %d",
                " and ".join(short), settings.input_topic, wanted, settings.dlq_topic, wanted,
            )  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> PipelineStats:
        """Run until ``stop`` is set, ``max_messages`` records are done, or no record came for ``idle_timeout_s``.

        Every way out finishes in-flight work and commits what was delivered.
        """
        self._stop = stop or threading.Event()
        self._check_message_limits()
        self._start()
        self._source.subscribe([self._settings.input_topic], self)
        self.health.running = True
        self._last_activity = self._clock.monotonic()
        broker_failures = 0
        try:
            while not self._stop.is_set():
                self.health.heartbeat()
                self._serve()
                self._report_lag()
                wanted = self._batch_limit()
                if max_messages is not None:
                    remaining = max_messages - self.stats.consumed
                    if remaining <= 0:
                        break
                    wanted = min(wanted, remaining)
                if wanted and self._limiter is not None:
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
                elif idle_timeout_s is not None and self._idle_for(idle_timeout_s, now):
                    log.info("no record for %.1fs: stopping", idle_timeout_s)
                    break
                self._after_poll()
        finally:
            self.health.running = False
            try:
                self._finish()
            finally:
                self._close()
            log.info(
                "stopped: consumed=%d processed=%d dead_lettered=%d commits=%d",
                self.stats.consumed, self.stats.processed, sum(self.stats.dead_lettered.values()), self.stats.commits,
            )  # fmt: skip
        return self.stats

    def _idle_for(self, idle_timeout_s: float, now: float) -> bool:
        """No record for ``idle_timeout_s``, nothing in flight, and the input drained (see DrainCheck).

        When it is not drained yet, the idle clock starts again: only silence while this member holds
        a stable assignment, every partition readable, says the input is drained.
        """
        if now - self._last_activity < idle_timeout_s or not self._idle():
            return False
        if self._drain_check.drained(idle_timeout_s, self._assigned):
            return True
        self._last_activity = self._clock.monotonic()
        return False

    def _broker_down(self, error: BrokerUnavailable, failures: int) -> None:
        self._outage.down(error, new_outage=self.health.broker_available or failures == 1)
        self.health.broker_available = False
        self.health.last_error = error.summary()
        self._serve()
        delay = min(_BROKER_RETRY_CEILING_S, self._settings.retry.base_backoff_s * 2 ** min(failures, 16))
        self._clock.wait(self._stop, self._rng.uniform(delay / 2, delay))

    def _broker_up(self, failures: int) -> None:
        if failures:
            self._outage.up(failures)
            # An outage is not idleness: the idle timeout counts from the recovery, not the last record.
            self._last_activity = self._clock.monotonic()
        self.health.broker_available = True
        self.health.last_error = ""

    def _report_lag(self) -> None:
        now = self._clock.monotonic()
        if now - self._last_lag_report >= _LAG_REPORT_INTERVAL_S:
            self._last_lag_report = now
            for partition, lag in self._source.lag().items():
                self._metrics.consumer_lag(partition, lag)

    def _track_assignment(self, assigned: Sequence[TopicPartition], revoked: Sequence[TopicPartition]) -> None:
        if assigned or revoked:  # a rebalance: the idle clock runs only while the assignment is stable
            self._last_activity = self._clock.monotonic()
            self._drain_check.rebalanced()
        self._assigned.update(assigned)
        self._assigned.difference_update(revoked)
        self.health.assigned_partitions = len(self._assigned)
        if assigned:
            log.info("assigned %s", describe(assigned))
        if revoked:
            log.info("revoked %s", describe(revoked))


class OutageReport:
    """What the log says while the cluster cannot be used: the cause once, then a reminder at most a minute.

    A new cause (the password was fixed, now the certificate is refused) is said at once.
    """

    def __init__(self, clock: Clock, reminder_interval_s: float = _REMINDER_INTERVAL_S) -> None:
        self._clock = clock
        self._interval = reminder_interval_s
        self._since = 0.0
        self._last_said = 0.0
        self._cause: type[BrokerUnavailable] | None = None

    def down(self, error: BrokerUnavailable, *, new_outage: bool) -> None:
        now = self._clock.monotonic()
        if new_outage or self._cause is None:
            self._since = now
        if new_outage or type(error) is not self._cause:
            self._cause, self._last_said = type(error), now
            log.warning("%s; retrying with backoff (not ready meanwhile)", error.summary())
        elif now - self._last_said >= self._interval:
            self._last_said = now
            log.warning("still %s, for %s; retrying", error.summary(), duration(now - self._since))

    def up(self, failures: int) -> None:
        lasted = duration(self._clock.monotonic() - self._since) if self._cause is not None else "a moment"
        log.info("broker reachable again after %s (%d failed attempt(s))", lasted, failures)
        self._cause = None


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3700`` -> ``1h01m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def describe(partitions: Sequence[TopicPartition]) -> str:
    if not partitions:
        return "no partitions"
    by_topic: dict[str, list[int]] = {}
    for partition in partitions:
        by_topic.setdefault(partition.topic, []).append(partition.partition)
    return ", ".join(f"{topic}{sorted(numbers)}" for topic, numbers in sorted(by_topic.items()))


def describe_stall(
    record: ConsumedRecord,
    dlq_topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    error: DeliveryError,
    dlq_limit: int | None,
    producer_limit: int | None,
) -> str:
    """The ERROR line (and the readiness reason) for a partition stopped at a dead letter refused for good."""
    size = record_bytes(key, value, headers)
    where = f"{record.topic}[{record.partition}]"
    if producer_limit is not None and size > producer_limit:
        refused = f"is refused by the producer (it sends at most {producer_limit} bytes)"
        remedy = (
            "raise the producer's message.max.bytes (kafka-python: max_request_size) above "
            f"{size} bytes, or leave it unset so that it follows the input topic, and restart"
        )
    else:
        limit = f"{dlq_limit} bytes" if dlq_limit is not None else "unknown"
        refused = f"is refused by {dlq_topic} (max.message.bytes {limit})"
        remedy = f"raise max.message.bytes of {dlq_topic} above {size} bytes (the partition then resumes by itself)"
    return (
        f"partition {where} stopped at offset {record.offset}: its dead letter ({size} bytes with headers, "
        f"value {len(value or b'')} bytes) {refused}: {error}. Nothing past it is committed; the other partitions "
        f"go on. Remedy: {remedy}, or replay offset {record.offset} of {where} elsewhere and move the group past it"
    )


class DrainCheck:
    """Whether silence from the input means it is drained: asked at idle checks only, never per record.

    Not while some partition this member holds cannot be read yet (a pending transaction holds its
    committed offset back), nor just after one turned readable (it may not have been fetched yet). Nor
    unless the group is Stable, this member in it, and every partition of the subscribed topics owned by
    one of its members: a member that stopped responding keeps its partitions, read by nobody, until the
    broker drops it at its session timeout, and meanwhile the group rebalances (the broker waits for it)
    or, before this member's join reached the broker, lists it as their owner. What it waits for is said
    once per cause, with how long it may last.
    """

    def __init__(self, source: MessageSource, *, logger: logging.Logger = log) -> None:
        self._source = source
        self._log = logger
        self._were_unreadable = False
        self._said: set[tuple[str, frozenset[TopicPartition]]] = set()

    def rebalanced(self) -> None:
        """The assignment changed: a cause seen before may be said again."""
        self._said.clear()

    def drained(self, idle_timeout_s: float, assigned: Set[TopicPartition]) -> bool:
        """``assigned``: what this member was given, as its rebalance listener saw it."""
        unreadable = self._source.unreadable()
        if unreadable or self._were_unreadable:
            self._were_unreadable = bool(unreadable)
            if unreadable:
                self._say(
                    "unreadable", unreadable, logging.WARNING,
                    "no record for %.1fs, but %s cannot be read yet (a pending transaction, perhaps a stopped "
                    "instance's, holds their committed offsets until the broker's transaction timeout): waiting",
                    idle_timeout_s, describe(unreadable),
                )  # fmt: skip
            return False
        try:
            view = self._source.group_view()
        except BrokerUnavailable as error:
            self._say("unknown", (), logging.WARNING, "cannot describe the group yet (%s): waiting", error)
            return False
        except UnsupportedOperation as error:
            self._say(
                "unsupported", (), logging.WARNING,
                "cannot tell whether other members hold partitions (%s): this member's own silence counts as "
                "drained", error,
            )  # fmt: skip
            return True
        return view is None or self._group_settled(view, assigned)

    def _group_settled(self, view: GroupView, assigned: Set[TopicPartition]) -> bool:
        unowned = view.unowned
        elsewhere = sorted(view.owned - view.mine)
        if view.state != "Stable" and not view.members:  # Empty (or Dead): this member's join is on its way
            self._say("joining", (), logging.INFO, "waiting for the group (%s): this member is joining it", view.state)
            return False
        if view.state != "Stable":
            if elsewhere:
                detail = f" and {_are(elsewhere)} still held by another member"
            else:
                detail = f" and {_are(unowned)} not assigned yet" if unowned else ""
            self._say(
                "rebalancing", elsewhere or unowned, logging.INFO,
                "waiting up to %.0fs for the group: it is rebalancing (%s, %d member(s))%s (a member that "
                "stopped responding keeps its partitions until its session times out)",
                view.session_timeout_s, view.state, view.members, detail,
            )  # fmt: skip
            return False
        if not view.joined:
            self._say(
                "not-joined", elsewhere, logging.INFO,
                "waiting up to %.0fs for the group: this member has not joined it yet, and %s held by %d other "
                "member(s), perhaps one that stopped responding (it keeps them until its session times out)",
                view.session_timeout_s, _are(elsewhere), view.members,
            )  # fmt: skip
            return False
        if unowned:
            self._say(
                "unowned", unowned, logging.INFO,
                "waiting for the group: %s not assigned to any member (the group reassigns them at its next "
                "rebalance, e.g. once every member has seen new partitions)", _are(unowned),
            )  # fmt: skip
            return False
        if view.mine != assigned:  # the group just handed this member a new assignment: it is on its way
            self._log.debug("group assigned %s to this member, which holds %s", describe(sorted(view.mine)),
                            describe(sorted(assigned)))  # fmt: skip
            return False
        return True

    def _say(self, cause: str, partitions: Sequence[TopicPartition], level: int, message: str, *args: object) -> None:
        key = (cause, frozenset(partitions))
        if key not in self._said:
            self._said.add(key)
            self._log.log(level, message, *args)


def _are(partitions: Sequence[TopicPartition]) -> str:
    return f"partitions {describe(partitions)} are" if partitions else "no partitions are"
