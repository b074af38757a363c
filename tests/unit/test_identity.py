"""identity.py: one spelling per address, IPv4-mapped addresses, zone ids, wildcards; and the
modules that must agree with it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscope import identity
from portscope.audit import rules
from portscope.filters import address_covers
from portscope.types import Endpoint, Family, Proto, Socket, State


def sock(address: str, v6only: bool | None = None) -> Socket:
    family = Family.IPV6 if ":" in address else Family.IPV4
    return Socket(Proto.TCP, family, Endpoint(address, 8080), None, State.LISTEN, 1, 0, None,
                  v6only)


@pytest.mark.parametrize("text, canonical", [
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("0:0:0:0:0:0:0:1", "::1"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ("::FFFF:7f00:1", "::ffff:127.0.0.1"),                  # the hex form of a mapped address
    ("0:0:0:0:0:ffff:c000:0201", "::ffff:192.0.2.1"),
    ("fe80::1%eth0", "fe80::1%eth0"),                       # the zone is kept as written
    ("FE80:0::1%2", "fe80::1%2"),
    ("0.0.0.0", "0.0.0.0"),
    ("0::0", "::"),
])
def test_canonical_address(text, canonical):
    assert identity.canonical_address(text) == canonical


def test_canonical_address_can_drop_the_zone():
    assert identity.canonical_address("fe80::1%eth0", zone=False) == "fe80::1"
    assert identity.canonical_address("::ffff:10.0.0.1%3", zone=False) == "::ffff:10.0.0.1"


@pytest.mark.parametrize("text", ["127.1", "localhost", "", "::ffff:999.0.0.1", "1.2.3.4/8",
                                  "%eth0", "010.0.0.1"])
def test_not_an_ip_literal_is_a_value_error(text):
    with pytest.raises(ValueError):
        identity.canonical_address(text)
    with pytest.raises(ValueError):
        identity.ip_address(text)


def test_a_mapped_address_is_the_ipv4_address_it_carries():
    assert identity.ip_address("::ffff:127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert identity.ipv4_mapped("::ffff:10.1.2.3") == ipaddress.IPv4Address("10.1.2.3")
    assert identity.ipv4_mapped("10.1.2.3") is None
    assert identity.ipv4_mapped("::1") is None
    assert identity.ipv4_mapped("::") is None            # the wildcard is not mapped
    assert identity.ip_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")


@pytest.mark.parametrize("text, wildcard, loopback", [
    ("0.0.0.0", True, False), ("::", True, False), ("0:0::0", True, False),
    ("::%eth0", True, False),
    ("::ffff:0.0.0.0", True, False),                     # mapped 0.0.0.0 is the IPv4 wildcard
    ("127.0.0.1", False, True), ("127.255.0.9", False, True), ("::1", False, True),
    ("::ffff:127.0.0.2", False, True), ("::ffff:10.0.0.1", False, False),
    ("fe80::1%eth0", False, False), ("192.0.2.1", False, False),
])
def test_wildcards_and_loopback(text, wildcard, loopback):
    assert identity.is_wildcard(text) is wildcard
    assert identity.is_loopback(text) is loopback


def test_split_zone():
    assert identity.split_zone("fe80::1%eth0") == ("fe80::1", "eth0")
    assert identity.split_zone("127.0.0.1") == ("127.0.0.1", "")


def test_wildcards_by_family():
    assert identity.WILDCARDS == {Family.IPV4: "0.0.0.0", Family.IPV6: "::"}
    assert all(identity.is_wildcard(a) for a in identity.WILDCARDS.values())


@given(st.ip_addresses())
def test_canonical_is_stable_and_means_the_same_address(ip):
    text = identity.canonical_address(str(ip))
    assert identity.canonical_address(text) == text
    assert identity.ip_address(text) == identity.ip_address(ip.exploded)


@given(st.ip_addresses(v=4))
def test_every_spelling_of_a_mapped_address_agrees(ip):
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    for spelling in (str(mapped), mapped.exploded, mapped.exploded.upper()):
        assert identity.canonical_address(spelling) == f"::ffff:{ip}"
        assert identity.ip_address(spelling) == ip


def test_the_address_filter_and_the_audit_follow_identity():
    # a v4-mapped bind is the IPv4 address; a dual-stack wildcard covers IPv4 peers
    assert address_covers(sock("::ffff:127.0.0.1"), "127.0.0.1")
    assert address_covers(sock("127.0.0.1"), "::ffff:127.0.0.1")
    assert address_covers(sock("::", v6only=False), "::ffff:127.0.0.1")
    assert not address_covers(sock("::", v6only=True), "127.0.0.1")
    assert address_covers(sock("fe80::1%eth0"), "fe80::1%eth0")
    assert rules.is_loopback(sock("::ffff:127.0.0.1"))
    view = rules.view_key(sock("fe80::1%eth0"))
    assert view[2] == ("fe80::1", 8080)                  # /proc/net cannot print a zone


def test_the_audit_words_a_mapped_wildcard_as_ipv4_only():
    for address in ("0.0.0.0", "::ffff:0.0.0.0"):
        hit = rules.exposed_all_interfaces(rules.Listener(sock(address), None, None, (), "root"),
                                           None)
        assert hit is not None and f"every IPv4 address ({address})" in hit.message
    hit = rules.exposed_all_interfaces(rules.Listener(sock("::", v6only=False), None, None, (),
                                                      "root"), None)
    assert "dual-stack" in hit.message
