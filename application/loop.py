"""The poll loop both delivery guarantees share: when to poll, when to stop, how to ride out an outage."""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

from application.errors import BrokerUnavailable
from application.health import HealthState
from application.messages import ConsumedRecord, TopicPartition
from application.ports import Clock, MessageSource, Metrics
from application.rate_limit import RateLimiter
from application.routing import RecordRouter
from application.settings import PipelineSettings
from application.stats import PipelineStats
from domain.processing import LoginEventProcessor

log = logging.getLogger(__name__)

_BROKER_RETRY_CEILING_S = 30.0
_LAG_REPORT_INTERVAL_S = 5.0
_REMINDER_INTERVAL_S = 60.0


class PipelineLoop(ABC):
    """Subclasses decide what a batch means (``_handle``) and what must finish before stopping (``_finish``).

    They are also the source's RebalanceListener (``on_assigned``/``on_revoked``).
    """

    def __init__(
        self,
        source: MessageSource,
        processor: LoginEventProcessor,
        settings: PipelineSettings,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        health: HealthState | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._settings = settings
        self._router = RecordRouter(processor, settings)
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
        self._partitions_were_unreadable = False  # at the last idle check
        self._last_lag_report = 0.0
        self._outage = OutageReport(self._clock)

    # -- hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _handle(self, records: list[ConsumedRecord]) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Called once on the way out, before the source and sink close."""

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None: ...

    @abstractmethod
    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None: ...

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.on_revoked(partitions)

    def _serve(self) -> None:  # noqa: B027 - optional hook
        """Work to do before each poll (acknowledgements, retries, flow control)."""

    def _batch_limit(self) -> int:
        """How many records the next poll may take; 0 pauses fetching."""
        return self._settings.batch_size

    def _poll_timeout(self) -> float:
        return self._settings.poll_timeout_s

    def _idle(self) -> bool:
        """Nothing left in flight, so an idle timeout may stop the run."""
        return True

    def _after_poll(self) -> None:  # noqa: B027 - optional hook
        """Periodic work after each poll (e.g. commits)."""

    def _start(self) -> None:  # noqa: B027 - optional hook
        """Work before subscribing (e.g. fencing a predecessor)."""

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
        """No record for ``idle_timeout_s``, nothing in flight, and every partition readable all along.

        Silence from a partition that cannot be read yet says nothing, so the idle clock restarts then,
        and once more when it turns readable: a partition that just did may not have been fetched yet.
        """
        if now - self._last_activity < idle_timeout_s or not self._idle():
            return False
        unreadable = self._source.unreadable()
        if not unreadable and not self._partitions_were_unreadable:
            return True
        if unreadable:
            log.warning(
                "no record for %.1fs, but %s cannot be read yet (a pending transaction, perhaps a stopped "
                "instance's, holds their committed offsets until the broker's transaction timeout): waiting",
                idle_timeout_s, describe(unreadable),
            )  # fmt: skip
        self._partitions_were_unreadable = bool(unreadable)
        self._last_activity = self._clock.monotonic()
        return False

    def _broker_down(self, error: BrokerUnavailable, failures: int) -> None:
        self._outage.down(error, new_outage=self.health.broker_available or failures == 1)
        self.health.broker_available = False
        self.health.last_error = error.summary()
        self._serve()
        delay = min(_BROKER_RETRY_CEILING_S, self._settings.retry.base_backoff_s * 2 ** min(failures, 16))
        self._stop.wait(self._rng.uniform(delay / 2, delay))

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
        if assigned:
            self._last_activity = self._clock.monotonic()
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
