"""The dead-letter record format: original key and value, the reason in ``x-dlq-*`` headers."""

from __future__ import annotations

from enum import StrEnum

from application.messages import ConsumedRecord, Headers
from domain.outcomes import RejectReason

REASON = "x-dlq-reason"
ERROR = "x-dlq-error"
SOURCE_TOPIC = "x-dlq-source-topic"
SOURCE_PARTITION = "x-dlq-source-partition"
SOURCE_OFFSET = "x-dlq-source-offset"
FAILED_AT = "x-dlq-failed-at"
CONSUMER_GROUP = "x-dlq-consumer-group"
SOURCE_TIMESTAMP = "x-dlq-source-timestamp"
SOURCE_TIMESTAMP_TYPE = "x-dlq-source-timestamp-type"
EXCEPTION_CLASS = "x-dlq-exception-class"
REPLAY_COUNT = "x-dlq-replay-count"
DLQ_HEADERS = (
    REASON, ERROR, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, FAILED_AT,
    CONSUMER_GROUP, SOURCE_TIMESTAMP, SOURCE_TIMESTAMP_TYPE, EXCEPTION_CLASS,
)  # fmt: skip


class PipelineReason(StrEnum):
    """Reasons that come from the pipeline rather than from the domain's rules (``RejectReason``).

    Stable codes, as RejectReason's: they travel in DLQ headers and metric labels, so never rename one.
    """

    PUBLISH_FAILED = "publish_failed"
    PROCESSING_ERROR = "processing_error"


# Every reason code a dead letter can carry (``dlq replay --reason`` accepts exactly these): the two enumerations.
REASONS: tuple[str, ...] = tuple(reason.value for reason in (*RejectReason, *PipelineReason))
# The pipeline's two codes as plain strings, for the callers that route records by them.
PUBLISH_FAILED: str = PipelineReason.PUBLISH_FAILED.value
PROCESSING_ERROR: str = PipelineReason.PROCESSING_ERROR.value

_MAX_ERROR_BYTES = 1024


def dead_letter_headers(
    record: ConsumedRecord,
    reason: str,
    error: str,
    failed_at: str,
    *,
    group: str = "",
    exception_class: str | None = None,
) -> list[tuple[str, bytes]]:
    """The record's own headers (minus stale ``x-dlq-*`` ones from a replay) followed by the DLQ headers.

    The source timestamp (epoch milliseconds) and its type appear only when the client reported them,
    the exception's class only for ``processing_error``, and the group only when there is one.
    """
    headers = [(name, value) for name, value in record.headers if name not in DLQ_HEADERS]
    headers.extend(
        (
            (REASON, reason.encode()),
            (ERROR, error.encode("utf-8", "replace")[:_MAX_ERROR_BYTES]),
            (SOURCE_TOPIC, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
            (SOURCE_OFFSET, str(record.offset).encode()),
            (FAILED_AT, failed_at.encode()),
        )
    )
    if group:
        headers.append((CONSUMER_GROUP, group.encode()))
    if record.timestamp_ms is not None:
        headers.append((SOURCE_TIMESTAMP, str(record.timestamp_ms).encode()))
        if record.timestamp_type is not None:
            headers.append((SOURCE_TIMESTAMP_TYPE, record.timestamp_type.encode()))
    if exception_class is not None:
        headers.append((EXCEPTION_CLASS, exception_class.encode()))
    return headers


def without_dead_letter_headers(headers: Headers) -> list[tuple[str, bytes]]:
    return [(name, value) for name, value in headers if name not in DLQ_HEADERS]
