"""Dead-letter tools: look at what failed, and send it back once the cause is fixed."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from application import dead_letter
from application.errors import SinkFull
from application.loop import DrainCheck
from application.messages import ConsumedRecord, DeliveryError, TopicPartition, header_value
from application.ports import Clock, MessageSink, MessageSource
from application.rate_limit import RateLimiter

_POLL_S = 0.5
_FLUSH_TIMEOUT_S = 60.0


class _Assignments:
    """A RebalanceListener that only remembers whether partitions were assigned (these tools commit per batch)."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.update(partitions)

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.difference_update(partitions)

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.assigned.difference_update(partitions)


def _caught_up(source: MessageSource, listener: _Assignments) -> bool:
    """At the end of every assigned partition (an unknown lag, e.g. before the first fetch, is not zero)."""
    if not listener.assigned:
        return False
    lags = source.lag()
    return all(lags.get(partition, 1) == 0 for partition in listener.assigned)


def reason_of(record: ConsumedRecord) -> str:
    return (header_value(record.headers, dead_letter.REASON) or b"unknown").decode("utf-8", "replace")


@dataclass
class DeadLetterReport:
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    newest: list[ConsumedRecord] = field(default_factory=list)


def inspect_dead_letters(
    source: MessageSource, dlq_topic: str, *, examples: int, idle_timeout_s: float = 3.0, clock: Clock | None = None
) -> DeadLetterReport:
    """Read the whole DLQ without committing anything; memory holds only the counts and ``examples`` records."""
    clock = clock or Clock()
    listener = _Assignments()
    report = DeadLetterReport()
    newest: list[tuple[int, int, ConsumedRecord]] = []
    tiebreak = itertools.count()
    source.subscribe([dlq_topic], listener)
    last_record = clock.monotonic()
    try:
        while True:
            records = source.poll_batch(1000, _POLL_S)
            now = clock.monotonic()
            if records:
                last_record = now
            elif (_caught_up(source, listener)) or now - last_record >= idle_timeout_s:
                break
            for record in records:
                report.total += 1
                report.by_reason[reason_of(record)] += 1
                item = (record.timestamp_ms or 0, next(tiebreak), record)
                if len(newest) < examples:
                    heapq.heappush(newest, item)
                elif examples:
                    heapq.heappushpop(newest, item)
    finally:
        source.close()
    report.newest = [record for _, _, record in sorted(newest, reverse=True)]
    return report


@dataclass
class ReplaySummary:
    examined: int = 0
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    last_error: str = ""


def replay_headers(record: ConsumedRecord) -> list[tuple[str, bytes]]:
    """The record's own headers, without the DLQ's, plus how many times it has been replayed."""
    previous = header_value(record.headers, dead_letter.REPLAY_COUNT)
    count = int(previous) + 1 if previous and previous.isdigit() else 1
    headers = [
        (k, v) for k, v in dead_letter.without_dead_letter_headers(record.headers) if k != dead_letter.REPLAY_COUNT
    ]
    headers.append((dead_letter.REPLAY_COUNT, str(count).encode()))
    return headers


def replay_dead_letters(
    source: MessageSource,
    sink: MessageSink,
    dlq_topic: str,
    target_topic: str,
    *,
    reason: str | None = None,
    max_records: int | None = None,
    records_per_second: float | None = None,
    stop: threading.Event | None = None,
    idle_timeout_s: float = 3.0,
    clock: Clock | None = None,
) -> ReplaySummary:
    """Re-publish dead letters batch by batch, committing each partition only up to what the broker acknowledged.

    Stopping (or ``max_records``) between batches leaves nothing half-done, so a
    restarted replay continues exactly where this one stopped. It stops by itself once caught up, or
    after ``idle_timeout_s`` without a record, and then only if the input is drained (see DrainCheck):
    a replay killed a moment ago may still hold partitions of the group.
    """
    clock = clock or Clock()
    stop = stop or threading.Event()
    limiter = RateLimiter(records_per_second, clock) if records_per_second else None
    listener = _Assignments()
    summary = ReplaySummary()
    drain = DrainCheck(source)
    source.subscribe([dlq_topic], listener)
    last_record = clock.monotonic()
    next_check = last_record  # after a check that found the group unsettled, the next waits an idle period
    try:
        while not stop.is_set():
            wanted = 500
            if max_records is not None:
                wanted = min(wanted, max_records - summary.replayed)
                if wanted <= 0:
                    break
            if limiter is not None:
                wanted = limiter.acquire(wanted)
            records = source.poll_batch(wanted, _POLL_S)
            now = clock.monotonic()
            if not records:
                if now >= next_check and (_caught_up(source, listener) or now - last_record >= idle_timeout_s):
                    if drain.drained(idle_timeout_s, listener.assigned):
                        break
                    last_record = clock.monotonic()
                    next_check = last_record + idle_timeout_s
                continue
            last_record = now
            if not _replay_batch(records, sink, source, target_topic, reason, max_records, summary):
                break
    finally:
        source.close()
        sink.close()
    return summary


def _replay_batch(
    records: list[ConsumedRecord],
    sink: MessageSink,
    source: MessageSource,
    target_topic: str,
    reason: str | None,
    max_records: int | None,
    summary: ReplaySummary,
) -> bool:
    """Publish one batch and commit what it finished; False when replaying must stop."""
    outcomes: dict[int, DeliveryError | None] = {}
    handled: list[ConsumedRecord] = []
    for index, record in enumerate(records):
        if max_records is not None and summary.replayed + len(outcomes) >= max_records:
            break  # left uncommitted: the next replay starts here
        handled.append(record)
        if reason is not None and reason_of(record) != reason:
            continue

        def delivered(error: DeliveryError | None, index: int = index) -> None:
            outcomes[index] = error

        outcomes[index] = DeliveryError("not acknowledged in time")
        while True:
            try:
                sink.publish(target_topic, record.key, record.value, replay_headers(record), delivered)
                break
            except SinkFull:
                sink.poll(0.05)
    sink.flush(_FLUSH_TIMEOUT_S)
    commit: dict[TopicPartition, int] = {}
    blocked: set[TopicPartition] = set()
    for index, record in enumerate(handled):
        partition = TopicPartition(record.topic, record.partition)
        if partition in blocked:
            continue
        error = outcomes.get(index)
        if error is not None:
            blocked.add(partition)  # never commit past a record that was not re-published
            summary.failed += 1
            summary.last_error = str(error)
            continue
        commit[partition] = record.offset + 1
        summary.examined += 1
        if index in outcomes:
            summary.replayed += 1
        else:
            summary.skipped += 1
    if commit:
        source.commit(commit)
    return not blocked and len(handled) == len(records)
