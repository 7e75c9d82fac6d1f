"""What the pipeline use case needs to know, independent of where the values came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from application.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    input_topic: str = "user-login"
    output_topic: str = "processed-user-login"
    dlq_topic: str = "user-login-dlq"
    consumer_group: str = ""  # named in each dead letter's headers
    batch_size: int = 500
    transaction_size: int = 5_000  # records per transaction in exactly-once mode
    poll_timeout_s: float = 0.5
    commit_interval_s: float = 1.0
    max_in_flight: int = 20_000
    max_records_per_second: float | None = None
    shutdown_timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The topics' max.message.bytes, when known at start: compared once, and named when a dead letter is refused.
    input_max_message_bytes: int | None = None
    dlq_max_message_bytes: int | None = None
