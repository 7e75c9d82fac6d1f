"""``pipeline topics ensure``: create the input, output and DLQ topics if missing; never alter one."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from application.errors import BrokerUnavailable
from application.loop import OutageReport
from application.ports import Clock, TopicAdmin, TopicReport, TopicSpec
from entrypoints.config import Settings
from entrypoints.container import build_container
from entrypoints.signals import GracefulStop

log = logging.getLogger(__name__)


# What a dead letter may add to the record it carries: the x-dlq-* headers (about 1.5 KiB at most) and framing.
HEADROOM_BYTES = 16 * 1024


def topic_specs(settings: Settings, input_limit: int | None = None) -> list[TopicSpec]:
    """The input topic, then the output and the DLQ, which take anything the input can (``input_limit``)."""
    wider = None if input_limit is None else input_limit + HEADROOM_BYTES
    partitions, replication = settings.topic_partitions, settings.topic_replication_factor
    return [
        TopicSpec(settings.input_topic, partitions, replication),
        TopicSpec(settings.output_topic, partitions, replication, wider),
        TopicSpec(settings.dlq_topic, partitions, replication, wider),
    ]


def _ensure(admin: TopicAdmin, settings: Settings) -> list[TopicReport]:
    """The input topic first: the others are created with room for anything it holds."""
    first = topic_specs(settings)[0]
    reports = admin.ensure_topics([first])
    limit = admin.max_message_bytes([settings.input_topic]).get(settings.input_topic)
    return reports + admin.ensure_topics(topic_specs(settings, limit)[1:])


def message_limits(admin: TopicAdmin, settings: Settings) -> dict[str, int]:
    """The input topic's and the DLQ's max.message.bytes, as far as they can be read (none on failure)."""
    try:
        return admin.max_message_bytes([settings.input_topic, settings.dlq_topic])
    except BrokerUnavailable as error:
        log.warning("cannot read the topics' max.message.bytes; the producer keeps its own limit: %s", error)
        return {}


def producer_limit(input_limit: int) -> int:
    """What the producer must let through so that a dead letter of the input's largest record fits."""
    return input_limit + HEADROOM_BYTES


def ensure_topics(
    admin: TopicAdmin,
    settings: Settings,
    stop: threading.Event | None = None,
    *,
    give_up_after_s: float | None = None,
    clock: Clock | None = None,
) -> list[TopicReport]:
    """Retry with backoff while the cluster cannot be used (still starting, refusing the login ...).

    Until ``stop`` is set, or ``give_up_after_s`` has passed; then the last BrokerUnavailable is raised.
    The cause is logged once, then at most once a minute.
    """
    clock = clock or Clock()
    outage = OutageReport(clock)
    started = clock.monotonic()
    delay = 1.0
    first = True
    while True:
        try:
            return _ensure(admin, settings)
        except BrokerUnavailable as error:
            give_up = give_up_after_s is not None and clock.monotonic() - started + delay > give_up_after_s
            if stop is None or give_up:
                raise
            outage.down(error, new_outage=first)
            first = False
            if stop.wait(delay):
                raise
            delay = min(delay * 2, 30.0)


def report(reports: list[TopicReport]) -> None:
    for entry in reports:
        line = f"{entry.name}: {entry.status} ({entry.detail})"
        if entry.status == "mismatch":
            log.warning("topic %s left as it is: %s", entry.name, entry.detail)
            print(line + " - left as it is", file=sys.stderr)
        else:
            print(line)


def run(args: argparse.Namespace, settings: Settings) -> int:
    admin = build_container(settings).admin()
    stop = GracefulStop().install()
    try:
        report(ensure_topics(admin, settings, stop.event, give_up_after_s=settings.broker_wait_timeout_s))
    except BrokerUnavailable as error:
        if stop.event.is_set():
            return 0
        waited = settings.broker_wait_timeout_s
        print(f"pipeline: {error.summary()} (gave up after {waited:g}s: BROKER_WAIT_TIMEOUT)", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0
