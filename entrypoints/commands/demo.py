"""``pipeline demo``: the whole job on the embedded broker, with a summary a newcomer can read."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from application.dlq_headers import ERROR, REASON
from application.messages import TopicPartition, header_value
from application.stats import PipelineStats
from entrypoints.config import Settings
from entrypoints.container import TRACING_FLUSH_TIMEOUT_S, build_container
from entrypoints.heap import prepare_for_record_loop
from entrypoints.progress import Progress

# Memory stays flat whatever --count is: the input is generated as it is read, FEED_AHEAD records per partition at
# a time, and the embedded broker keeps only the last records of each partition (up to twice as many between
# trims): of the input, more than the pipeline may still have to read again (MAX_IN_FLIGHT defaults to 20,000 in
# all); of the output and the DLQ, which nobody reads here, a few for the summary's examples.
FEED_AHEAD = 2_000
INPUT_RETAINED = 25_000
OUTPUT_RETAINED = 1_000


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = dataclasses.replace(settings, broker_client="memory")
    container = build_container(settings)
    broker = container.memory_broker()
    for topic in (settings.input_topic, settings.output_topic, settings.dlq_topic):
        broker.create_topic(topic, settings.topic_partitions)
    broker.retain(settings.input_topic, INPUT_RETAINED)
    broker.retain(settings.output_topic, OUTPUT_RETAINED)
    broker.retain(settings.dlq_topic, OUTPUT_RETAINED)
    generated = ((record.key, record.value) for record in container.login_generator(seed=args.seed).records(args.count))
    broker.feed(settings.input_topic, generated, ahead=FEED_AHEAD)

    pipeline = container.pipeline()
    prepare_for_record_loop()
    started = time.perf_counter()
    with Progress("processing", lambda: pipeline.stats.consumed, args.count):
        stats = pipeline.run(max_messages=args.count, idle_timeout_s=5.0)
    elapsed = time.perf_counter() - started
    container.tracer().shutdown(TRACING_FLUSH_TIMEOUT_S)
    generation = min(broker.feed_seconds(settings.input_topic), elapsed)
    processing = elapsed - generation

    summary = {
        "consumed": stats.consumed,
        "processed": stats.processed,
        "dead_lettered": dict(sorted(stats.dead_lettered.items())),
        "generation_s": round(generation, 3),
        "processing_s": round(processing, 3),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(stats.consumed / processing, 1) if processing > 0 else 0.0,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(_readable(summary, stats, args))
    outputs = broker.read(TopicPartition(settings.output_topic, 0), 0, 1)  # the oldest one still retained
    dead_letters = broker.read(TopicPartition(settings.dlq_topic, 0), 0, 1)
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
        f"  generation      {summary['generation_s']:>12} s  (making up the input records, as they are read)",
        f"  processing      {summary['processing_s']:>12} s  (the pipeline: consume, validate, publish, commit)",
        f"  elapsed         {summary['elapsed_s']:>12} s  (both)",
        f"  throughput      {summary['records_per_s']:>12,} records/s  (processed or dead-lettered per processing s)",
    ]
    return "\n".join(lines)
