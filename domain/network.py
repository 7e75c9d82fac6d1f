"""Which client IP addresses count as public.

The non-public ranges are listed here explicitly (from the IANA special-purpose
registries) rather than taken from ``ipaddress.is_global``, whose answer has
changed between Python releases; a record must not flip from valid to invalid
because the interpreter was upgraded.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from enum import Enum


class AddressClass(Enum):
    PUBLIC = "public"
    NON_PUBLIC = "non_public"
    INVALID = "invalid"


_NON_PUBLIC_V4 = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, including broadcast
)

# Only 2000::/3 is global unicast; inside it these are not routable on the internet.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NON_PUBLIC_V6 = (
    "2001::/23",  # IETF protocol assignments (Teredo, benchmarking, ORCHID...)
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
)


def _ranges(networks: tuple[str, ...]) -> tuple[list[int], list[int]]:
    parsed = sorted(ipaddress.ip_network(text) for text in networks)
    return [int(n.network_address) for n in parsed], [int(n.broadcast_address) for n in parsed]


_V4_STARTS, _V4_ENDS = _ranges(_NON_PUBLIC_V4)
_V6_STARTS, _V6_ENDS = _ranges(_NON_PUBLIC_V6)


# For each first octet, whether no non-public range touches it: then that octet alone makes an IPv4
# address public (most public addresses), with no integer conversion or search.
_V4_CLEAR_FIRST_OCTET = tuple(
    not any(start >> 24 <= octet <= end >> 24 for start, end in zip(_V4_STARTS, _V4_ENDS, strict=True))
    for octet in range(256)
)


def _inside(value: int, starts: list[int], ends: list[int]) -> bool:
    index = bisect_right(starts, value) - 1
    return index >= 0 and value <= ends[index]


def classify_address(text: str) -> AddressClass:
    """Classify a textual IPv4/IPv6 address (IPv4-mapped IPv6 is judged as IPv4).

    A plain dotted quad, nearly every real record, takes the C library's
    inet_pton (about 8x faster than ``ipaddress``); whatever it refuses is
    decided by ``ipaddress``. A property test checks both paths agree.
    """
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL character
        return reference_classify_address(text)
    if _V4_CLEAR_FIRST_OCTET[packed[0]] or not _inside(int.from_bytes(packed, "big"), _V4_STARTS, _V4_ENDS):
        return AddressClass.PUBLIC
    return AddressClass.NON_PUBLIC


def reference_classify_address(text: str) -> AddressClass:
    """The same classification through ``ipaddress`` alone: the slow path and the fast path's referee."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return AddressClass.INVALID
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            public = address in _GLOBAL_UNICAST_V6 and not _inside(int(address), _V6_STARTS, _V6_ENDS)
            return AddressClass.PUBLIC if public else AddressClass.NON_PUBLIC
        address = mapped
    if _inside(int(address), _V4_STARTS, _V4_ENDS):
        return AddressClass.NON_PUBLIC
    return AddressClass.PUBLIC
