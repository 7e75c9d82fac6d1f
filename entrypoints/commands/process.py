"""``pipeline process``: the same pipeline over JSON-lines files, for offline checks and backfills."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from adapters.files import JsonLinesSink, JsonLinesSource
from application.pipeline import Pipeline
from entrypoints.config import Settings
from entrypoints.container import build_container
from entrypoints.errors import UsageError
from entrypoints.progress import Progress


def run(args: argparse.Namespace, settings: Settings) -> int:
    source_path = Path("/dev/stdin") if args.input == "-" else Path(args.input)
    if args.input != "-" and not source_path.is_file():
        raise UsageError(f"input file {args.input} does not exist or is not a file")
    targets = [Path(args.out).resolve(), Path(args.dlq).resolve()]
    if targets[0] == targets[1] or (args.input != "-" and source_path.resolve() in targets):
        raise UsageError("INPUT, --out and --dlq must be three different files")

    settings = settings.replace(broker_client="memory", commit_interval_ms=0, poll_timeout_ms=0)
    container = build_container(settings)
    pipeline_settings = settings.pipeline_settings()
    with ExitStack() as files:
        try:
            output = files.enter_context(open(args.out, "wb"))
            dead_letters = files.enter_context(open(args.dlq, "wb"))
        except OSError as error:
            raise UsageError(f"cannot write {error.filename}: {error.strerror}") from None
        source = JsonLinesSource(source_path, settings.input_topic)
        sink = JsonLinesSink(
            output, dead_letters, output_topic=pipeline_settings.output_topic, dlq_topic=pipeline_settings.dlq_topic
        )
        pipeline: Pipeline = container.pipeline(source=source, sink=sink)
        with Progress("processing", lambda: pipeline.stats.consumed):
            stats = pipeline.run(idle_timeout_s=0.0)
    rejected = sum(stats.dead_lettered.values())
    reasons = ", ".join(
        f"{reason} {count}" for reason, count in sorted(stats.dead_lettered.items(), key=lambda i: -i[1])
    )
    print(
        f"{stats.consumed} lines: {stats.processed} processed -> {args.out}, {rejected} rejected -> {args.dlq}"
        + (f" ({reasons})" if reasons else ""),
        file=sys.stderr,
    )
    return 0
