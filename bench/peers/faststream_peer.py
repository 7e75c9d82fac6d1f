"""The job written with FastStream's Kafka broker (aiokafka): a batch subscriber with manual acknowledgement.

Each batch (up to 1000 records) is routed by the project's rules, every
record is published without waiting (``no_confirm=True`` returns the delivery
future), all the futures are awaited, and only then is the batch acknowledged,
which commits the consumer's position. Run from its own venv with
PYTHONPATH=<repo>: ``python -m bench.peers.faststream_peer``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from bench.peers.rules import PRODUCER, PeerSettings, ProcessedAt, Rules

BATCH = 1000


def _text_headers(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """FastStream publishes headers as a str -> str mapping (it encodes the values as UTF-8)."""
    return {name: value.decode("utf-8", "replace") for name, value in headers}


def build(settings: PeerSettings) -> FastStream:
    broker = KafkaBroker(
        settings.bootstrap,
        logger=None,  # no per-batch access log
        **PRODUCER.aiokafka(),
    )
    rules = Rules()
    clock = ProcessedAt()
    output, dlq = settings.output_topic, settings.dlq_topic

    @broker.subscriber(
        settings.input_topic,
        group_id=settings.group,
        batch=True,
        max_records=BATCH,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
    )
    async def handle(message: KafkaMessage) -> None:
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        processed_at = clock.now()
        deliveries = []
        for record in records:
            routed = rules.route(
                record.topic, record.partition, record.offset, record.key, record.value,
                list(record.headers or ()), processed_at,
            )  # fmt: skip
            deliveries.append(
                await broker.publish(
                    routed.value,
                    topic=dlq if routed.dead_letter else output,
                    key=routed.key,
                    headers=_text_headers(routed.headers),
                    no_confirm=True,
                )
            )
        await asyncio.gather(*deliveries)  # every record acknowledged by the broker...
        await message.ack()  # ...before the batch's offsets are committed

    return FastStream(broker)


def main() -> int:
    asyncio.run(build(PeerSettings.from_env()).run(log_level=logging.WARNING))
    return 0


if __name__ == "__main__":
    sys.exit(main())
