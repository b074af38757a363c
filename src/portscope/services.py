"""Service names for ports, both ways: the IANA registry (shipped) merged with /etc/services.

Data sources:

- IANA "Service Name and Transport Protocol Port Number Registry", registry state of
  ``REGISTRY_DATE`` (2024-04-30), shipped as ``portscope/data/iana_services.tsv`` (built by
  ``tools/compact_iana.py`` from IANA's CSV; source and date are in the file's header).
  Records without a port (names registered for DNS SRV only) are not shipped; Unassigned and
  Reserved blocks are, with an empty name, because IANA notes unauthorized use on some.
- ``/etc/services`` (path is a parameter; ``None`` skips it). A missing or unreadable file is
  treated as empty: containers often have none. Its names win for display, as with
  ``ss``/``netstat`` (``getservbyport``).

Loading is lazy: importing this module reads nothing. The first call reads the IANA table and
indexes it: median 2.7 ms (min 2.3) over 21 fresh processes, CPython 3.11, x86-64, warm page
cache; it is one 520 kB read, one decode and two ``split``s, ports are found by ``bisect`` on
the raw lines. The first name query adds 0.7 ms (an ASCII-lower-cased copy to search in), each
further one about 0.5 ms. /etc/services (Debian's, ~350 lines) takes 1.3 ms and is re-parsed
only when its mtime, size or inode changes. ``ServiceEntry`` objects are made only for the
records a call returns. ``service_name()`` then costs about 8 us a call.

Unauthorized use: IANA's CSV has a column "Unauthorized Use Reported" holding a free-text note
("Known Unauthorized Use on port 6003"). For a single-port record the note flags the record. For
a range record (x11 6000-6063, Unassigned 27018-27344) the note usually names the affected
ports; only those are flagged (``ServiceEntry.unauthorized_ports``), the record as a whole has
``unauthorized_use=True``. ``is_unauthorized_use()`` answers per port.

Protocols are ``"tcp"``, ``"udp"``, ``"sctp"``, ``"dccp"`` (lower case). An IANA record with no
protocol (``proto == ""``: most Unassigned blocks and a few old ranges) applies to all of them.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .errors import InvalidInput
from .ports import parse_port

__all__ = ["ETC_SERVICES", "REGISTRY_DATE", "TRANSPORTS", "ServiceEntry", "iana_header",
           "is_unauthorized_use", "lookup", "resolve_service", "service_name"]

REGISTRY_DATE = "2024-04-30"
"""State of the shipped IANA registry (newest registration/modification date in it)."""

ETC_SERVICES = Path("/etc/services")
"""The default services(5) file; every function takes ``etc_services=`` to override it."""

TRANSPORTS = frozenset({"tcp", "udp", "sctp", "dccp"})
"""Protocols that have ports in the registry."""

_DATA_NAME = "iana_services.tsv"
_RANGES_MARKER = "# port ranges"
_DIGITS_RE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One registration of a service name on a port (or an inclusive port range).

    Attributes:
        name: service name as registered (``"https"``); ``""`` for IANA Unassigned/Reserved
            blocks. /etc/services aliases are matched by ``lookup()`` but not listed here.
        port_low: first port; ``port_high``: last port (equal for a single port).
        proto: ``"tcp"``, ``"udp"``, ``"sctp"``, ``"dccp"``; ``""`` for an IANA record that
            names no protocol (it applies to all). /etc/services may hold others (``"ddp"``).
        description: IANA's description, or the comment on the /etc/services line; may be ``""``.
        source: ``"iana"`` or ``"etc-services"``.
        unauthorized_use: IANA reports unauthorized use on this record (on at least one of its
            ports, see ``unauthorized_ports``). Always False for /etc/services.
        unauthorized_ports: the inclusive ``(low, high)`` port ranges that report is about;
            ``()`` when ``unauthorized_use`` is False.

    All fields are str/int/bool/tuple: ``dataclasses.asdict()`` gives JSON-ready values.
    """

    name: str
    port_low: int
    port_high: int
    proto: str
    description: str
    source: Literal["iana", "etc-services"]
    unauthorized_use: bool = False
    unauthorized_ports: tuple[tuple[int, int], ...] = ()

    @property
    def ports(self) -> str:
        """The port as text: ``"443"`` or ``"6000-6063"``."""
        if self.port_low == self.port_high:
            return str(self.port_low)
        return f"{self.port_low}-{self.port_high}"


