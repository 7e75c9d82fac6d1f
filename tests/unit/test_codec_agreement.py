"""The orjson fast path must decode and encode exactly like the stdlib reference codec."""

import json
import tracemalloc

from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.json_codec import OrjsonCodec
from domain.codec import StdlibJsonCodec
from tests.unit.strategies import json_values

FAST = OrjsonCodec()
REFERENCE = StdlibJsonCodec()


def _decode(codec: OrjsonCodec | StdlibJsonCodec, raw: bytes) -> tuple[str, object]:
    try:
        return "ok", codec.decode(raw)
    except (ValueError, RecursionError):
        return "error", None


def _same(left: object, right: object) -> bool:
    """Equality that also tells 1 from 1.0 and True from 1, which == does not."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True) and type(left) is type(right)


@settings(max_examples=1000)
@given(json_values)
@example({"big": 18446744073709551616, "neg": -9223372036854775809})
@example({"nested": {"deep": [123456789012345678901234567890]}})
@example([2**64])
@example("\ud800")
@example({"x": 1.5e300})
def test_decoding_agrees_on_valid_json(value: object) -> None:
    raw = json.dumps(value).encode()
    fast, reference = _decode(FAST, raw), _decode(REFERENCE, raw)
    assert fast[0] == reference[0]
    assert _same(fast[1], reference[1])


@settings(max_examples=500)
@given(st.binary(max_size=80))
@example(b'{"a": 1e400}')
@example(b"NaN")
@example(b"\xef\xbb\xbf{}")
def test_decoding_agrees_on_arbitrary_bytes(raw: bytes) -> None:
    fast, reference = _decode(FAST, raw), _decode(REFERENCE, raw)
    assert fast[0] == reference[0], raw
    if fast[0] == "ok":
        assert _same(fast[1], reference[1])


@settings(max_examples=500)
@given(json_values)
@example({"surrogate": "\udc00", "big": 2**80})
def test_encoding_round_trips_like_the_reference(value: object) -> None:
    assert _same(json.loads(FAST.encode(value)), json.loads(REFERENCE.encode(value)))


def test_an_encoded_value_holds_about_its_own_size_not_orjsons_write_buffer() -> None:
    """Up to MAX_IN_FLIGHT encoded values stay alive for retries: each must cost its length, not ~4 KB."""
    value = {"user_id": "u-1", "ip": "10.0.0.1", "app_version": "2.3.1", "processed_at": "2026-01-01T00:00:00Z"}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [FAST.encode(value) for _ in range(1000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == REFERENCE.encode(value)
    assert per_value < 4 * len(kept[0]), f"{per_value:.0f} bytes held per {len(kept[0])}-byte value"
