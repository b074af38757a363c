"""pick_free_ports(): ports that really bind now, held by no socket, outside the ephemeral range.

A port is picked when:

- no socket of the network namespace, TCP or UDP, in any state (TIME_WAIT included), has it as
  its local port (one sock_diag dump, no owner scan);
- it is outside the ephemeral range (``net.ipv4.ip_local_port_range``: outgoing connections
  take such ports at any time) and not in ``net.ipv4.ip_local_reserved_ports``;
- a bind without SO_REUSEADDR succeeds on IPv4 and on IPv6 (``0.0.0.0`` and ``::`` with
  IPV6_V6ONLY, so a dual-stack wildcard could bind it too), or on ``host`` only, for every
  protocol asked.

Ports with no service name (IANA registry or /etc/services) are preferred; without ``near`` the
order is random, so that concurrent callers seldom pick the same port.

**The pick-then-use race.** A port returned by ``pick_free_ports()`` is free when the probe
socket closes; any process may bind it before the caller does. When the caller starts the
program that will use the port, ``bind_free_ports()`` is race-free: it returns the probe
sockets still bound, and the caller hands a descriptor to the program (``pass_fds``, systemd-
style socket activation) or closes it just before the program binds.
"""

from __future__ import annotations

import errno as _errno
import random
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .errors import InvalidInput
from .filters import SocketFilter
from .ports import HostPortRanges, host_port_ranges, parse_address
from .snapshot import take_snapshot
from .types import Proto

DEFAULT_RANGE = (1024, 65535)
MAX_COUNT = 1000


@dataclass(slots=True)
class BoundPort:
    """A free port whose probe sockets are still bound (not listening).

    Attributes:
        port: the port.
        sockets: the bound sockets, in the order probed: per protocol, IPv4 then IPv6 (or the
            one ``host`` socket). A TCP server calls ``listen()`` on the one it wants.
    """

    port: int
    sockets: tuple[socket.socket, ...]

    def close(self) -> None:
        """Close every socket (the port is then free for anyone)."""
        for sock in self.sockets:
            sock.close()

    def __enter__(self) -> "BoundPort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _protos(protos: Sequence[Proto | str]) -> tuple[Proto, ...]:
    result = tuple(dict.fromkeys(Proto(p) for p in protos))
    if not result or any(p not in (Proto.TCP, Proto.UDP) for p in result):
        raise ValueError(f"protos must be tcp and/or udp, not {protos!r}")
    return result


def _targets(host: str | None) -> list[tuple[int, str, int, bool]]:
    """``(family, address, scope_id, v6only)`` to probe: both wildcards, or ``host``."""
    if host is None:
        targets = [(socket.AF_INET, "0.0.0.0", 0, False)]
        try:
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
            targets.append((socket.AF_INET6, "::", 0, True))
        except OSError:          # no IPv6 in this kernel or namespace: IPv4 only
            pass
        return targets
    text, _, zone = parse_address(host).partition("%")
    if ":" not in text:
        return [(socket.AF_INET, text, 0, False)]
    scope = (int(zone) if zone.isdigit() else socket.if_nametoindex(zone)) if zone else 0
    return [(socket.AF_INET6, text, scope, True)]


def _probe(port: int, protos: Sequence[Proto], targets) -> list[socket.socket] | None:
    """Bind every protocol x target on ``port`` without SO_REUSEADDR; return the bound
    sockets, or None (all closed) when one bind fails with EADDRINUSE or EACCES."""
    bound: list[socket.socket] = []
    try:
        for proto in protos:
            kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
            for family, address, scope, v6only in targets:
                sock = socket.socket(family, kind)
                bound.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
                    sock.bind((address, port, 0, scope))
                else:
                    sock.bind((address, port))
    except OSError as exc:
        for sock in bound:
            sock.close()
        if exc.errno in (_errno.EADDRINUSE, _errno.EACCES):
            return None
        if exc.errno in (_errno.EADDRNOTAVAIL, _errno.EINVAL):
            raise InvalidInput(f"cannot bind {address}: {exc.strerror} (not an address of "
                               "this network namespace, or a link-local one without "
                               "%zone)") from None
        raise
    return bound


@dataclass(slots=True)
class PortSearch:
    """What a search found, and why the other ports of its range were not picked.

    Attributes:
        ports: the free ports found, bound (``BoundPort``), in preference order.
        port_range: the inclusive ``(low, high)`` searched.
        ranges: this host's port policy the search applied.
        ephemeral: ports of the range skipped because they lie in the ephemeral range.
        reserved: ports skipped because they are in ``ip_local_reserved_ports``.
        in_use: ports skipped because a socket (any state, TIME_WAIT included) has them.
        bind_failed: ports whose trial bind failed (EADDRINUSE: a socket no dump showed;
            EACCES: a privileged port); counted only as far as the search went.
    """

    ports: list[BoundPort]
    port_range: tuple[int, int]
    ranges: HostPortRanges
    ephemeral: int = 0
    reserved: int = 0
    in_use: int = 0
    bind_failed: int = 0


