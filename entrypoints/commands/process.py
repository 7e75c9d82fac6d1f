"""``pipeline process``: the same pipeline over JSON-lines files, for offline checks and backfills.

Both outputs are written beside their targets and renamed into place only once
the whole input is done: a run that fails (a bad path, a full disk, Ctrl-C)
leaves the files that were there before exactly as they were.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from pathlib import Path

from entrypoints.config import Settings
from entrypoints.container import TRACING_FLUSH_TIMEOUT_S, build_container
from entrypoints.errors import EnvironmentProblem, UsageError
from entrypoints.progress import Progress


def run(args: argparse.Namespace, settings: Settings) -> int:
    source_path = Path("/dev/stdin") if args.input == "-" else Path(args.input)
    if args.input != "-" and not source_path.is_file():
        raise UsageError(f"input file {args.input} does not exist or is not a file")
    targets = [Path(args.out).resolve(), Path(args.dlq).resolve()]
    if targets[0] == targets[1] or (args.input != "-" and source_path.resolve() in targets):
        raise UsageError("INPUT, --out and --dlq must be three different files")
    try:
        source_path.open("rb").close()
    except OSError as error:
        raise EnvironmentProblem(f"cannot read {args.input}: {error.strerror}") from None

    settings = dataclasses.replace(settings, broker_client="memory", commit_interval_ms=0, poll_timeout_ms=0)
    container = build_container(settings)
    outputs = [container.output_file(args.out), container.output_file(args.dlq)]
    failed = threading.Event()  # a write failed: stop reading, the run has failed
    try:
        try:
            output, dead_letters = (target.open() for target in outputs)
        except OSError as error:
            raise UsageError(f"cannot write {error.filename}: {error.strerror}") from None
        source = container.file_source(source_path)
        sink = container.file_sink(
            output,
            dead_letters,
            names={settings.output_topic: args.out, settings.dlq_topic: args.dlq},
            on_failure=failed.set,
        )
        pipeline = container.pipeline(source=source, sink=sink)
        try:
            with Progress("processing", lambda: pipeline.stats.consumed):
                stats = pipeline.run(failed, idle_timeout_s=0.0)
            container.tracer().shutdown(TRACING_FLUSH_TIMEOUT_S)
            if sink.error is not None:
                raise sink.error
            for target in outputs:
                target.finish()
            for target in outputs:
                target.commit()
        except OSError as error:
            raise EnvironmentProblem(
                f"cannot write {error.filename}: {error.strerror} (files that existed before were left as they were)"
            ) from None
    finally:
        for target in outputs:
            target.discard()
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
