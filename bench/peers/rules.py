"""The project's own rules, as both peers apply them: same domain service, same DLQ format, same keys.

Imports only ``domain``, ``application`` (standard library) and
``adapters.json_codec`` (orjson), so it runs in the peers' virtual
environments with PYTHONPATH set to the repository.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.json_codec import OrjsonCodec
from application.dlq_headers import PROCESSING_ERROR, dead_letter_headers
from application.messages import ConsumedRecord
from domain.model import format_processed_at
from domain.outcomes import Processed
from domain.processing import LoginEventProcessor


@dataclass(frozen=True, slots=True)
class ProducerReliability:
    """The project's reliability settings (adapters/confluent/sink.py PRODUCER_DEFAULTS), as each client spells them."""

    acks: str = "all"
    idempotence: bool = True
    linger_ms: int = 2
    compression: str = "lz4"
    batch_bytes: int = 1_000_000  # librdkafka's batch.size default, which the project keeps

    def librdkafka(self) -> dict[str, object]:
        """As librdkafka configuration properties (Quix Streams' ``producer_extra_config``)."""
        return {
            "acks": self.acks,
            "enable.idempotence": self.idempotence,
            "linger.ms": self.linger_ms,
            "compression.type": self.compression,
            "batch.size": self.batch_bytes,
        }

    def aiokafka(self) -> dict[str, object]:
        """As aiokafka producer keyword arguments (FastStream's ``KafkaBroker``)."""
        return {
            "acks": self.acks,
            "enable_idempotence": self.idempotence,
            "linger_ms": self.linger_ms,
            "compression_type": self.compression,
            "max_batch_size": self.batch_bytes,
        }


PRODUCER = ProducerReliability()


@dataclass(frozen=True, slots=True)
class PeerSettings:
    bootstrap: str
    input_topic: str
    output_topic: str
    dlq_topic: str
    group: str

    @classmethod
    def from_env(cls) -> PeerSettings:
        env = os.environ
        return cls(
            env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            env["INPUT_TOPIC"],
            env["OUTPUT_TOPIC"],
            env["DLQ_TOPIC"],
            env["CONSUMER_GROUP"],
        )


@dataclass(slots=True)
class Routed:
    """One outgoing record: to the DLQ or the output topic, with its key, value and headers."""

    dead_letter: bool
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Rules:
    """``RecordRouter``'s behaviour, on the domain's ``LoginEventProcessor`` with the orjson codec."""

    def __init__(self) -> None:
        self._processor = LoginEventProcessor(codec=OrjsonCodec())

    def route(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        processed_at: str,
    ) -> Routed:
        processor = self._processor
        try:
            outcome = processor.process(value, processed_at)
            if isinstance(outcome, Processed):
                event = outcome.event
                if key is None and event.user_id is not None:
                    key = event.user_id.encode()
                return Routed(False, key, processor.encode(event), list(headers or ()))
            reason, detail = outcome.reason.value, outcome.detail
        except Exception as error:  # noqa: BLE001 - as the service: one bad record must not stall its partition
            reason, detail = PROCESSING_ERROR, f"{type(error).__name__}: {error}"
        record = ConsumedRecord(topic, partition, offset, key, value, tuple(headers or ()))
        return Routed(True, key, value, dead_letter_headers(record, reason, detail, processed_at))


class ProcessedAt:
    """``processed_at`` text, formatted at most once per millisecond (its precision)."""

    def __init__(self) -> None:
        self._millisecond = -1
        self._text = ""

    def now(self) -> str:
        now = time.time()
        millisecond = int(now * 1000)
        if millisecond != self._millisecond:
            self._millisecond = millisecond
            self._text = format_processed_at(now)
        return self._text