def _candidates(search: PortSearch, near: int | None, protos: Sequence[Proto],
                used: set[int], rng: random.Random) -> Iterator[int]:
    """Allowed ports in preference order: unassigned before assigned; by distance from
    ``near`` (lower first on ties), else shuffled. Counts the skipped ports in ``search``."""
    from .services import service_name
    low, high = search.port_range
    ranges = search.ranges
    ports = []
    for p in range(low, high + 1):
        if ranges.is_ephemeral(p):
            search.ephemeral += 1
        elif ranges.is_reserved(p):
            search.reserved += 1
        elif p in used:
            search.in_use += 1
        else:
            ports.append(p)
    if near is None:
        rng.shuffle(ports)
    else:
        ports.sort(key=lambda p: (abs(p - near), p))
    assigned = []
    for port in ports:
        if any(service_name(port, p.value) for p in protos):
            assigned.append(port)
        else:
            yield port
    yield from assigned


def search_free_ports(count: int = 1, *, port_range: tuple[int, int] | None = None,
                      near: int | None = None, protos: Sequence[Proto | str] = ("tcp",),
                      host: str | None = None,
                      rng: random.Random | None = None) -> PortSearch:
    """Find free ports like ``bind_free_ports()`` and say why the rest of the range was not
    picked (``PortSearch``): the caller can then explain a shortfall. The found ports stay
    bound: close them (``BoundPort.close()``) or hand them on.

    Raises: as ``pick_free_ports()``.
    """
    if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 1-{MAX_COUNT}, not {count!r}")
    if port_range is None:
        port_range = DEFAULT_RANGE
    low, high = port_range
    if not (1 <= low <= high <= 65535):
        raise ValueError(f"port range must be within 1-65535 and ascending, not {port_range!r}")
    if near is not None and not 1 <= near <= 65535:
        raise ValueError(f"near must be 1-65535, not {near!r}")
    chosen = _protos(protos)
    targets = _targets(host)
    search = PortSearch([], (low, high), host_port_ranges())
    # every local port in use, whatever the protocol or state (TIME_WAIT blocks a bind)
    used = {s.local.port for s in take_snapshot(SocketFilter(port_range=port_range),
                                                owners=False).sockets}
    for port in _candidates(search, near, chosen, used, rng or random.Random()):
        sockets = _probe(port, chosen, targets)
        if sockets is None:
            search.bind_failed += 1
            continue
        search.ports.append(BoundPort(port, tuple(sockets)))
        if len(search.ports) == count:
            break
    return search


def bind_free_ports(count: int = 1, *, port_range: tuple[int, int] | None = None,
                    near: int | None = None, protos: Sequence[Proto | str] = ("tcp",),
                    host: str | None = None,
                    rng: random.Random | None = None) -> list[BoundPort]:
    """Find free ports like ``pick_free_ports()`` and keep them bound: no pick-then-use race.

    Returns:
        up to ``count`` ``BoundPort`` records (fewer when not enough ports bind); the caller
        owns the sockets: pass one to the program it starts, or close them.
    Raises: as ``pick_free_ports()``.
    """
    return search_free_ports(count, port_range=port_range, near=near, protos=protos,
                             host=host, rng=rng).ports


def pick_free_ports(count: int = 1, *, port_range: tuple[int, int] | None = None,
                    near: int | None = None, protos: Sequence[Proto | str] = ("tcp",),
                    host: str | None = None, rng: random.Random | None = None) -> list[int]:
    """Ports that bind now in the caller's network namespace (see the module docstring).

    The ports are free when this returns, not reserved: another process may bind one before
    the caller does (the pick-then-use race). Use ``bind_free_ports()`` to keep them bound.

    Args:
        count: how many ports, 1-1000.
        port_range: inclusive ``(low, high)`` to search (default 1024-65535; the ephemeral range
            and reserved ports are always skipped).
        near: prefer ports closest to this one.
        protos: ``"tcp"`` and/or ``"udp"``: the port must bind for each.
        host: probe this address only (default: ``0.0.0.0`` and ``::``).
        rng: the shuffle's random source (for reproducible picks).
    Returns:
        up to ``count`` ports (fewer when not enough bind).
    Raises:
        ValueError: count, range, near or protos out of bounds.
        InvalidInput: malformed ``host``, or not configured in this network namespace.
        OSError: a probe failed for another reason than EADDRINUSE or EACCES.
        BackendError: the socket dump failed.
    """
    found = bind_free_ports(count, port_range=port_range, near=near, protos=protos,
                            host=host, rng=rng)
    for bound in found:
        bound.close()
    return [bound.port for bound in found]

