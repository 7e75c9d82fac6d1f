"""The job written with Quix Streams: one StreamingDataFrame, dynamic output topic, at-least-once checkpoints.

Quix commits a checkpoint every ``commit_interval`` (1 s here) after flushing
its producer, so an offset is committed only once the records produced for it
are acknowledged. Run from its own venv with PYTHONPATH=<repo>:
``python -m bench.peers.quixstreams_peer`` (settings from the environment, as the service).
"""

from __future__ import annotations

import sys
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models.serializers import SerializationContext, Serializer

from bench.peers.rules import PRODUCER, PeerSettings, ProcessedAt, Routed, Rules


class RoutedValue(Serializer):
    """Writes a routed record's bytes as they are (a processed event's JSON, or the original dead letter)."""

    def __call__(self, value: Routed, ctx: SerializationContext) -> bytes:
        return value.value or b""


def build(settings: PeerSettings) -> Application:
    app = Application(
        broker_address=settings.bootstrap,
        consumer_group=settings.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        processing_guarantee="at-least-once",
        producer_extra_config=PRODUCER.librdkafka(),
        loglevel="WARNING",
        auto_create_topics=False,
        use_changelog_topics=False,
    )
    source = app.topic(settings.input_topic, value_deserializer="bytes", key_deserializer="bytes")
    output = app.topic(settings.output_topic, value_serializer=RoutedValue(), key_serializer="bytes")
    dlq = app.topic(settings.dlq_topic, value_serializer=RoutedValue(), key_serializer="bytes")
    rules = Rules()
    clock = ProcessedAt()

    def route(value: bytes | None, key: bytes | None, _timestamp: int, headers: Any) -> Routed:
        context = message_context()
        return rules.route(context.topic, context.partition, context.offset, key, value, headers, clock.now())

    sdf = app.dataframe(source)
    sdf = sdf.apply(route, metadata=True)
    sdf = sdf.set_headers(lambda routed, _key, _timestamp, _headers: routed.headers)
    sdf.to_topic(
        lambda routed, _key, _timestamp, _headers: dlq if routed.dead_letter else output,
        key=lambda routed: routed.key,
    )
    return app


def main() -> int:
    build(PeerSettings.from_env()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
