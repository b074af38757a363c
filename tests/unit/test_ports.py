"""Strict parsing of ports, ranges, addresses and endpoints."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from portscope.errors import InvalidInput
from portscope.ports import (HostPortRanges, parse_address, parse_endpoint, parse_port,
                             parse_port_range, port_class)


@pytest.mark.parametrize("text, port", [("80", 80), ("65535", 65535), ("0080", 80), ("1", 1)])
def test_parse_port_accepts(text, port):
    assert parse_port(text) == port


@pytest.mark.parametrize("text", ["", "0", "-1", "+80", " 80", "80 ", "80\n", "8_0", "٨٠",
                                  "８０", "²", "0x50", "1e2", "80.0", "65536", "99999",
                                  "123456", "9" * 5000])
def test_parse_port_rejects(text):
    with pytest.raises(InvalidInput):
        parse_port(text)


def test_zero_only_when_allowed():
    assert parse_port("0", allow_zero=True) == 0


@given(st.text(max_size=12))
def test_parse_port_never_crashes(text):
    try:
        port = parse_port(text)
    except InvalidInput:
        return
    assert text.isascii() and text.isdigit() and 1 <= port <= 65535


def test_ranges():
    assert parse_port_range("80") == (80, 80)
    assert parse_port_range("1000-2000") == (1000, 2000)
    for bad in ("2000-1000", "1–3", "1-", "-5", "1-3; echo x"):
        with pytest.raises(InvalidInput):
            parse_port_range(bad)


@pytest.mark.parametrize("text, expected", [
    ("8080", (None, 8080)), (":8080", (None, 8080)), ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:80", ("::1", 80)), ("[::ffff:127.0.0.1]:80", ("127.0.0.1", 80)),
    ("[fe80::1%lo]:80", ("fe80::1%lo", 80)),
])
def test_endpoints(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["::1:80", "[::1]", "[::1]80", "127.1:80", "localhost:80",
                                  "010.0.0.1:80", "2130706433:80", "1.2.3.4:", "https"])
def test_endpoint_rejects(text):
    with pytest.raises(InvalidInput):
        parse_endpoint(text)


def test_service_names_go_through_the_resolver():
    assert parse_endpoint("https", lambda name: 443) == (None, 443)
    assert parse_endpoint("127.0.0.1:https", lambda name: 443) == ("127.0.0.1", 443)


def test_mapped_ipv4_is_ipv4():
    assert parse_address("::ffff:127.0.0.1") == "127.0.0.1"


def test_port_class_bounds():
    assert [port_class(p) for p in (0, 1023, 1024, 49151, 49152, 65535)] == [
        "well-known", "well-known", "registered", "registered", "dynamic", "dynamic"]


def test_host_ranges_queries():
    ranges = HostPortRanges(ephemeral=(32768, 60999), reserved=((8000, 8005),),
                            unprivileged_start=1024)
    assert ranges.is_ephemeral(32768) and not ranges.is_ephemeral(61000)
    assert ranges.is_reserved(8003) and not ranges.is_reserved(8006)


def test_the_port_byte_swap_table_is_ntohs_of_every_u16():
    """``BSWAP16`` turns a port read natively from a netlink reply (network byte order) into
    its number: ``socket.ntohs`` of every value."""
    import socket

    from portscope.backends._netlink_wire import BSWAP16
    assert len(BSWAP16) == 65536
    assert list(BSWAP16) == [socket.ntohs(v) for v in range(65536)]
