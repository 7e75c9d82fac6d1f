import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import network
from domain.network import AddressClass, classify_address, reference_classify_address

PUBLIC = [
    "8.8.8.8",
    "84.115.150.27",
    "1.1.1.1",
    "223.255.255.254",
    "2606:4700::1111",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
]
NON_PUBLIC = [
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # private
    "127.0.0.1", "::1",  # loopback
    "169.254.10.10", "fe80::1", "fe80::1%eth0",  # link-local
    "fc00::1", "fd12:3456::1",  # unique-local
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0", "240.0.0.1", "255.255.255.255", "::",  # reserved / unspecified
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1", "3fff::1",  # documentation
    "224.0.0.1", "ff02::1",  # multicast
    "198.18.0.1",  # benchmarking
    "::ffff:192.168.0.1",  # private IPv4 in IPv6 clothing
]  # fmt: skip
INVALID = ["300.1.2.3", "1.2.3", "not-an-ip", " 8.8.8.8", "8.8.8.8 ", "1.2.3.4.5", "::g", "01.02.03.04", "8.8.8.8/32"]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert classify_address(address) is AddressClass.PUBLIC


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert classify_address(address) is AddressClass.NON_PUBLIC


@pytest.mark.parametrize("address", INVALID)
def test_invalid_addresses(address: str) -> None:
    assert classify_address(address) is AddressClass.INVALID


@settings(max_examples=3000)
@given(st.ip_addresses().map(str) | st.text(alphabet="0123456789.:abcdefABCDEF%x ", max_size=24) | st.text(max_size=20))
def test_the_fast_path_agrees_with_ipaddress(text: str) -> None:
    assert classify_address(text) is reference_classify_address(text)


@pytest.mark.parametrize("text", ["1.2.3.4\x00", "1.2.3.04", "0x7f.0.0.1", "127.1", "1.2.3.4\n", "١.٢.٣.٤"])  # noqa: RUF001
def test_the_fast_path_agrees_on_lookalikes(text: str) -> None:
    assert classify_address(text) is reference_classify_address(text)


def _boundary_addresses() -> list[str]:
    """Each first octet's lowest, middle and highest address, and every non-public range's edges +/- 1."""
    values = set()
    for octet in range(256):
        values.update({octet << 24, (octet << 24) | 0x7F_FFFF, (octet << 24) | 0xFF_FFFF})
    for start, end in zip(network._V4_STARTS, network._V4_ENDS, strict=True):
        values.update({start - 1, start, start + 1, end - 1, end, end + 1})
    return [str(ipaddress.IPv4Address(v)) for v in sorted(values) if 0 <= v < 2**32]


def test_the_first_octet_screen_agrees_with_ipaddress_at_every_edge() -> None:
    addresses = _boundary_addresses()
    disagreeing = [a for a in addresses if classify_address(a) is not reference_classify_address(a)]
    assert disagreeing == []
    # The screen must really decide some addresses by their first octet alone, and leave the others to the search.
    assert {classify_address(a) for a in addresses} == {AddressClass.PUBLIC, AddressClass.NON_PUBLIC}
    assert network._V4_CLEAR_FIRST_OCTET[8] and not network._V4_CLEAR_FIRST_OCTET[192]