# --- IANA table ---------------------------------------------------------------------------------

class _IanaTable:
    """The shipped registry, kept as raw lines and parsed only where a call looks.

    A record is handled as its raw line ``"ports\tproto\tunauth\tname\tdescription"``.
    ``singles`` (single-port records) start with the zero-padded port (``"00443"``) and are
    in port order, so ``bisect`` on the raw strings finds a port's records. ``ranges`` (about
    750 records, ``"06000-06063"``) have their bounds parsed at load. Names are found by a
    byte search in an ASCII-lower-cased copy of the file (made on the first name query;
    ``bytes.lower()`` keeps offsets, so hits map back to the original line).
    """

    __slots__ = ("raw", "singles", "ranges", "range_lows", "range_highs", "max_span", "_lower")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        text = raw.decode("utf-8")
        body_at = 0
        while text.startswith("#", body_at):
            body_at = text.index("\n", body_at) + 1
        singles_text, marker, ranges_text = text[body_at:].partition(f"\n{_RANGES_MARKER}\n")
        if not marker:
            raise RuntimeError(f"corrupt package data {_DATA_NAME}: no {_RANGES_MARKER!r} line")
        self.singles = singles_text.split("\n")
        self.ranges = ranges_text.rstrip("\n").split("\n")
        self.range_lows = [int(line[0:5]) for line in self.ranges]
        self.range_highs = [int(line[6:11]) for line in self.ranges]
        self.max_span = max(h - lo for lo, h in zip(self.range_lows, self.range_highs))
        self._lower: bytes | None = None

    def lines_for_port(self, port: int) -> list[str]:
        """Records whose port or range contains ``port``: single-port records, then ranges."""
        first = bisect_left(self.singles, f"{port:05d}")
        last = bisect_left(self.singles, f"{port + 1:05d}", first)
        k0 = bisect_left(self.range_lows, port - self.max_span)
        k1 = bisect_right(self.range_lows, port)
        return self.singles[first:last] + [self.ranges[k] for k in range(k0, k1)
                                           if self.range_highs[k] >= port]

    def lines_for_name(self, name: str) -> list[str]:
        """Records registered under ``name`` (ASCII case-insensitive), in registry order."""
        if not name or "\t" in name or "\n" in name:
            return []
        if self._lower is None:
            self._lower = self.raw.lower()
        text = self._lower
        needle = f"\t{name}\t".lower().encode("utf-8", errors="replace")
        found = []
        pos = text.find(needle)
        while pos >= 0:
            start = text.rfind(b"\n", 0, pos) + 1
            if text.count(b"\t", start, pos) == 2:  # the needle's tab is the 3rd: name column
                found.append(self.raw[start:text.index(b"\n", pos)].decode("utf-8"))
            pos = text.find(needle, pos + 1)
        found.sort(key=lambda line: line[0:5])  # stable: ranges join singles in port order
        return found

    def names(self) -> set[str]:
        """Every registered name, lower-cased (for suggestions; about 3 ms)."""
        return {line.split("\t", 4)[3].lower() for line in self.singles + self.ranges} - {""}


def _bounds(ports: str) -> tuple[int, int]:
    low, _, high = ports.partition("-")
    return int(low), int(high or low)


def _unauthorized_ranges(ports: str, spec: str) -> tuple[tuple[int, int], ...]:
    """Decode the ``unauth`` column: ``""``, ``"*"`` or ``"6003"``/``"27018,27019"``/``"A-B"``."""
    if not spec:
        return ()
    if spec == "*":
        return (_bounds(ports),)
    return tuple(_bounds(part) for part in spec.split(","))


def _iana_entry(line: str) -> ServiceEntry:
    ports, proto, unauth, name, description = line.split("\t")
    low, high = _bounds(ports)
    flagged = _unauthorized_ranges(ports, unauth)
    return ServiceEntry(name, low, high, proto, description, "iana", bool(flagged), flagged)


