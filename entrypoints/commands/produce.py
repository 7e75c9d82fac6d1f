"""``pipeline produce``: the data generator, publishing user-login records to Kafka."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterator

from application.errors import BrokerUnavailable, NotAuthorized
from application.producing import publish_all
from entrypoints.config import Settings
from entrypoints.container import build_container
from entrypoints.errors import EnvironmentProblem
from entrypoints.progress import Progress
from entrypoints.signals import GracefulStop

log = logging.getLogger(__name__)

DEFAULT_COUNT = 10_000


def run(args: argparse.Namespace, settings: Settings) -> int:
    count = None if args.forever else (args.count or DEFAULT_COUNT)
    topic = args.topic or settings.input_topic
    container = build_container(settings)
    generator = container.login_generator(invalid_ratio=args.invalid_ratio, seed=args.seed)
    generated = 0
    defects: Counter[str] = Counter()

    def records() -> Iterator[tuple[bytes | None, bytes]]:
        nonlocal generated
        for record in generator.records(count):
            generated += 1
            if record.expected_reason is not None:
                defects[record.expected_reason] += 1
            yield record.key, record.value

    sink = container.sink()
    stop = GracefulStop(
        stopping="sending no more records; waiting for the ones sent to be acknowledged",
        abandoned="records not yet acknowledged may be lost",
    ).install()
    if settings.broker_client == "memory":
        log.warning(
            "BROKER_CLIENT=memory: the records go to this process's embedded broker and vanish when it exits "
            "(set BROKER_CLIENT=confluent or kafka-python to publish to Kafka)"
        )
    with Progress(f"producing to {topic}", lambda: generated, count):
        summary = publish_all(
            records(),
            sink,
            topic,
            records_per_second=args.rate or None,
            stop=stop.event,
            timeout_s=settings.broker_wait_timeout_s,
        )
    if not summary.gave_up:
        sink.close()  # when it gave up, closing would wait once more for what will not come
    invalid = sum(defects.values())
    rate = summary.sent / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    print(
        f"sent {summary.sent:,} records to {topic} in {summary.elapsed_s:.1f}s ({rate:,.0f}/s): "
        f"{summary.acknowledged:,} acknowledged, {summary.failed:,} failed; "
        f"{invalid:,} defective"
        + (f" ({invalid / max(summary.sent, 1):.1%}: " if invalid else "")
        + ", ".join(f"{reason} {n}" for reason, n in defects.most_common())
        + (")" if invalid else ""),
        file=sys.stderr,
    )
    if summary.gave_up:
        cause = sink.problem()  # what the client knows: a refused login, a TLS failure, a missing ACL
        if isinstance(cause, NotAuthorized):
            raise cause
        check = (
            cause.summary()
            if isinstance(cause, BrokerUnavailable)
            else ("check KAFKA_BOOTSTRAP_SERVERS and that the cluster is up")
        )
        raise EnvironmentProblem(
            f"no acknowledgement for {settings.broker_wait_timeout_s:g}s (BROKER_WAIT_TIMEOUT), giving up with "
            f"{summary.sent - summary.acknowledged:,} of {summary.sent:,} record(s) not acknowledged"
            + (f" (last error: {summary.last_error})" if summary.last_error else "")
            + f"; {check}"
        )
    if summary.failed:
        print(f"pipeline: {summary.failed} record(s) not delivered: {summary.last_error}", file=sys.stderr)
        return 1
    return 0
