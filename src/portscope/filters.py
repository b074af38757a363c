"""SocketFilter: which sockets a caller wants, handed to backends so they filter at the source.

Protocol, family, state and a single local port are pushed into the kernel request by the
netlink backend; the rest (port ranges, local address, process predicates) is applied in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import LISTENER_STATES, Family, Owner, Proto, Socket, State

ALL_PROTOS = frozenset({Proto.TCP, Proto.UDP})
ALL_FAMILIES = frozenset({Family.IPV4, Family.IPV6})
TCP_STATES = frozenset(State) - {State.UNCONN, State.CLOSE, State.PUBLISHED}
UDP_STATES = frozenset({State.UNCONN, State.ESTABLISHED})
UNIX_STATES = frozenset({State.LISTEN, State.ESTABLISHED, State.SYN_SENT, State.UNCONN})


@dataclass(frozen=True, slots=True)
class SocketFilter:
    """A selection of sockets.

    Attributes:
        protos: protocols to include (default tcp and udp; ``Proto.UNIX`` adds UNIX domain
            sockets).
        families: address families to include (default ipv4 and ipv6); applies to TCP and
            UDP only (a UNIX socket's family is always unix).
        states: states to include; None means every state.
        port_range: ``(low, high)`` inclusive bounds on the **local** port; None means any.
        address: a local address; a socket matches when it is bound to it or to a wildcard
            that covers it (``0.0.0.0``; ``::`` with v6only off also covers IPv4).
        pids: keep sockets held by one of these PIDs (needs owners).
        process: keep sockets held by a process whose name equals this (needs owners).
        uids: keep sockets held by a process of one of these real uids, or, with no visible
            owner, whose kernel socket uid is one of them.
    """

    protos: frozenset[Proto] = ALL_PROTOS
    families: frozenset[Family] = ALL_FAMILIES
    states: frozenset[State] | None = None
    port_range: tuple[int, int] | None = None
    address: str | None = None
    pids: frozenset[int] | None = None
    process: str | None = None
    uids: frozenset[int] | None = None

    @classmethod
    def listeners(cls, **kwargs) -> "SocketFilter":
        """The filter of ``portscope``'s default view: TCP LISTEN/BOUND_INACTIVE, UDP UNCONN."""
        return cls(states=LISTENER_STATES, **kwargs)

    @property
    def single_port(self) -> int | None:
        """The local port when ``port_range`` names exactly one port, else None."""
        if self.port_range and self.port_range[0] == self.port_range[1]:
            return self.port_range[0]
        return None

    @property
    def needs_owners(self) -> bool:
        """True when the filter can only be decided once owners are known."""
        return self.pids is not None or self.process is not None or self.uids is not None

    def states_for(self, proto: Proto) -> frozenset[State]:
        """The states of ``proto`` this filter wants (empty when the protocol is excluded)."""
        if proto not in self.protos:
            return frozenset()
        valid = TCP_STATES if proto is Proto.TCP else UNIX_STATES if proto is Proto.UNIX \
            else UDP_STATES
        return valid if self.states is None else valid & self.states

    def match_socket(self, sock: Socket) -> bool:
        """Apply the socket-level predicates (everything but the owner ones)."""
        if sock.proto not in self.protos:
            return False
        if sock.family not in self.families and sock.proto is not Proto.UNIX:
            return False
        if self.states is not None and sock.state not in self.states:
            return False
        if self.port_range is not None:
            port = sock.local.port
            if port is None or not self.port_range[0] <= port <= self.port_range[1]:
                return False
        if self.address is not None and (sock.proto is Proto.UNIX
                                         or not address_covers(sock, self.address)):
            return False
        return True

    def match_owners(self, sock: Socket) -> bool:
        """Apply the owner predicates (``pids``, ``process``, ``uids``) to a joined socket."""
        if not self.needs_owners:
            return True
        if not sock.owners:
            return self.uids is not None and self.pids is None and self.process is None \
                and sock.uid in self.uids
        return any(self._match_owner(o) for o in sock.owners)

    def _match_owner(self, owner: Owner) -> bool:
        if self.pids is not None and owner.pid not in self.pids:
            return False
        if self.process is not None and owner.process.name != self.process:
            return False
        if self.uids is not None and owner.process.uid not in self.uids:
            return False
        return True


def address_covers(sock: Socket, address: str) -> bool:
    """True when ``sock``'s local address is ``address`` or a wildcard that receives for it.

    ``0.0.0.0`` covers every IPv4 address; ``::`` covers every IPv6 address and, unless the
    socket is known to be v6only, every IPv4 address too (IPv4-mapped ``::ffff:a.b.c.d`` is
    IPv4; a backend that cannot tell v6only, such as ``/proc/net``, gets the benefit of doubt).
    """
    from .identity import ip_address      # ipaddress: 5 ms, only when an address is given
    want = ip_address(address)
    have = ip_address(sock.local.address)
    if have == want:
        return True
    if not have.is_unspecified:
        return False
    if have.version == want.version:
        return True
    return have.version == 6 and want.version == 4 and sock.v6only is not True
