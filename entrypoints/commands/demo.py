"""``pipeline demo``: the whole job on the embedded broker, with a summary a newcomer can read."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from application.dead_letter import ERROR, REASON
from application.messages import header_value
from application.stats import PipelineStats
from entrypoints.config import Settings
from entrypoints.container import TRACING_FLUSH_TIMEOUT_S, build_container
from entrypoints.progress import Progress


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = dataclasses.replace(settings, broker_client="memory")
    container = build_container(settings)
    broker = container.memory_broker()
    for topic in (settings.input_topic, settings.output_topic, settings.dlq_topic):
        broker.create_topic(topic, settings.topic_partitions)
    for record in container.login_generator(seed=args.seed).records(args.count):
        broker.append(settings.input_topic, record.key, record.value)

    pipeline = container.pipeline()
    started = time.perf_counter()
    with Progress("processing", lambda: pipeline.stats.consumed, args.count):
        stats = pipeline.run(max_messages=args.count, idle_timeout_s=5.0)
    elapsed = time.perf_counter() - started
    container.tracer().shutdown(TRACING_FLUSH_TIMEOUT_S)

    summary = {
        "consumed": stats.consumed,
        "processed": stats.processed,
        "dead_lettered": dict(sorted(stats.dead_lettered.items())),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(stats.consumed / elapsed, 1) if elapsed > 0 else 0.0,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    outputs = broker.records(settings.output_topic)
    dead_letters = broker.records(settings.dlq_topic)
    print(_readable(summary, stats, args))
    if outputs:
        example = (outputs[0].value or b"").decode()
        print(f"\nA processed record ({settings.output_topic}):\n  {example}")
    if dead_letters:
        first = dead_letters[0]
        reason = (header_value(first.headers, REASON) or b"").decode()
        error = (header_value(first.headers, ERROR) or b"").decode()
        original = (first.value or b"").decode("utf-8", "replace")
        print(f"\nA dead letter ({settings.dlq_topic}): {reason}: {error}\n  {original}")
    return 0


def _readable(summary: dict[str, object], stats: PipelineStats, args: argparse.Namespace) -> str:
    dead_total = sum(stats.dead_lettered.values())
    lines = [
        "Pipeline demo on the embedded in-memory broker",
        f"  generated       {args.count:>12,}  (seed {args.seed}, about 1 in 10 defective)",
        f"  consumed        {stats.consumed:>12,}",
        f"  processed       {stats.processed:>12,}",
        f"  dead-lettered   {dead_total:>12,}",
    ]
    lines += [
        f"    {reason:<22}{count:>8,}" for reason, count in sorted(stats.dead_lettered.items(), key=lambda i: -i[1])
    ]
    balanced = "yes" if stats.consumed == stats.processed + dead_total else "NO"
    lines += [
        f"  accounted for   {balanced:>12}  (consumed = processed + dead-lettered)",
        f"  elapsed         {summary['elapsed_s']:>12} s",
        f"  throughput      {summary['records_per_s']:>12,} records/s",
    ]
    return "\n".join(lines)
