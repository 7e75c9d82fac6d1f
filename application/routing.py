"""Where one consumed record goes, and in what form: shared by both delivery guarantees."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from application import dlq_headers
from application.logs import ThrottledWarning
from application.messages import ConsumedRecord, Headers
from application.ports import Tracer
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
            return self._dead_letter(record, outcome.reason.value, outcome.detail, processed_at)
        except Exception as error:  # noqa: BLE001 - one bad record must not stall its partition
            self._processing_error(
                "processing error at %s[%d]@%d, dead-lettering: %s: %s",
                record.topic, record.partition, record.offset, type(error).__name__, error, record=record,
            )  # fmt: skip
            kind = type(error)
            return self._dead_letter(
                record,
                dlq_headers.PROCESSING_ERROR,
                f"{kind.__name__}: {error}",
                processed_at,
                exception_class=f"{kind.__module__}.{kind.__qualname__}",
            )

    def _dead_letter(
        self, record: ConsumedRecord, reason: str, error: str, failed_at: str, *, exception_class: str | None = None
    ) -> Routed:
        headers = dlq_headers.dead_letter_headers(
            record, reason, error, failed_at, group=self._group, exception_class=exception_class
        )
        return Routed(self._dlq_topic, record.key, record.value, headers, reason)

    # The pipelines call this for a record whose output publish failed for good; ``route`` calls
    # ``_dead_letter`` itself, so that a subclass wrapping both sees each record once.
    dead_letter = _dead_letter


class TracingRouter(RecordRouter):
    """Routes as RecordRouter does, inside a span per record whose context the outgoing record carries.

    Used only when tracing is on (``make_router``): the untraced path stays as it was.
    """

    def __init__(self, processor: LoginEventProcessor, settings: PipelineSettings, tracer: Tracer) -> None:
        super().__init__(processor, settings)
        self._tracer = tracer
        self._fields = tracer.fields

    def route(self, record: ConsumedRecord, processed_at: str) -> Routed:
        span = self._tracer.start(record)
        routed = super().route(record, processed_at)
        error = None
        if routed.reason == dlq_headers.PROCESSING_ERROR:
            error = _header_text(routed.headers, dlq_headers.ERROR)
        self._carry(routed, span.end(routed.reason, error))
        return routed

    def dead_letter(
        self, record: ConsumedRecord, reason: str, error: str, failed_at: str, *, exception_class: str | None = None
    ) -> Routed:
        # A second span for the record, beside its first (same parent): its output could not be written.
        span = self._tracer.start(record)
        routed = super()._dead_letter(record, reason, error, failed_at, exception_class=exception_class)
        self._carry(routed, span.end(reason, error))
        return routed

    def _carry(self, routed: Routed, context: list[tuple[str, bytes]]) -> None:
        fields = self._fields
        headers = [header for header in routed.headers if header[0] not in fields]
        headers.extend(context)
        routed.headers = headers


def _header_text(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def make_router(processor: LoginEventProcessor, settings: PipelineSettings, tracer: Tracer | None) -> RecordRouter:
    """The traced router only when tracing is on: tracing off adds nothing to the per-record path."""
    if tracer is not None and tracer.enabled:
        return TracingRouter(processor, settings, tracer)
    return RecordRouter(processor, settings)
