"""``pipeline dlq inspect`` and ``pipeline dlq replay``: see what failed, and send it back once fixed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from application import dlq_headers
from application.dlq_repair import (
    ReplayPositions,
    forget_positions,
    inspect_dead_letters,
    read_positions,
    reason_of,
    replay_dead_letters,
    replay_group,
)
from application.errors import GroupInUse
from application.messages import header_value
from entrypoints.config import Settings
from entrypoints.container import Container, build_container
from entrypoints.errors import UsageError
from entrypoints.signals import GracefulStop

_SHOWN_BYTES = 300


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.dlq_command == "inspect":
        return inspect(args, settings)
    return replay(args, settings)


def _positions(container: Container, settings: Settings, *, from_beginning: bool = False) -> ReplayPositions:
    """Every replay filter's position, after forgetting them all first with ``from_beginning``."""
    groups = container.group_offsets()
    try:
        if from_beginning:
            forget_positions(groups, settings.consumer_group)
        return read_positions(groups, settings.consumer_group, settings.dlq_topic)
    finally:
        groups.close()


def inspect(args: argparse.Namespace, settings: Settings) -> int:
    container = build_container(settings)
    positions = _positions(container, settings)  # BrokerUnavailable: reported by the CLI, like every failure
    # A group of its own that never commits: inspecting moves nobody's position.
    source = container.source(
        group_id=f"{settings.consumer_group}.dlq-inspect.{datetime.now(UTC):%Y%m%d%H%M%S%f}",
        auto_offset_reset="earliest",  # a group with no position reads the whole DLQ, whatever the service uses
    )
    report = inspect_dead_letters(source, settings.dlq_topic, examples=args.limit, positions=positions)
    pending = sum(report.not_replayed.values())
    print(f"{settings.dlq_topic}: {report.total:,} dead letter(s), {pending:,} not replayed yet")
    width = max((len(reason) for reason in report.by_reason), default=0)
    if report.by_reason:
        print(f"  {'reason':<{width}}  {'dead letters':>12}  {'not replayed':>12}")
    for reason, count in report.by_reason.most_common():
        print(f"  {reason:<{width}}  {count:>12,}  {report.not_replayed[reason]:>12,}")
    if report.newest:
        print(f"\nNewest {len(report.newest)}:")
    for record in report.newest:
        when = (
            datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
            if record.timestamp_ms
            else "?"
        )
        error = (header_value(record.headers, dlq_headers.ERROR) or b"").decode("utf-8", "replace")
        origin = (
            f"{(header_value(record.headers, dlq_headers.SOURCE_TOPIC) or b'?').decode()}"
            f"[{(header_value(record.headers, dlq_headers.SOURCE_PARTITION) or b'?').decode()}]"
            f"@{(header_value(record.headers, dlq_headers.SOURCE_OFFSET) or b'?').decode()}"
        )
        value = (record.value or b"")[:_SHOWN_BYTES].decode("utf-8", "replace")
        print(f"- {when} {reason_of(record)} ({origin}): {error}\n    {value}")
    return 0


def replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.reason is not None and args.reason not in dlq_headers.REASONS:
        raise UsageError(f"unknown --reason {args.reason!r}; the reason codes are: {', '.join(dlq_headers.REASONS)}")
    if args.from_beginning and args.reason is not None:
        raise UsageError(
            "--from-beginning starts every replay filter over, so it takes no --reason"
            " (to replay one reason's records again, use a CONSUMER_GROUP of its own)"
        )
    container = build_container(settings)
    try:
        positions = _positions(container, settings, from_beginning=args.from_beginning)
    except GroupInUse as error:
        print(f"pipeline: cannot start the replays over: {error}; stop the replay that is running", file=sys.stderr)
        return 1
    target = args.to or settings.input_topic
    source = container.source(group_id=replay_group(settings.consumer_group, args.reason), auto_offset_reset="earliest")
    stop = GracefulStop().install()
    summary = replay_dead_letters(
        source,
        container.sink(),
        settings.dlq_topic,
        target,
        reason=args.reason,
        positions=positions,
        max_records=args.max,
        records_per_second=settings.max_records_per_second or None,
        stop=stop.event,
    )
    print(
        f"replayed {summary.replayed:,} record(s) from {settings.dlq_topic} to {target}"
        f" ({summary.skipped:,} skipped by --reason, {summary.already_replayed:,} already replayed,"
        f" {summary.failed:,} failed)",
        file=sys.stderr,
    )
    if summary.failed:
        print(
            f"pipeline: replay stopped at a record that could not be published: {summary.last_error}", file=sys.stderr
        )
        return 1
    return 0
