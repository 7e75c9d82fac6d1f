"""``pipeline topics ensure``: create the input, output and DLQ topics if missing; never alter one."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from application.errors import BrokerUnavailable
from application.ports import TopicAdmin, TopicReport, TopicSpec
from entrypoints.config import Settings
from entrypoints.container import build_container

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(name, settings.topic_partitions, settings.topic_replication_factor)
        for name in (settings.input_topic, settings.output_topic, settings.dlq_topic)
    ]


def ensure_topics(admin: TopicAdmin, settings: Settings, stop: threading.Event | None = None) -> list[TopicReport]:
    """Retry with backoff while the cluster is unreachable (e.g. still starting), until ``stop``."""
    delay = 1.0
    while True:
        try:
            return admin.ensure_topics(topic_specs(settings))
        except BrokerUnavailable as error:
            log.warning("cannot ensure topics yet, retrying in %.0fs: %s", delay, error)
            if stop is None or stop.wait(delay):
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
    try:
        report(admin.ensure_topics(topic_specs(settings)))
    except BrokerUnavailable as error:
        print(f"pipeline: {error}", file=sys.stderr)
        return 1
    finally:
        admin.close()
    return 0
