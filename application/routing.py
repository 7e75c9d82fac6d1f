"""Where one consumed record goes, and in what form: shared by both delivery guarantees."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from application import dead_letter
from application.logs import ThrottledWarning
from application.messages import ConsumedRecord, Headers
from application.settings import PipelineSettings
from domain.outcomes import Processed
from domain.processing import LoginEventProcessor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Routed:
    """One outgoing record; ``reason`` is None for the output topic, the DLQ reason otherwise."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str | None


class RecordRouter:
    def __init__(self, processor: LoginEventProcessor, settings: PipelineSettings) -> None:
        self._processor = processor
        self._output_topic = settings.output_topic
        self._dlq_topic = settings.dlq_topic
        self._group = settings.consumer_group
        self._processing_error = ThrottledWarning(log)

    def route(self, record: ConsumedRecord, processed_at: str) -> Routed:
        """Never raises: an unexpected exception dead-letters this record as ``processing_error``."""
        try:
            outcome = self._processor.process(record.value, processed_at)
            if isinstance(outcome, Processed):
                event = outcome.event
                key = record.key
                if key is None and event.user_id is not None:
                    key = event.user_id.encode()
                return Routed(self._output_topic, key, self._processor.encode(event), record.headers, None)
            return self.dead_letter(record, outcome.reason.value, outcome.detail, processed_at)
        except Exception as error:  # noqa: BLE001 - one bad record must not stall its partition
            self._processing_error(
                "processing error at %s[%d]@%d, dead-lettering: %s: %s",
                record.topic, record.partition, record.offset, type(error).__name__, error, record=record,
            )  # fmt: skip
            kind = type(error)
            return self.dead_letter(
                record,
                dead_letter.PROCESSING_ERROR,
                f"{kind.__name__}: {error}",
                processed_at,
                exception_class=f"{kind.__module__}.{kind.__qualname__}",
            )

    def dead_letter(
        self, record: ConsumedRecord, reason: str, error: str, failed_at: str, *, exception_class: str | None = None
    ) -> Routed:
        headers = dead_letter.dead_letter_headers(
            record, reason, error, failed_at, group=self._group, exception_class=exception_class
        )
        return Routed(self._dlq_topic, record.key, record.value, headers, reason)
