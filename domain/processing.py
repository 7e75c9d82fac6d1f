"""The processing service: raw record bytes in, exactly one outcome out."""

from __future__ import annotations

from collections.abc import Sequence

from domain.codec import JsonCodec, StdlibJsonCodec
from domain.model import LoginEvent
from domain.outcomes import Outcome, Processed, Rejected, RejectReason
from domain.policies import RuleSettings, ValidationPolicy, build_policies, json_type_name

# Parsers differ in how deep they can go (the stdlib's limit even depends on the caller's stack),
# so the contract fixes one depth, well inside every codec's reach.
MAX_NESTING_DEPTH = 512


def _deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if type(item) is dict:
            stack.extend((child, depth + 1) for child in item.values())
        elif type(item) is list:
            stack.extend((child, depth + 1) for child in item)
    return False


class LoginEventProcessor:
    """Validates and transforms one record value; never raises for any input bytes."""

    def __init__(self, policies: Sequence[ValidationPolicy] | None = None, codec: JsonCodec | None = None) -> None:
        self._policies = tuple(build_policies(RuleSettings()) if policies is None else policies)
        self._codec = codec or StdlibJsonCodec()

    def process(self, raw: bytes | None, processed_at: str) -> Outcome:
        """``processed_at`` is passed in (RFC 3339, UTC) so callers can stamp a whole batch at once."""
        if not raw:
            return Rejected(RejectReason.MALFORMED_JSON, "value is empty")
        try:
            record = self._codec.decode(raw)
        except RecursionError:
            return Rejected(RejectReason.MALFORMED_JSON, "value is nested too deeply to parse safely")
        except ValueError as error:
            return Rejected(RejectReason.MALFORMED_JSON, f"value is not UTF-8 JSON: {str(error)[:120]}")
        # Depth cannot exceed the number of brackets, nor the length: most records skip the check entirely.
        if (
            len(raw) > MAX_NESTING_DEPTH
            and raw.count(b"[") + raw.count(b"{") > MAX_NESTING_DEPTH
            and _deeper_than(record, MAX_NESTING_DEPTH)
        ):
            return Rejected(RejectReason.MALFORMED_JSON, f"value is nested deeper than {MAX_NESTING_DEPTH} levels")
        if type(record) is not dict:
            return Rejected(RejectReason.NOT_AN_OBJECT, f"value is a JSON {json_type_name(record)}, not an object")
        for policy in self._policies:
            rejection = policy.check(record)
            if rejection is not None:
                return rejection
        return Processed(LoginEvent.from_validated(record, processed_at))

    def encode(self, event: LoginEvent) -> bytes:
        """The published bytes of a processed event."""
        return self._codec.encode(event.fields)