def _read_package_data() -> bytes:
    path = os.path.join(os.path.dirname(__file__), "data", _DATA_NAME)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError):
        # Not a plain directory (zip import): importlib.resources costs ~15 ms to import,
        # so it is only the fallback.
        from importlib.resources import files
        return files(__package__).joinpath("data", _DATA_NAME).read_bytes()


@lru_cache(maxsize=1)
def _iana() -> _IanaTable:
    return _IanaTable(_read_package_data())


def iana_header() -> list[str]:
    """The ``#`` header lines of the shipped data file (source, registry date), ``#`` removed.

    Returns e.g. ``["portscope-iana-services v1", "registry-date: 2024-04-30", ...]``.
    """
    lines = []
    for line in _iana().raw[:2048].decode("utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


# --- /etc/services ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _EtcTable:
    entries: tuple[ServiceEntry, ...]
    by_port: dict[int, tuple[ServiceEntry, ...]]
    by_name: dict[str, tuple[ServiceEntry, ...]]  # lower-cased names and aliases


_EMPTY_ETC = _EtcTable((), {}, {})


def _parse_etc_services(text: str) -> _EtcTable:
    """Parse services(5): ``name port/proto [aliases...] [# comment]``; bad lines are skipped."""
    entries = []
    by_port: dict[int, list[ServiceEntry]] = {}
    by_name: dict[str, list[ServiceEntry]] = {}
    for line in text.splitlines():
        data, _, comment = line.partition("#")
        fields = data.split()
        if len(fields) < 2:
            continue
        port_text, _, proto = fields[1].partition("/")
        if not _DIGITS_RE.fullmatch(port_text) or int(port_text) > 65535 or not proto:
            continue
        port = int(port_text)
        entry = ServiceEntry(fields[0], port, port, proto.lower(), comment.strip(),
                             "etc-services")
        entries.append(entry)
        by_port.setdefault(port, []).append(entry)
        for name in dict.fromkeys(n.lower() for n in [fields[0], *fields[2:]]):
            by_name.setdefault(name, []).append(entry)
    return _EtcTable(tuple(entries), {k: tuple(v) for k, v in by_port.items()},
                     {k: tuple(v) for k, v in by_name.items()})


@lru_cache(maxsize=8)
def _etc_cached(path: str, _stamp: tuple[int, int, int]) -> _EtcTable:
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:  # vanished or unreadable since the stat: same as missing
        return _EMPTY_ETC
    return _parse_etc_services(text)


def _etc(path: str | os.PathLike[str] | None) -> _EtcTable:
    if path is None:
        return _EMPTY_ETC
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:  # missing (containers) or unreadable: no /etc/services, not an error
        return _EMPTY_ETC
    return _etc_cached(path, (st.st_mtime_ns, st.st_size, st.st_ino))


# --- public functions ---------------------------------------------------------------------------

def _check_port(port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int 0-65535, not {port!r}")


def _proto_matches(record_proto: str, proto: str) -> bool:
    return record_proto == proto or record_proto == ""


def service_name(port: int, proto: str = "tcp", *,
                 etc_services: str | os.PathLike[str] | None = ETC_SERVICES) -> str | None:
    """The name to show beside a port, as ``ss``/``netstat`` would.

    Args:
        port: 0-65535.
        proto: ``"tcp"``, ``"udp"``, ``"sctp"`` or ``"dccp"`` (any case); other protocols
            (``"unix"``, ``"raw"``) have no service names: None.
        etc_services: services(5) file to prefer; None to use IANA only.
    Returns:
        the first /etc/services name for ``port/proto``; else the first IANA assignment
        covering the port (single-port records before ranges, so 6001 gives ``"x11"``); None
        when the port is unassigned, reserved or unknown.
    Raises:
        ValueError: ``port`` is not an int 0-65535.
    """
    _check_port(port)
    proto = proto.lower()
    if proto not in TRANSPORTS:
        return None
    for entry in _etc(etc_services).by_port.get(port, ()):
        if entry.proto == proto:
            return entry.name
    for line in _iana().lines_for_port(port):
        _, row_proto, _, name, _ = line.split("\t")
        if name and _proto_matches(row_proto, proto):
            return name
    return None


def lookup(query: str, *,
           etc_services: str | os.PathLike[str] | None = ETC_SERVICES) -> list[ServiceEntry]:
    """Registry entries for a port number or a service name.

    Args:
        query: ASCII digits (``"443"``, ``"0"``) for a port: every entry whose port or range
            contains it, all protocols, both sources, Unassigned/Reserved blocks included (their
            ``name`` is ``""``). Anything else is a service name, case-insensitive; it also
            matches /etc/services aliases (``"www"`` finds ``http``).
        etc_services: services(5) file; None for IANA only.
    Returns:
        /etc/services entries first (file order), then IANA entries (for a port: single-port
        records, then ranges; for a name: registry order). ``[]`` when nothing matches.
    Raises:
        InvalidInput: empty query, or a number above 65535.
    """
    if not query or not query.strip():
        raise InvalidInput("empty service query: give a port number or a service name")
    etc = _etc(etc_services)
    if _DIGITS_RE.fullmatch(query):
        port = parse_port(query, allow_zero=True)
        return [*etc.by_port.get(port, ()), *map(_iana_entry, _iana().lines_for_port(port))]
    key = query.lower()
    return [*etc.by_name.get(key, ()), *map(_iana_entry, _iana().lines_for_name(key))]


def resolve_service(name: str, proto: str = "tcp", *,
                    etc_services: str | os.PathLike[str] | None = ETC_SERVICES) -> int:
    """The port of a service name, for ``portscope https`` (like ``getservbyname``).

    Args:
        name: service name or /etc/services alias, case-insensitive.
        proto: ``"tcp"``, ``"udp"``, ``"sctp"`` or ``"dccp"``.
        etc_services: services(5) file to prefer; None for IANA only.
    Returns:
        the /etc/services port for ``name/proto`` if listed, else the first IANA assignment's
        port (for a range: its first port; ``x11`` -> 6000; ``http-alt`` -> 591, IANA's first).
    Raises:
        InvalidInput: unknown protocol; empty or unknown name (the message suggests close
            names); a name registered only for other protocols (the message names them).
    """
    proto = proto.lower()
    if proto not in TRANSPORTS:
        raise InvalidInput(f"unknown protocol {proto!r}: expected one of tcp, udp, sctp, dccp")
    if not name.strip():
        raise InvalidInput("empty service name")
    key = name.lower()
    etc_entries = _etc(etc_services).by_name.get(key, ())
    for entry in etc_entries:
        if entry.proto == proto:
            return entry.port_low
    lines = _iana().lines_for_name(key)
    for line in lines:
        ports, row_proto, _ = line.split("\t", 2)
        if _proto_matches(row_proto, proto):
            return _bounds(ports)[0]
    others = sorted({e.proto for e in etc_entries} | {line.split("\t", 2)[1] for line in lines})
    if others:
        raise InvalidInput(f"service {name!r} has no {proto} port (registered for "
                           f"{', '.join(others)})")
    raise InvalidInput(f"unknown service name {name!r}{_suggestion(key, etc_services)}")


def _suggestion(key: str, etc_services: str | os.PathLike[str] | None) -> str:
    """``"; did you mean ...?"`` from difflib, or ``""``. About 15 ms (error path only)."""
    import difflib
    candidates = _iana().names() | _etc(etc_services).by_name.keys()
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.75)
    return f"; did you mean {', '.join(close)}?" if close else ""


def is_unauthorized_use(port: int, proto: str) -> bool:
    """Whether IANA reports unauthorized use of ``port`` for ``proto``.

    Source: the registry's "Unauthorized Use Reported" column (see the module docstring for how
    notes on range records are narrowed to the ports they name). IANA records without a
    protocol count for every protocol.

    Args:
        port: 0-65535.
        proto: ``"tcp"``, ``"udp"``, ``"sctp"``, ``"dccp"``; anything else gives False.
    Raises:
        ValueError: ``port`` is not an int 0-65535.
    """
    _check_port(port)
    proto = proto.lower()
    if proto not in TRANSPORTS:
        return False
    for line in _iana().lines_for_port(port):
        ports, row_proto, unauth, _, _ = line.split("\t")
        if unauth and _proto_matches(row_proto, proto) and any(
                low <= port <= high for low, high in _unauthorized_ranges(ports, unauth)):
            return True
    return False
