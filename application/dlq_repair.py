"""Dead-letter tools: look at what failed, and send it back once the cause is fixed."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from application import dlq_headers
from application.loop import DrainCheck
from application.messages import ConsumedRecord, DeliveryError, TopicPartition, header_value
from application.ports import Clock, GroupOffsets, MessageSink, MessageSource
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
    return (header_value(record.headers, dlq_headers.REASON) or b"unknown").decode("utf-8", "replace")


def replay_group(consumer_group: str, reason: str | None = None) -> str:
    """The consumer group that holds the position of replays with this filter (None: unfiltered)."""
    return f"{consumer_group}.dlq-replay" if reason is None else f"{consumer_group}.dlq-replay.{reason}"


@dataclass(frozen=True)
class ReplayPositions:
    """Where each replay filter of one DLQ stands: the next offset per partition its group committed.

    A dead letter counts as replayed once the unfiltered replay's position or its own reason's is
    past it. Each replay skips such records and moves only its own position, so a ``--reason``
    replay never hides other reasons' records from anyone, and no record goes out twice.
    """

    unfiltered: Mapping[TopicPartition, int] = field(default_factory=dict)
    by_reason: Mapping[str, Mapping[TopicPartition, int]] = field(default_factory=dict)

    def replayed(self, record: ConsumedRecord, reason: str) -> bool:
        partition = TopicPartition(record.topic, record.partition)
        own = self.by_reason.get(reason, {})
        return record.offset < max(self.unfiltered.get(partition, 0), own.get(partition, 0))


def read_positions(groups: GroupOffsets, consumer_group: str, dlq_topic: str) -> ReplayPositions:
    """Every replay filter's position on ``dlq_topic``; raises BrokerUnavailable."""
    names = {reason: replay_group(consumer_group, reason) for reason in dlq_headers.REASONS}
    found = groups.committed([replay_group(consumer_group), *names.values()], dlq_topic)
    return ReplayPositions(
        unfiltered=found.get(replay_group(consumer_group), {}),
        by_reason={reason: found.get(name, {}) for reason, name in names.items()},
    )


def forget_positions(groups: GroupOffsets, consumer_group: str) -> None:
    """Delete the position of every replay filter, so the next replays start from the DLQ's beginning.

    Raises GroupInUse while a replay is running, BrokerUnavailable.
    """
    groups.delete_groups([replay_group(consumer_group, reason) for reason in (None, *dlq_headers.REASONS)])


@dataclass
class DeadLetterReport:
    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    not_replayed: Counter[str] = field(default_factory=Counter)  # per reason, what no replay has re-published
    newest: list[ConsumedRecord] = field(default_factory=list)


def inspect_dead_letters(
    source: MessageSource,
    dlq_topic: str,
    *,
    examples: int,
    positions: ReplayPositions | None = None,
    idle_timeout_s: float = 3.0,
    clock: Clock | None = None,
) -> DeadLetterReport:
    """Read the whole DLQ without committing anything; memory holds only the counts and ``examples`` records."""
    positions = positions or ReplayPositions()
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
                reason = reason_of(record)
                report.by_reason[reason] += 1
                if not positions.replayed(record, reason):
                    report.not_replayed[reason] += 1
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
    already_replayed: int = 0  # by the replay of another filter (see ReplayPositions)
    failed: int = 0
    last_error: str = ""


def replay_headers(record: ConsumedRecord) -> list[tuple[str, bytes]]:
    """The record's own headers, without the DLQ's, plus how many times it has been replayed."""
    previous = header_value(record.headers, dlq_headers.REPLAY_COUNT)
    count = int(previous) + 1 if previous and previous.isdigit() else 1
    headers = [
        (k, v) for k, v in dlq_headers.without_dead_letter_headers(record.headers) if k != dlq_headers.REPLAY_COUNT
    ]
    headers.append((dlq_headers.REPLAY_COUNT, str(count).encode()))
    return headers


def replay_dead_letters(
    source: MessageSource,
    sink: MessageSink,
    dlq_topic: str,
    target_topic: str,
    *,
    idle_timeout_s: float = 3.0,
    reason: str | None = None,
    positions: ReplayPositions | None = None,
    max_records: int | None = None,
    records_per_second: float | None = None,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
) -> ReplaySummary:
    """Re-publish dead letters batch by batch, committing each partition only up to what the broker acknowledged.

    Stopping (or ``max_records``) between batches leaves nothing half-done, so a
    restarted replay continues exactly where this one stopped. ``source`` reads in the group of
    ``reason``'s filter (``replay_group``); records other filters' replays already re-published,
    per ``positions`` (read when the replay starts), are skipped. It stops by itself once caught up,
    or after ``idle_timeout_s`` without a record, and then only if the input is drained (see
    DrainCheck): a replay killed a moment ago may still hold partitions of the group.
    """
    clock = clock or Clock()
    positions = positions or ReplayPositions()
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
            if not _replay_batch(records, sink, source, target_topic, reason, positions, max_records, summary):
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
    positions: ReplayPositions,
    max_records: int | None,
    summary: ReplaySummary,
) -> bool:
    """Publish one batch and commit what it finished; False when replaying must stop."""
    outcomes: dict[int, DeliveryError | None] = {}
    handled: list[ConsumedRecord] = []
    elsewhere: set[int] = set()
    for index, record in enumerate(records):
        if max_records is not None and summary.replayed + len(outcomes) >= max_records:
            break  # left uncommitted: the next replay starts here
        handled.append(record)
        record_reason = reason_of(record)
        if reason is not None and record_reason != reason:
            continue
        if positions.replayed(record, record_reason):
            elsewhere.add(index)
            continue

        def delivered(error: DeliveryError | None, index: int = index) -> None:
            outcomes[index] = error

        outcomes[index] = DeliveryError("not acknowledged in time")
        sink.publish_when_room(target_topic, record.key, record.value, replay_headers(record), delivered)
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
        elif index in elsewhere:
            summary.already_replayed += 1
        else:
            summary.skipped += 1
    if commit:
        source.commit(commit)
    return not blocked and len(handled) == len(records)
