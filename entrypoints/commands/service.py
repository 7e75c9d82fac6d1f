"""``pipeline run``: the long-running service."""

from __future__ import annotations

import argparse
import logging

from entrypoints.config import Settings
from entrypoints.container import build_container
from entrypoints.signals import GracefulStop

log = logging.getLogger(__name__)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.enable_auto_commit:
        log.warning("ENABLE_AUTO_COMMIT=true ignored: offsets are committed only after output or DLQ delivery")
    container = build_container(settings)
    stop = GracefulStop().install()
    pipeline = container.pipeline()
    log.info(
        "starting: %s -> %s / %s, group %s, client %s, %s",
        settings.input_topic, settings.output_topic, settings.dlq_topic,
        settings.consumer_group, settings.broker_client, settings.processing_guarantee,
    )  # fmt: skip
    pipeline.run(stop.event, max_messages=args.max_messages, idle_timeout_s=args.idle_timeout)
    return 0
