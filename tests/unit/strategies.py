"""Hypothesis strategies for JSON values and for records shaped like (and near) login events."""

from typing import Any

from hypothesis import strategies as st

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

_almost_strings = st.text(max_size=6) | st.sampled_from(["", " ", "\t", "x"])
_versions = st.sampled_from(
    ["2.3.0", "2.10", "10.0.0.1", "1.9.8", "2", "0.0", "2.0.0", "2.", "v2", "1.2.3.4.5", " "]
) | (st.lists(st.integers(0, 30), min_size=1, max_size=5).map(lambda parts: ".".join(map(str, parts))))
_ips = st.sampled_from(
    ["8.8.8.8", "", " ", "10.0.0.1", "192.168.1.1", "300.1.2.3", "::1", "2606:4700::1111", "fe80::1", "x", "127.0.0.1"]
) | st.ip_addresses().map(str)
_timestamps = (
    st.integers(-5, 2**70)
    | st.integers(0, 10**12).map(str)
    | st.sampled_from(["", "soon", "-1", "1.5", " 1", "١٢"])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field value that is usually the right kind, sometimes any JSON value."""
    return st.one_of(strategy, strategy, strategy, json_values)


event_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": _maybe(st.uuids().map(str) | _almost_strings),
        "app_version": _maybe(_versions),
        "device_type": _maybe(st.sampled_from(["android", "iOS"]) | _almost_strings),
        "ip": _maybe(_ips),
        "locale": _maybe(st.sampled_from(["RU", "pt_BR", "", "ÉÀ"]) | st.text(max_size=4)),
        "device_id": _maybe(st.text(max_size=12)),
        "timestamp": _timestamps,
        "extra": json_values,
    },
)
