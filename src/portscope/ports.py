"""Port numbers: strict parsing of user input, IANA port classes, and this host's ranges.

Input rules (DESIGN.md section 6): a port is 1 to 5 ASCII digits, 0-65535 (Python's ``int()``
would also take ``" 80"``, ``"+80"``, ``"8_0"`` and ``"٨٠"``: they are rejected); leading zeros
are accepted and normalised (``0080`` is 80). Addresses go through ``ipaddress`` (``127.1`` and
``010.0.0.1`` are rejected); IPv6 with a port is written ``[::1]:80``.

Host ranges are read from ``/proc/sys/net/ipv4/ip_local_port_range``,
``ip_local_reserved_ports`` and ``ip_unprivileged_port_start`` (Linux); elsewhere the IANA
dynamic range is assumed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InvalidInput

_PORT_RE = re.compile(r"[0-9]{1,5}")
_LETTER_RE = re.compile(r"[A-Za-z]")
_SYSCTL = "/proc/sys/net/ipv4"

WELL_KNOWN = (0, 1023)
REGISTERED = (1024, 49151)
DYNAMIC = (49152, 65535)


def shown(text: str, limit: int = 32) -> str:
    """``repr(text)``, cut to about ``limit`` characters for one-line error messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """Parse a port number given by a user.

    Args:
        text: 1 to 5 ASCII digits.
        allow_zero: accept ``0`` ("any port", for binding).
    Returns:
        the port, 0-65535.
    Raises:
        InvalidInput: anything else (signs, spaces, underscores, non-ASCII digits, > 65535).
    """
    if not isinstance(text, str) or not _PORT_RE.fullmatch(text):
        raise InvalidInput(f"invalid port {shown(text)}: expected a number 1-65535")
    port = int(text)
    if port > 65535 or (port == 0 and not allow_zero):
        raise InvalidInput(f"invalid port {shown(text)}: must be 1-65535")
    return port


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``N`` or ``A-B`` (ASCII hyphen, ``A <= B``) into inclusive bounds.

    Raises:
        InvalidInput: malformed, out of range or descending.
    """
    low_text, sep, high_text = text.partition("-")
    low = parse_port(low_text)
    if not sep:
        return low, low
    high = parse_port(high_text)
    if high < low:
        raise InvalidInput(f"invalid port range {shown(text)}: {low} > {high}")
    return low, high


def parse_address(text: str) -> str:
    """Validate an IP address literal and return its canonical text.

    A zone id (``fe80::1%eth0``) must name an existing interface. IPv4-mapped IPv6 addresses
    are returned as IPv4 (``::ffff:127.0.0.1`` -> ``127.0.0.1``).

    Raises:
        InvalidInput: not a valid IPv4/IPv6 literal (``127.1``, ``010.0.0.1``, host names), or
            an unknown zone.
    """
    import ipaddress      # 5 ms to import: only when an address is given
    address, _, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidInput(f"invalid address {shown(text)}: expected an IPv4 or IPv6 literal") from None
    if zone:
        if ip.version != 6:
            raise InvalidInput(f"invalid address {shown(text)}: a zone id needs an IPv6 address")
        try:
            socket.if_nametoindex(zone)
        except OSError:
            if not zone.isdigit():
                raise InvalidInput(f"invalid address {shown(text)}: no interface {zone!r}") from None
        return f"{ip.compressed}%{zone}"
    from .identity import ip_address
    return str(ip_address(address))          # an IPv4-mapped address as the IPv4 it carries


def parse_endpoint(text: str, resolve_service: Callable[[str], int] | None = None, *,
                   allow_zero: bool = False) -> tuple[str | None, int]:
    """Parse ``PORT``, ``:PORT``, ``ADDR:PORT``, ``[IPV6]:PORT`` or a service name.

    Args:
        text: the user's text.
        resolve_service: maps a service name (``https``) to a port; raises ``InvalidInput`` for
            an unknown one. Without it, service names are rejected.
        allow_zero: accept port ``0`` ("any port", for binding).
    Returns:
        ``(address or None, port)``.
    Raises:
        InvalidInput: malformed input; ``::1:80`` asks for brackets.
    """
    def port_of(part: str) -> int:
        # a service name has a letter (IANA: letters, digits, hyphens); all else is a port
        if resolve_service is None or not _LETTER_RE.search(part):
            return parse_port(part, allow_zero=allow_zero)
        return resolve_service(part)

    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise InvalidInput(f"invalid endpoint {shown(text)}: expected [IPV6]:PORT")
        if ":" not in inner:
            raise InvalidInput(f"invalid endpoint {shown(text)}: brackets are for IPv6 addresses")
        address = parse_address(inner)
        return address, port_of(rest[1:])
    if text.count(":") > 1:
        raise InvalidInput(f"invalid endpoint {shown(text)}: write an IPv6 address with a port "
                           "as [ADDR]:PORT")
    address_text, sep, port_text = text.rpartition(":")
    if not sep:
        return None, port_of(text)
    if not address_text:
        return None, port_of(port_text)
    return parse_address(address_text), port_of(port_text)


def endpoint_text(address: str, port: int | None) -> str:
    """``addr:port``, with IPv6 in brackets (``[::1]:80``); ``*`` for a missing port."""
    port_text = "*" if port is None else str(port)
    return f"[{address}]:{port_text}" if ":" in address else f"{address}:{port_text}"


def port_class(port: int) -> str:
    """IANA class of a port: ``"well-known"`` (0-1023), ``"registered"`` (1024-49151) or
    ``"dynamic"`` (49152-65535)."""
    if port <= WELL_KNOWN[1]:
        return "well-known"
    if port <= REGISTERED[1]:
        return "registered"
    return "dynamic"


def _read_sysctl(name: str) -> str | None:
    try:
        with open(f"{_SYSCTL}/{name}", encoding="ascii") as f:
            return f.read()
    except OSError:
        return None


def _parse_port_list(text: str) -> tuple[tuple[int, int], ...]:
    ranges = []
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if part:
            low, _, high = part.partition("-")
            ranges.append((int(low), int(high or low)))
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class HostPortRanges:
    """This host's port policy.

    Attributes:
        ephemeral: ``(low, high)`` used for outgoing connections and port 0 binds
            (``net.ipv4.ip_local_port_range``; also used by IPv6).
        reserved: ranges excluded from automatic assignment (``ip_local_reserved_ports``).
        unprivileged_start: ports below it need CAP_NET_BIND_SERVICE
            (``net.ipv4.ip_unprivileged_port_start``).
    """

    ephemeral: tuple[int, int]
    reserved: tuple[tuple[int, int], ...]
    unprivileged_start: int

    def is_ephemeral(self, port: int) -> bool:
        """True when ``port`` lies in the ephemeral range."""
        return self.ephemeral[0] <= port <= self.ephemeral[1]

    def is_reserved(self, port: int) -> bool:
        """True when ``port`` is in ``ip_local_reserved_ports``."""
        return any(low <= port <= high for low, high in self.reserved)


def host_port_ranges() -> HostPortRanges:
    """Read this host's ephemeral range, reserved ports and privileged-port start.

    Source: ``/proc/sys/net/ipv4/`` (the caller's network namespace). Where unreadable (not
    Linux), the IANA dynamic range, no reserved ports and 1024 are returned.
    """
    text = _read_sysctl("ip_local_port_range")
    ephemeral = DYNAMIC
    if text:
        low, high = text.split()
        ephemeral = (int(low), int(high))
    reserved = _parse_port_list(_read_sysctl("ip_local_reserved_ports") or "")
    start_text = _read_sysctl("ip_unprivileged_port_start")
    return HostPortRanges(ephemeral, reserved, int(start_text) if start_text else 1024)
