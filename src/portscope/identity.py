"""What identifies an address, and so a listener, across views, time and hosts: one spelling
of an IP literal, IPv4-mapped IPv6 handling, zone ids, wildcards.

Used by the audit (baselines, rules, SARIF), the exporter, history, the address filter,
bindcheck and explain, so that the same listener gets the same identity everywhere. Pure
functions; ``ipaddress`` (about 5 ms to import) is loaded with this module, which the light
modules (``filters``, ``ports``) import only when an address is given.

Terms: an *IPv4-mapped* address is ``::ffff:a.b.c.d``: an IPv4 peer or bind seen through an
IPv6 socket. A *zone id* (``fe80::1%eth0``) names the interface of a link-local IPv6 address.
A *wildcard* is ``0.0.0.0`` or ``::`` (every address of its family).
"""

from __future__ import annotations

import functools
import ipaddress

from .types import Family

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the wildcard address of each IP family, as the kernel prints it
WILDCARDS = {Family.IPV4: "0.0.0.0", Family.IPV6: "::"}


def split_zone(text: str) -> tuple[str, str]:
    """``("fe80::1", "eth0")`` from ``"fe80::1%eth0"``; the zone is ``""`` when there is none."""
    address, _, zone = text.partition("%")
    return address, zone


@functools.lru_cache(maxsize=4096)
def ip_address(text: str) -> IPAddress:
    """The address an IP literal means on the wire: its zone id dropped, an IPv4-mapped IPv6
    address (``::ffff:127.0.0.1``) as the IPv4 address it is. Cached: a host's sockets share a
    few addresses, and parsing one costs about 20 us (the exporter pairs every connection
    with its listener through ``filters.address_covers``).

    Raises:
        ValueError: not an IP literal (host names, ``127.1`` are not).
    """
    ip = ipaddress.ip_address(split_zone(text)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def ipv4_mapped(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped IPv6 literal (``::ffff:a.b.c.d``) carries, else None.

    Raises:
        ValueError: not an IP literal.
    """
    ip = ipaddress.ip_address(split_zone(text)[0])
    return ip.ipv4_mapped if ip.version == 6 else None


def canonical_address(text: str, *, zone: bool = True) -> str:
    """An IP literal in one spelling: RFC 5952 for IPv6 (``::1``, lower case, zeros
    compressed), ``::ffff:a.b.c.d`` for IPv4-mapped (the kernel's and ``inet_ntop``'s form),
    dotted quad for IPv4; a zone id kept as written, or dropped when ``zone`` is False
    (``/proc/net`` cannot print one).

    Raises:
        ValueError: not an IP literal.
    """
    address, scope = split_zone(text)
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        spelled = f"::ffff:{ip.ipv4_mapped}"
    else:
        spelled = ip.compressed
    return f"{spelled}%{scope}" if zone and scope else spelled


def is_wildcard(text: str) -> bool:
    """True for ``0.0.0.0``, ``::`` and ``::ffff:0.0.0.0`` (an IPv6 socket bound to the
    IPv4-mapped wildcard receives on every IPv4 address, and on no IPv6 one), in any spelling,
    with or without a zone id.

    Raises:
        ValueError: not an IP literal.
    """
    return ip_address(text).is_unspecified


def is_loopback(text: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and ``::ffff:127.x.y.z``: reachable from this host
    only.

    Raises:
        ValueError: not an IP literal.
    """
    return ip_address(text).is_loopback
