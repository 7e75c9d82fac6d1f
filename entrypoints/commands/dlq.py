"""``pipeline dlq inspect`` and ``pipeline dlq replay``: see what failed, and send it back once fixed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from application import dead_letter
from application.dlq import inspect_dead_letters, reason_of, replay_dead_letters
from application.messages import header_value
from entrypoints.config import Settings
from entrypoints.container import build_container
from entrypoints.signals import GracefulStop

_SHOWN_BYTES = 300


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.dlq_command == "inspect":
        return inspect(args, settings)
    return replay(args, settings)


def inspect(args: argparse.Namespace, settings: Settings) -> int:
    container = build_container(settings)
    # A group of its own that never commits: inspecting moves nobody's position.
    source = container.source(group_id=f"{settings.consumer_group}.dlq-inspect.{datetime.now(UTC):%Y%m%d%H%M%S%f}")
    report = inspect_dead_letters(source, settings.dlq_topic, examples=args.limit)
    print(f"{settings.dlq_topic}: {report.total:,} dead letter(s)")
    width = max((len(reason) for reason in report.by_reason), default=0)
    for reason, count in report.by_reason.most_common():
        print(f"  {reason:<{width}}  {count:>10,}")
    if report.newest:
        print(f"\nNewest {len(report.newest)}:")
    for record in report.newest:
        when = (
            datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
            if record.timestamp_ms
            else "?"
        )
        error = (header_value(record.headers, dead_letter.ERROR) or b"").decode("utf-8", "replace")
        origin = (
            f"{(header_value(record.headers, dead_letter.SOURCE_TOPIC) or b'?').decode()}"
            f"[{(header_value(record.headers, dead_letter.SOURCE_PARTITION) or b'?').decode()}]"
            f"@{(header_value(record.headers, dead_letter.SOURCE_OFFSET) or b'?').decode()}"
        )
        value = (record.value or b"")[:_SHOWN_BYTES].decode("utf-8", "replace")
        print(f"- {when} {reason_of(record)} ({origin}): {error}\n    {value}")
    return 0


def replay(args: argparse.Namespace, settings: Settings) -> int:
    container = build_container(settings)
    target = args.to or settings.input_topic
    source = container.source(group_id=f"{settings.consumer_group}.dlq-replay")
    stop = GracefulStop().install()
    summary = replay_dead_letters(
        source,
        container.sink(),
        settings.dlq_topic,
        target,
        reason=args.reason,
        max_records=args.max,
        records_per_second=settings.max_records_per_second or None,
        stop=stop.event,
    )
    print(
        f"replayed {summary.replayed:,} record(s) from {settings.dlq_topic} to {target}"
        f" ({summary.skipped:,} skipped by --reason, {summary.failed:,} failed)",
        file=sys.stderr,
    )
    if summary.failed:
        print(
            f"pipeline: replay stopped at a record that could not be published: {summary.last_error}", file=sys.stderr
        )
        return 1
    return 0
