"""The LoginEvent entity: a login that passed validation, in its published shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# int("9" * 5000) raises in CPython (int_max_str_digits); epoch seconds need far fewer.
_MAX_TIMESTAMP_DIGITS = 30


def parse_epoch_seconds(value: object) -> int | None:
    """Epoch seconds from a non-negative JSON integer or a string of ASCII digits, else None.

    Booleans, floats (even ``1.0``), signs, spaces and non-ASCII digits are refused:
    a producer that sends them is broken and should hear about it through the DLQ.
    """
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is str and 0 < len(value) <= _MAX_TIMESTAMP_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class LoginEvent:
    """A validated login event.

    ``fields`` holds every field of the input, unknown ones included, so that a
    newer producer's additions pass through untouched (forward compatibility).
    """

    fields: Mapping[str, object]

    @classmethod
    def from_validated(cls, record: Mapping[str, object], processed_at: str) -> LoginEvent:
        """Apply the published transformation to a record that passed the policies."""
        fields = dict(record)
        locale = fields.get("locale")
        if type(locale) is str:
            fields["locale"] = locale.lower()
        if "timestamp" in fields:
            seconds = parse_epoch_seconds(fields["timestamp"])
            if seconds is not None:
                fields["timestamp"] = seconds
        fields["processed_at"] = processed_at
        return cls(fields)

    @property
    def user_id(self) -> str | None:
        value = self.fields.get("user_id")
        return value if type(value) is str else None


def format_processed_at(epoch_seconds: float) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix, e.g. ``2026-11-26T18:25:54.123Z``."""
    stamp = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
