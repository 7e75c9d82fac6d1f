"""JSON decoding and encoding as a port, so a faster parser can be plugged in by an adapter.

Contract for every implementation: ``decode`` accepts only strict UTF-8 JSON
(RFC 8259: no NaN/Infinity literals, no number that overflows to infinity),
keeps integers exact however large, and signals anything else with a
ValueError (or RecursionError for pathological nesting); ``encode`` returns
UTF-8 bytes for any value ``decode`` produced.
"""

from __future__ import annotations

import json
import math
from typing import Protocol


class JsonCodec(Protocol):
    def decode(self, raw: bytes) -> object: ...

    def encode(self, value: object) -> bytes: ...


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


class StdlibJsonCodec:
    """The reference implementation; other codecs must agree with it."""

    def decode(self, raw: bytes) -> object:
        # Decode explicitly: json.loads(bytes) would silently accept UTF-16/32.
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)

    def encode(self, value: object) -> bytes:
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (legal as JSON escapes) cannot be UTF-8: keep them escaped.
            return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("ascii")
