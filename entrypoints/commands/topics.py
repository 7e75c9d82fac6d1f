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


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(name, settings.topic_partitions, settings.topic_replication_factor)
        for name in (settings.input_topic, settings.output_topic, settings.dlq_topic)
    ]


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
            return admin.ensure_topics(topic_specs(settings))
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
