"""Logging that stays readable under load: per-record detail at DEBUG, a throttled summary at WARNING."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from application.messages import ConsumedRecord


def record_context(record: ConsumedRecord) -> dict[str, object]:
    """Structured fields for a log line about one record (JSON logs carry them as keys)."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


class ThrottledWarning:
    """At most one WARNING per interval for a recurring event, saying how many happened meanwhile."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._monotonic = monotonic
        self._last = -interval_s
        self._unreported = 0

    def __call__(self, message: str, *args: object, record: ConsumedRecord | None = None) -> None:
        context = record_context(record) if record is not None else {}
        self._logger.debug(message, *args, extra=context)
        self._unreported += 1
        now = self._monotonic()
        if now - self._last >= self._interval:
            count, self._unreported, self._last = self._unreported, 0, now
            suffix = f" ({count} such event(s) since the last report)" if count > 1 else ""
            self._logger.warning(message + suffix, *args, extra=context)
