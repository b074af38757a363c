"""The fast Linux backend: TCP and UDP sockets over NETLINK_SOCK_DIAG (``inet_diag``), and
UNIX domain sockets (``unix_diag``, ``dump_unix``).

TCP is dumped with one legacy ``TCPDIAG_GETSOCK`` request, which walks the kernel's hash tables
once for IPv4 and IPv6; UDP needs one ``SOCK_DIAG_BY_FAMILY`` request per family. Filters are
pushed into the kernel: the state mask (a LISTEN-only mask skips the established hash), and a
single local port in ``idiag_sport``. TCP sockets that are bound but neither listening nor
connected are asked for with ``TCP_BOUND_INACTIVE`` in the mask and reported as BOUND_INACTIVE.
"""

from __future__ import annotations

import bisect
import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar
from dataclasses import dataclass, field

from ..errors import BackendError
from ..filters import SocketFilter
from ..sockstat import SocketCounts
from ..types import (Container, Endpoint, Family, Owner, OwnerUnknown, Proto, Socket, State,
                     UnixInfo, UnixType)
from .. import unixsock
from . import _netlink_ahead
from . import _netlink_io as nlio
from . import unix_name, unix_raw_names
from . import _netlink_wire as w

T = TypeVar("T")
NAME = "netlink"
PROVIDES_OWNERS = False

_TCP_STATE_NUMBERS = {
    State.ESTABLISHED: w.TCP_ESTABLISHED, State.SYN_SENT: w.TCP_SYN_SENT,
    State.SYN_RECV: w.TCP_SYN_RECV, State.FIN_WAIT1: w.TCP_FIN_WAIT1,
    State.FIN_WAIT2: w.TCP_FIN_WAIT2, State.TIME_WAIT: w.TCP_TIME_WAIT,
    State.CLOSE_WAIT: w.TCP_CLOSE_WAIT, State.LAST_ACK: w.TCP_LAST_ACK,
    State.LISTEN: w.TCP_LISTEN, State.CLOSING: w.TCP_CLOSING,
    State.NEW_SYN_RECV: w.TCP_NEW_SYN_RECV, State.BOUND_INACTIVE: w.TCP_BOUND_INACTIVE,
}
_UDP_STATE_NUMBERS = {State.ESTABLISHED: w.TCP_ESTABLISHED, State.UNCONN: w.TCP_CLOSE}

# kernel state number (a byte) -> State, per protocol; None for a number the kernel does not
# send (decode refuses it). A TCP socket in TCP_CLOSE only comes from the bind-hash walk that
# TCP_BOUND_INACTIVE asks for.
_TCP_STATES: list[State | None] = [None] * 256
for _state, _number in _TCP_STATE_NUMBERS.items():
    _TCP_STATES[_number] = _state
_TCP_STATES[w.TCP_CLOSE] = State.BOUND_INACTIVE
_UDP_STATES: list[State | None] = [None] * 256
for _state, _number in _UDP_STATE_NUMBERS.items():
    _UDP_STATES[_number] = _state


@dataclass(slots=True)
class RawDump:
    """The undecoded reply of one dump: per request, its protocol and netlink datagrams.

    Decoding is deferred (``decode``) so that a snapshot can join owners while it decodes and
    stream sockets out without holding them all (measured: about 25 MB of datagrams for
    200,000 sockets, against about 100 MB as objects).
    """

    flt: SocketFilter
    netns: int | None
    replies: list[tuple[Proto, list[bytes], bool]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(chunk) for _, chunks, _ in self.replies for chunk in chunks)


def collect(flt: SocketFilter = SocketFilter(), netns: int | None = None,
            counts: SocketCounts | None = None, sock: socket.socket | None = None,
            previous: list | None = None) -> tuple[RawDump, list[str]]:
    """Run the kernel dumps that ``flt`` needs and keep their raw replies.

    Args:
        flt: protocols, families, states and a single port go to the kernel.
        netns: the namespace inode to record in each socket (None: unknown).
        counts: the namespace's socket counts (``sockstat.read()`` in it): a request they
            prove empty is not sent (a TCP dump walks hashes that all namespaces share).
        sock: a NETLINK_SOCK_DIAG socket of that namespace to use, and leave open (a poller
            keeps one, so that an unchanged dump comes back byte for byte: the replies carry
            the socket's netlink port id); default: one opened and closed here.
        previous: the ``replies`` of the same dump through the same socket the last time: a
            datagram equal to the one at its place then is not walked again (a poller's
            unchanged dump costs the kernel's work and a comparison).
    Returns:
        ``(RawDump, warnings)``; decode it with ``decode()``.
    Raises:
        BackendUnavailable: no netlink sock_diag here (asked only when a dump is needed:
            a filter of UNIX sockets alone opens no netlink socket).
        BackendError: the kernel refused a request.
    Privileges: none; every user sees every socket of the namespace (with its uid and inode).
    """
    sport = flt.single_port or 0
    raw = RawDump(flt, netns)
    warnings: list[str] = []
    requests = []
    tcp_states = flt.states_for(Proto.TCP)
    if tcp_states and (counts is None or counts.may_hold_tcp(State.BOUND_INACTIVE in tcp_states)):
        mask = w.states_mask(_TCP_STATE_NUMBERS[s] for s in tcp_states)
        requests.append((w.inet_diag_req_v1(mask, sport), Proto.TCP))
    udp_states = flt.states_for(Proto.UDP)
    if udp_states:
        mask = w.states_mask(_UDP_STATE_NUMBERS[s] for s in udp_states)
        for family, af in ((Family.IPV4, socket.AF_INET), (Family.IPV6, socket.AF_INET6)):
            if family in flt.families and (counts is None or counts.may_hold_udp(family)):
                requests.append((w.inet_diag_req_v2(af, socket.IPPROTO_UDP, mask, sport),
                                 Proto.UDP))
    if requests:                # none (UNIX sockets only): no netlink socket either
        own = sock is None
        if own:
            sock = nlio.open_diag_socket()
        try:
            for index, (request, proto) in enumerate(requests):
                prior = previous[index] if previous and index < len(previous) else None
                _collect_with_retry(sock, request, proto, raw, warnings,
                                    prior[1] if prior and prior[0] is proto and not prior[2]
                                    else None)
        finally:
            if own:
                sock.close()
    return raw, warnings


def split(raw: RawDump, count: int) -> list[RawDump]:
    """Cut a dump into ``count`` dumps of consecutive datagrams, to decode in parallel (an
    interrupted reply stays whole in the first: its duplicates are dropped across it)."""
    parts = [RawDump(raw.flt, raw.netns) for _ in range(count)]
    for proto, chunks, interrupted in raw.replies:
        if interrupted:
            parts[0].replies.append((proto, chunks, True))
            continue
        for k, part in enumerate(parts):
            part.replies.append((proto, chunks[k * len(chunks) // count:
                                              (k + 1) * len(chunks) // count], False))
    return parts


def dump(flt: SocketFilter = SocketFilter(), netns: int | None = None,
         counts: SocketCounts | None = None) -> tuple[list[Socket], list[str]]:
    """Dump the TCP and UDP sockets of the caller's network namespace that ``flt`` selects.

    Returns:
        ``(sockets without owners, warnings)``; the owner predicates of ``flt`` are not applied.
    Raises:
        BackendUnavailable, BackendError: as ``collect`` (``counts`` too).
    Source: NETLINK_SOCK_DIAG (``TCPDIAG_GETSOCK`` for TCP, ``SOCK_DIAG_BY_FAMILY`` for UDP).
    """
    raw, warnings = collect(flt, netns, counts)
    return list(decode(raw)), warnings


def _collect_with_retry(sock, request: bytes, proto: Proto, raw: RawDump,
                        warnings: list[str], prior: list[bytes] | None = None) -> None:
    # NLM_F_DUMP_INTR: the tables changed during the dump; retry a few times, then keep the
    # last reply (decode drops duplicates from it) and say so.
    for _attempt in range(nlio.MAX_DUMP_ATTEMPTS):
        chunks, interrupted = nlio.receive(nlio.request_chunks(sock, request),
                                           w.NLMSG_INET_DIAG_MSG.size, prior)
        if not interrupted:
            raw.replies.append((proto, chunks, False))
            return
    raw.replies.append((proto, chunks, True))
    warnings.append(nlio.interrupted_warning(proto))


def inodes(raw: RawDump) -> set[int]:
    """The socket inodes of a ``RawDump`` (0, for sockets without descriptor, left out),
    read without decoding the messages (to scan owners for exactly these)."""
    header = w.NLMSGHDR.unpack_from
    inode_at = w.U32.unpack_from
    offset = w.IDIAG_INODE_OFFSET
    full = w.NLMSG_INET_DIAG_MSG.size
    msg_type = w.SOCK_DIAG_BY_FAMILY, w.TCPDIAG_GETSOCK
    found: set[int] = set()
    for _proto, chunks, _interrupted in raw.replies:
        for chunk in chunks:
            off = 0
            while off + full <= len(chunk):
                length, kind, _flags, _seq, _pid = header(chunk, off)
                if kind not in msg_type:
                    break
                found.add(inode_at(chunk, off + offset)[0])
                off += (length + 3) & ~3
    found.discard(0)
    return found


def decode(raw: RawDump, owners: Mapping[int, tuple[Owner, ...]] | None = None,
           missing: OwnerUnknown | None = None, kernel: OwnerUnknown | None = None,
           cgroups: Mapping[int, Container] | None = None) -> Iterator[Socket]:
    """Decode a ``RawDump`` into sockets, lazily, joining owners as it goes.

    Args:
        raw: from ``collect``.
        owners: socket inode -> its owners (default: no owners are joined).
        missing: ``owner_unknown`` for a socket with an inode but no entry in ``owners``.
        kernel: ``owner_unknown`` for a socket without inode (TIME_WAIT, orphans).
        cgroups: cgroup id -> container; for a socket with an inode but no owner, its
            ``INET_DIAG_CGROUP_ID`` is looked up there to fill ``container`` (the attribute
            is not even searched for sockets that have owners).
    Yields:
        ``Socket`` records in kernel order, filtered by ``raw.flt``'s socket predicates.

    This is the hot loop of a snapshot (about 1 us per socket): one ``unpack_from`` per
    message, cached address texts, no per-socket function calls but ``tuple.__new__``.
    """
    flt = raw.flt
    check = None if flt == SocketFilter() else flt.match_socket
    owned = (owners or {}).get
    netns = raw.netns
    unpack = w.NLMSG_INET_DIAG_MSG.unpack_from
    full = w.NLMSG_INET_DIAG_MSG.size
    bswap = w.BSWAP16
    new = tuple.__new__
    ntop = socket.inet_ntop
    af_inet, af_inet6 = socket.AF_INET, socket.AF_INET6
    ipv4, ipv6 = Family.IPV4, Family.IPV6
    names4: dict[bytes, str] = {}
    names6: dict[bytes, str] = {}
    find_attr = w.find_attr
    skv6only = w.INET_DIAG_SKV6ONLY
    cgroup_attr = w.INET_DIAG_CGROUP_ID
    cgroup_of = cgroups.get if cgroups is not None else None
    u64 = w.U64.unpack_from
    msg_type = w.SOCK_DIAG_BY_FAMILY, w.TCPDIAG_GETSOCK
    try:
        for proto, chunks, interrupted in raw.replies:
            states = _TCP_STATES if proto is Proto.TCP else _UDP_STATES
            seen: set[tuple[int, int]] | None = set() if interrupted else None
            for chunk in chunks:
                size = len(chunk)
                off = 0
                while off + full <= size:
                    (length, kind, _flags, _seq, _pid, family, state, _timer, _retrans, sport,
                     dport, src, dst, ifindex, cookie, _expires, rqueue, wqueue, uid, inode
                     ) = unpack(chunk, off)
                    if kind not in msg_type:        # NLMSG_DONE (errors were raised by collect)
                        break
                    st = states[state]
                    if st is None:
                        raise BackendError(f"netlink sock_diag: unknown {proto} state {state}")
                    if family == af_inet:
                        fam = ipv4
                        local_addr = names4.get(src)
                        if local_addr is None:
                            local_addr = names4[src] = ntop(af_inet, src[:4])
                        v6only = None
                        if dport:
                            remote_addr = names4.get(dst)
                            if remote_addr is None:
                                remote_addr = names4[dst] = ntop(af_inet, dst[:4])
                    else:
                        fam = ipv6
                        local_addr = names6.get(src)
                        if local_addr is None:
                            local_addr = names6[src] = ntop(af_inet6, src)
                        if ifindex and src[0] == 0xFE and src[1] & 0xC0 == 0x80:
                            local_addr = _scoped(local_addr, ifindex)
                        pos = find_attr(chunk, off + full, off + length, skv6only)
                        v6only = None if pos < 0 else chunk[pos] == 1
                        if dport:
                            remote_addr = names6.get(dst)
                            if remote_addr is None:
                                remote_addr = names6[dst] = ntop(af_inet6, dst)
                    off += (length + 3) & ~3
                    if seen is not None:
                        if (inode, cookie) in seen:
                            continue
                        seen.add((inode, cookie))
                    held = owned(inode, ()) if inode else ()
                    container = None
                    if not held and inode and cgroup_of is not None:
                        # the owner is hidden: the socket's own cgroup may still name a container
                        start = off - ((length + 3) & ~3)
                        pos = find_attr(chunk, start + full, start + length, cgroup_attr)
                        if pos >= 0:
                            container = cgroup_of(u64(chunk, pos)[0])
                    sock = new(Socket, (
                        proto, fam, new(Endpoint, (local_addr, bswap[sport])),
                        new(Endpoint, (remote_addr, bswap[dport])) if dport else None,
                        st, inode, uid, netns, v6only, rqueue, wqueue, held,
                        None if held else (missing if inode else kernel), cookie, container, None,
                        None))
                    if check is None or check(sock):
                        yield sock
    except (struct.error, IndexError) as exc:    # an attribute overruns its message
        raise BackendError(f"netlink sock_diag: malformed reply ({exc})") from None


#: at most this many port ranges go into the kernel's filter of ``held_connections`` (the
#: closest ones merged: the kernel may then send a few sockets of other ports, dropped here)
MAX_PORT_RANGES = 64


def port_ranges(ports: Iterable[int], limit: int = MAX_PORT_RANGES) -> list[tuple[int, int]]:
    """``ports`` as sorted inclusive ``(low, high)`` ranges, at most ``limit`` of them: runs
    of consecutive ports, then the smallest gaps closed until ``limit`` are left (so the
    ranges may hold ports not in ``ports``). Empty for no port."""
    ordered = sorted(set(ports))
    if not ordered:
        return []
    gaps = [(b - a, i) for i, (a, b) in enumerate(zip(ordered, ordered[1:])) if b - a > 1]
    kept = sorted(i for _size, i in sorted(gaps, reverse=True)[:limit - 1])
    starts = [0] + [i + 1 for i in kept]
    ends = kept + [len(ordered) - 1]
    return [(ordered[a], ordered[b]) for a, b in zip(starts, ends)]


def held_connections(ports: Iterable[int], states: Iterable[State]
                     ) -> tuple[dict[tuple[int, str], list[int]], list[str]]:
    """The TCP sockets of the caller's network namespace in ``states`` whose local port is in
    ``ports`` and that have a descriptor (inode not 0: a connection still waiting in an accept
    queue, an orphan, a TIME_WAIT socket have none), decoded no further than their local
    endpoint: enough to count the connections of listeners without building sockets.

    Args:
        ports: local ports (host order).
        states: TCP states (e.g. ``snapshot.ACCEPTED_STATES``).
    Returns:
        ``({(local port, local address as in Socket.local): [inode, ...]}, warnings)``; no
        dump (and empty) without ports.
    Raises:
        BackendUnavailable, BackendError: as ``collect``.
    Source: one TCPDIAG_GETSOCK dump with the states mask and a ``port_filter`` program over
    ``port_ranges(ports)``: the kernel walks its established hash and sends only those ports'
    sockets (each message read for family, port, address, interface and inode).
    """
    wanted = set(ports)
    if not wanted:
        return {}, []
    request = w.inet_diag_req_v1(w.states_mask(_TCP_STATE_NUMBERS[s] for s in states),
                                 bytecode=w.port_filter(port_ranges(wanted)))
    raw = RawDump(SocketFilter(), None)
    warnings: list[str] = []
    sock = nlio.open_diag_socket()
    try:
        _collect_with_retry(sock, request, Proto.TCP, raw, warnings)
    finally:
        sock.close()
    unpack = w.NLMSG_INET_DIAG_LOCAL.unpack_from
    full = w.NLMSG_INET_DIAG_LOCAL.size
    msg_type = w.SOCK_DIAG_BY_FAMILY, w.TCPDIAG_GETSOCK
    grouped: dict[tuple[int, int, bytes, int], list[int]] = {}
    for _proto, chunks, interrupted in raw.replies:
        for chunk in chunks:
            size = len(chunk)
            off = 0
            while off + full <= size:
                length, kind, family, sport, src, ifindex, inode = unpack(chunk, off)
                if kind not in msg_type:
                    break
                off += (length + 3) & ~3
                if inode:
                    key = (family, sport, src, ifindex)
                    found = grouped.get(key)
                    if found is None:
                        grouped[key] = [inode]
                    else:
                        found.append(inode)
    result: dict[tuple[int, str], list[int]] = {}
    for (family, sport, src, ifindex), inodes in grouped.items():
        port = w.BSWAP16[sport]
        if port in wanted:
            result.setdefault((port, local_address(family, src, ifindex)), []).extend(inodes)
    if raw.replies and raw.replies[-1][2]:       # interrupted: a socket may come twice
        result = {key: list(dict.fromkeys(inodes)) for key, inodes in result.items()}
    return result, warnings


def local_address(family: int, raw: bytes, ifindex: int) -> str:
    """The text of an ``idiag_src`` (16 bytes; IPv4 in the first 4), as ``decode`` writes
    it: an IPv6 link-local address with its interface (``fe80::1%eth0``)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[:4])
    address = socket.inet_ntop(family, raw)
    if ifindex and raw[0] == 0xFE and raw[1] & 0xC0 == 0x80:
        return _scoped(address, ifindex)
    return address


def _scoped(address: str, ifindex: int) -> str:
    try:
        return f"{address}%{socket.if_indextoname(ifindex)}"
    except OSError:
        return f"{address}%{ifindex}"


# ---------------------------------------------------------------------------------------------
# UNIX domain sockets (unix_diag)

_UNIX_TYPES = {socket.SOCK_STREAM: UnixType.STREAM, socket.SOCK_DGRAM: UnixType.DGRAM,
               socket.SOCK_SEQPACKET: UnixType.SEQPACKET}
# a UNIX socket's sk_state: TCP_LISTEN, TCP_ESTABLISHED (connected; a connect() under way is
# TCP_SYN_SENT), TCP_CLOSE (not connected)
_UNIX_STATES: list[State | None] = [None] * 256
_UNIX_STATES[w.TCP_ESTABLISHED] = State.ESTABLISHED
_UNIX_STATES[w.TCP_SYN_SENT] = State.SYN_SENT
_UNIX_STATES[w.TCP_CLOSE] = State.UNCONN
_UNIX_STATES[w.TCP_LISTEN] = State.LISTEN


@dataclass(slots=True)
class UnixDump:
    """The undecoded reply of one namespace's unix_diag dump (``collect_unix``): its
    datagrams, the namespace inode to record in each socket, and whether the kernel flagged
    it as interrupted (a socket may then be listed twice).

    A dump received ahead by a child process (``_netlink_ahead``, which the CLI starts) has
    ``ahead`` and no ``chunks`` yet: ``decode()`` decodes its datagrams as they arrive,
    ``wait()`` only waits for them; either fills ``chunks`` and ``interrupted``, and adds to
    ``warnings`` (the list ``collect_unix`` returned) the warning of a dump interrupted every
    time.
    """

    chunks: list[bytes]
    netns: int | None
    interrupted: bool = False
    ahead: _netlink_ahead.DumpAhead | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)

    def decode(self) -> list[Socket]:
        """Every socket of the reply (``decode_unix``).

        Raises:
            BackendError: a malformed reply, or (received ahead) the dump failed.
        """
        if self.ahead is not None:
            sockets = self._receive_ahead(lambda reply: decode_unix(reply, self.netns))
            if not self.interrupted:
                return sockets
        return decode_unix(self.chunks, self.netns, dedup=self.interrupted)

    def link(self) -> UnixLinks:
        """What a join needs of every socket of the reply, read without decoding them
        (``link_unix``); ``chunks`` then holds the reply cut at message boundaries into runs
        of about ``PIECE_BYTES``, to be decoded a share at a time (``decode_unix_share``).

        Raises:
            BackendError: a malformed reply, or (received ahead) the dump failed.
        """
        links = self._receive_ahead(link_unix) if self.ahead is not None \
            else link_unix(self.chunks)
        self.chunks = links.pieces
        return links

    def wait(self) -> None:
        """Wait for the whole reply of a dump received ahead (nothing to do for another).

        Raises:
            BackendError: the dump failed.
        """
        if self.ahead is not None:
            self._receive_ahead(list)

    def _receive_ahead(self, read: Callable[[Iterable[bytes]], T]) -> T:
        """``read`` each reply of the dump received ahead, as it arrives, until the last
        (the child asks again while the kernel flags a reply interrupted); return what
        ``read`` made of the last."""
        ahead, self.ahead = self.ahead, None
        try:
            while True:
                reply = ahead.reply()
                result = read(reply)
                if reply.last:
                    break
        finally:
            ahead.close()
        self.chunks, self.interrupted = reply.chunks, reply.interrupted
        if reply.interrupted:
            self.warnings.append(nlio.interrupted_warning(Proto.UNIX))
        return result


def collect_unix(netns: int | None = None, counts: SocketCounts | None = None
                 ) -> tuple[UnixDump, list[str]]:
    """Dump every UNIX domain socket of the caller's network namespace and keep the reply
    undecoded (``UnixDump``), so that a lookup decodes only the sockets it needs
    (``decode_unix_related``). What it holds, arguments, errors and source: see ``dump_unix``.

    When the CLI started this very dump ahead (``_netlink_ahead.prefetch_unix``: the same
    request, in the namespace ``netns``), that one is taken, still arriving: the warning of
    a dump interrupted every time then comes in the returned list once it was decoded
    (``UnixDump.decode``, ``wait``).
    """
    if counts is not None and not counts.may_hold_unix():
        return UnixDump([], netns), []
    warnings: list[str] = []
    request = w.unix_diag_req(w.UNIX_SHOW)
    ahead = _netlink_ahead.take(request, netns)
    if ahead is not None:
        ahead.check_start()
        return UnixDump([], netns, ahead=ahead, warnings=warnings), warnings
    sock = nlio.open_diag_socket()
    try:
        for _attempt in range(nlio.MAX_DUMP_ATTEMPTS):
            chunks, interrupted = nlio.receive(nlio.request_chunks(sock, request),
                                               w.UNIX_ATTRS_OFFSET)
            if not interrupted:
                break
        else:
            warnings.append(nlio.interrupted_warning(Proto.UNIX))
    finally:
        sock.close()
    return UnixDump(chunks, netns, interrupted), warnings


def dump_unix(netns: int | None = None, counts: SocketCounts | None = None
              ) -> tuple[list[Socket], list[str]]:
    """Every UNIX domain socket of the caller's network namespace, in every state.

    Each socket has ``proto`` and ``family`` "unix", ``local`` its name (path, ``@abstract``
    or ``""``), ``state`` LISTEN, ESTABLISHED, SYN_SENT or UNCONN, ``inode``, ``uid`` (-1 on
    kernels before 5.3, which do not report it), queues (for a listener: pending connections
    and the backlog limit, as ss shows them), ``cookie`` and ``unix`` (``UnixInfo``: type,
    the bound file's device and inode, the peer's inode, a listener's pending clients).
    Owners, ``remote`` and ``unix.peers`` are left empty: ``snapshot`` joins them over every
    namespace (a peer may live in another one: a path reaches across namespaces).

    Args:
        netns: the namespace inode to record in each socket (None: unknown).
        counts: the namespace's ``sockstat`` counts: when they prove it holds no socket of a
            process, no dump is asked for.
    Returns:
        ``(sockets, warnings)``.
    Raises:
        BackendUnavailable: no netlink sock_diag, or no ``unix_diag`` module (CONFIG_UNIX_DIAG).
        BackendError: the kernel refused the request.
    Privileges: none; every user sees every UNIX socket of the namespace.
    Source: NETLINK_SOCK_DIAG ``SOCK_DIAG_BY_FAMILY`` for AF_UNIX with ``UDIAG_SHOW_NAME``,
    ``VFS``, ``PEER``, ``ICONS``, ``RQLEN`` and ``UID``.
    """
    raw, warnings = collect_unix(netns, counts)
    return raw.decode(), warnings


def decode_unix(chunks: list[bytes], netns: int | None = None, dedup: bool = False
                ) -> list[Socket]:
    """Decode the datagrams of a unix_diag dump (see ``dump_unix``); with ``dedup``, a socket
    listed twice (an interrupted dump) is kept once."""
    unpack = w.NLMSG_UNIX_DIAG_MSG.unpack_from
    full = w.UNIX_ATTRS_OFFSET
    attr = w.NLATTR.unpack_from
    pair = w.UNIX_DIAG_VFS_STRUCT.unpack_from
    u32 = w.U32.unpack_from
    tail = w.UNIX_TAIL.unpack_from
    tail_bytes, peer_bytes = w.UNIX_TAIL.size, w.UNIX_PEER_BYTES
    peer_head, rq_head, shutdown_head, uid_head = w.UNIX_TAIL_HEADERS
    name_attr, vfs_attr, peer_attr, icons_attr, rqlen_attr, uid_attr = (
        w.UNIX_DIAG_NAME, w.UNIX_DIAG_VFS, w.UNIX_DIAG_PEER, w.UNIX_DIAG_ICONS,
        w.UNIX_DIAG_RQLEN, w.UNIX_DIAG_UID)
    to_dev = w.kernel_dev_to_user
    types, states = _UNIX_TYPES, _UNIX_STATES
    new = tuple.__new__
    unix, unix_family = Proto.UNIX, Family.UNIX
    by_family = w.SOCK_DIAG_BY_FAMILY
    unnamed = new(Endpoint, ("", None))
    endpoints: dict[bytes, Endpoint] = {}
    seen: set[tuple[int, int]] | None = set() if dedup else None
    out: list[Socket] = []
    append = out.append
    try:
        for chunk in chunks:
            size = len(chunk)
            off = 0
            while off + full <= size:
                length, kind, _flags, _seq, _pid, _family, utype, ustate, inode, cookie = \
                    unpack(chunk, off)
                if kind != by_family:               # NLMSG_DONE
                    break
                end = off + length
                pos = off + full
                off += (length + 3) & ~3
                if seen is not None:
                    if (inode, cookie) in seen:
                        continue
                    seen.add((inode, cookie))
                local = unnamed
                dev = vfs = None
                pending: tuple[int, ...] = ()
                # the usual last attributes read at once at their place (a quarter of the
                # decoding time); the loop reads those before them, or all when they differ.
                # PEER is taken here only when nothing precedes it: else the bytes before
                # RQLEN may be another attribute's payload
                stop = end - tail_bytes
                head0, peer, head1, rq, wq, head2, _shutdown, head3, uid = tail(chunk, stop) \
                    if stop >= pos else (0, 0, 0, 0, 0, 0, 0, 0, -1)
                if head1 != rq_head or head2 != shutdown_head or head3 != uid_head:
                    rq = wq = 0
                    uid = -1
                    stop = end
                    peer = None
                elif head0 != peer_head or stop != pos:     # the loop ends at RQLEN
                    stop += peer_bytes
                    peer = None
                while pos + 4 <= stop:
                    alen, akind = attr(chunk, pos)
                    if alen < 4 or pos + alen > stop:
                        raise BackendError(f"netlink sock_diag: malformed UNIX socket attribute "
                                           f"of {alen} bytes")
                    start = pos + 4
                    akind &= 0x3FFF
                    if akind == name_attr:
                        raw = chunk[start:pos + alen]
                        local = endpoints.get(raw)
                        if local is None:
                            local = endpoints[raw] = new(Endpoint, (unix_name(raw), None))
                    elif akind == vfs_attr:
                        vfs, kdev = pair(chunk, start)
                        dev = to_dev(kdev)
                    elif akind == peer_attr:
                        peer = u32(chunk, start)[0]
                    elif akind == icons_attr:
                        if alen > 4:
                            pending = tuple(memoryview(chunk)[start:pos + alen].cast("I"))
                    elif akind == rqlen_attr:
                        rq, wq = pair(chunk, start)
                    elif akind == uid_attr:
                        uid = u32(chunk, start)[0]
                    pos += (alen + 3) & ~3
                append(new(Socket, (
                    unix, unix_family, local, None, states[ustate] or State.CLOSE, inode, uid,
                    netns, None, rq, wq, (), None, cookie, None, None,
                    new(UnixInfo, (types.get(utype, UnixType.STREAM), dev, vfs, peer or None,
                                   pending, ())))))
    except (struct.error, ValueError, TypeError) as exc:  # a short or unaligned attribute
        raise BackendError(f"netlink sock_diag: malformed UNIX socket reply ({exc})") from None
    return out


#: a unix_diag message up to its first attribute's header: nlmsg_len, nlmsg_type,
#: udiag_state, udiag_ino, then nla_len and nla_type
_UNIX_LINK_HEAD = struct.Struct("=IH12xBxI8xHH")


class UnixLinks:
    """What ``unixsock.UnixJoin`` needs of every socket of a unix_diag reply (``link_unix``).

    Attributes:
        names: socket inode -> ``local`` of every named socket.
        referrers: flat pairs ``peer inode, inode`` of every socket with a peer.
        waiting_at: inode of a client in a listener's accept queue -> the listener's inode.
        pieces: the reply's messages, cut at message boundaries into runs of about
            ``PIECE_BYTES`` (their 4-byte alignment kept).
    """

    __slots__ = ("names", "referrers", "waiting_at", "pieces")

    #: bytes of a run of ``pieces``, about: shares of a reply are cut at runs
    PIECE_BYTES = 1 << 15

    def __init__(self) -> None:     # a plain class: a dataclass costs 0.3 ms at import
        self.names: dict[int, Endpoint] = {}
        self.referrers: list[int] = []
        self.waiting_at: dict[int, int] = {}
        self.pieces: list[bytes] = []


def link_unix(chunks: Iterable[bytes]) -> UnixLinks:
    """Read what a join needs of each socket of a unix_diag dump (its name, its peer's inode,
    a listener's pending clients) without decoding the sockets: a fifth of ``decode_unix``'s
    time, so that the decoding itself can be shared between processes
    (``decode_unix_share``).

    Args:
        chunks: the reply's datagrams (or runs of them), as ``decode_unix`` takes them.
    Returns:
        ``UnixLinks``.
    Raises:
        BackendError: a malformed reply.
    Source: the ``UNIX_DIAG_NAME``, ``PEER`` and ``ICONS`` attributes, which the kernel
    writes before ``RQLEN`` (``sk_diag_fill``); the walk of a message stops at the first of
    ``PEER``, ``ICONS`` or ``RQLEN``.
    """
    head = _UNIX_LINK_HEAD.unpack_from
    attr = w.NLATTR.unpack_from
    u32 = w.U32.unpack_from
    full, by_family = w.UNIX_ATTRS_OFFSET, w.SOCK_DIAG_BY_FAMILY
    first = _UNIX_LINK_HEAD.size
    name_attr, peer_attr, icons_attr, rqlen_attr = (
        w.UNIX_DIAG_NAME, w.UNIX_DIAG_PEER, w.UNIX_DIAG_ICONS, w.UNIX_DIAG_RQLEN)
    piece_bytes = UnixLinks.PIECE_BYTES
    new = tuple.__new__
    endpoints: dict[bytes, Endpoint] = {}
    links = UnixLinks()
    names, waiting_at, pieces = links.names, links.waiting_at, links.pieces
    refer = links.referrers.append
    try:
        for chunk in chunks:
            size = len(chunk)
            off = start = 0
            while off + first <= size:
                length, kind, _state, inode, alen, akind = head(chunk, off)
                if kind != by_family:               # NLMSG_DONE
                    break
                if off - start >= piece_bytes:
                    pieces.append(chunk[start:off])
                    start = off
                end = off + length
                pos = off + full
                off += (length + 3) & ~3
                if akind == peer_attr and alen == 8 and pos + 8 <= end:     # unnamed, connected
                    refer(u32(chunk, pos + 4)[0])
                    refer(inode)
                    continue
                while pos + 4 <= end:
                    alen, akind = attr(chunk, pos)
                    if alen < 4 or pos + alen > end:
                        raise BackendError(f"netlink sock_diag: malformed UNIX socket "
                                           f"attribute of {alen} bytes")
                    akind &= 0x3FFF
                    if akind == peer_attr:
                        refer(u32(chunk, pos + 4)[0])
                        refer(inode)
                        break
                    if akind == name_attr:
                        raw = chunk[pos + 4:pos + alen]
                        local = endpoints.get(raw)
                        if local is None:
                            local = endpoints[raw] = new(Endpoint, (unix_name(raw), None))
                        names[inode] = local
                    elif akind == icons_attr:
                        for client in memoryview(chunk)[pos + 4:pos + alen].cast("I"):
                            waiting_at[client] = inode
                        break
                    elif akind == rqlen_attr:
                        break
                    pos += (alen + 3) & ~3
            pieces.append(chunk[start:] if start else chunk)
    except (struct.error, ValueError, TypeError) as exc:  # a short or unaligned attribute
        raise BackendError(f"netlink sock_diag: malformed UNIX socket reply ({exc})") from None
    return links


def join_unix(dumps: Sequence[UnixDump], flt: SocketFilter) -> unixsock.UnixJoin:
    """A deferred ``unixsock.UnixJoin`` of the sockets of ``dumps`` (every covered namespace):
    linked now (``UnixDump.link``: a dump received ahead is received meanwhile), each share
    decoded when it is joined (``decode_unix_share``).

    Raises:
        BackendError: a malformed reply, or (received ahead) the dump failed.
    """
    names: dict[int, Endpoint] = {}
    referrers: list[int] = []
    waiting_at: dict[int, int] = {}
    for dump in dumps:
        links = dump.link()
        names.update(links.names)
        referrers += links.referrers
        waiting_at.update(links.waiting_at)
    return unixsock.UnixJoin.deferred(
        flt, names, referrers, waiting_at, lambda k, n: decode_unix_share(dumps, k, n),
        sum(len(chunk) for dump in dumps for chunk in dump.chunks))


def decode_unix_share(dumps: Sequence[UnixDump], index: int, count: int) -> list[Socket]:
    """The sockets of share ``index`` of ``count`` of ``dumps`` (received whole), decoded: each
    dump's ``chunks`` cut into ``count`` consecutive runs (an interrupted reply stays whole in
    the first share: its duplicates are dropped across it)."""
    found: list[Socket] = []
    for dump in dumps:
        chunks = dump.chunks
        if dump.interrupted:
            if index == 0:
                found += decode_unix(chunks, dump.netns, dedup=True)
            continue
        found += decode_unix(chunks[index * len(chunks) // count:
                                    (index + 1) * len(chunks) // count], dump.netns)
    return found


# Searches over the raw bytes of a unix_diag reply, each a literal (found fast) with what
# follows it read ahead; neither literal can overlap itself, so no match hides another. A
# hit is a candidate only: the message holding it is decoded and checked.
# A UNIX_DIAG_PEER attribute (8 bytes, type 2), its payload the peer's inode:
_PEER_ATTR = re.compile(re.escape(w.NLATTR.pack(8, w.UNIX_DIAG_PEER)) + b"(?=(....))",
                        re.DOTALL)
# a message header from its type (SOCK_DIAG_BY_FAMILY) on, of an AF_UNIX socket: udiag_ino
_UNIX_HEADER = re.compile(re.escape(struct.pack("=H", w.SOCK_DIAG_BY_FAMILY)) + b"(?=.{10}"
                          + re.escape(bytes((socket.AF_UNIX,))) + b".{3}(....))", re.DOTALL)


def decode_unix_related(dumps: Sequence[UnixDump], select: Callable[[Socket], bool]
                        ) -> list[Socket]:
    """The sockets of ``dumps`` that ``select`` takes and every socket their join needs
    (``unixsock.UnixJoin``: the sockets whose peer they are, their peers, for a client
    waiting in an accept queue its listener), decoded without decoding the others.

    Args:
        dumps: the replies of every covered namespace (a peer may be in another one).
        select: the predicate on decoded sockets (``unixsock.Selector``), with ``file_id``:
            ``(st_dev, st_ino)`` of the socket file its sockets are bound to, or None; and
            ``names``: the names it takes when there is no such file.
    Returns:
        those sockets, each once; the selected ones among others ``select`` does not take.
    Raises:
        BackendError: a malformed reply.
    Found in the raw bytes: the ``UNIX_DIAG_VFS`` attribute of the file (or
    ``UNIX_DIAG_NAME`` of a name), then ``UNIX_DIAG_PEER`` attributes naming a selected
    socket, the message headers of the selected ones' peers and, for a client waiting in an
    accept queue, any message holding its inode (the listener's). A hit is a candidate only:
    the message holding it is decoded and checked. A name that cannot be told in bytes
    (an escaped byte in it) has every socket decoded.
    """
    for dump in dumps:
        dump.wait()
    needles = unix_needles(select.file_id, select.names)
    if needles is None:
        return [s for dump in dumps for s in dump.decode()]
    picked: set[tuple[int, int, int]] = set()     # (dump, chunk, message offset)
    found: list[Socket] = []

    def take(hits: Iterable[tuple[int, int, int]]) -> list[Socket]:
        new = sorted(set(hits) - picked)
        picked.update(new)
        out: list[Socket] = []
        for d, dump in enumerate(dumps):
            messages = [_message(dump.chunks[c], at) for k, c, at in new if k == d]
            if messages:
                out += decode_unix([b"".join(messages)], dump.netns, dedup=dump.interrupted)
        found.extend(out)
        return out

    selected = [s for s in take(_found(dumps, needles)) if select(s)]
    inodes = {w.U32.pack(s.inode) for s in selected if s.inode}
    peers = {w.U32.pack(i) for s in selected
             for i in (s.unix.peer_inode, *s.unix.pending) if i}
    take(_hits(dumps, _PEER_ATTR, inodes))                   # whose peer a selected one is
    peers.difference_update(w.U32.pack(s.inode) for s in found)
    take(_hits(dumps, _UNIX_HEADER, peers))                  # the selected ones' other peers
    # a client waiting in an accept queue (connected, to no socket yet): the listener names
    # it among its pending ones (any message holding its inode is a candidate)
    waiting = [w.U32.pack(s.inode) for s in selected
               if s.state in (State.ESTABLISHED, State.SYN_SENT) and not s.unix.peer_inode
               and s.unix.type is not UnixType.DGRAM and s.inode]
    take(_found(dumps, waiting))
    return found


def unix_needles(file_id: tuple[int, int] | None, names: Iterable[str]) -> list[bytes] | None:
    """What the unix_diag message of every socket bound to the file ``file_id``
    (``(st_dev, st_ino)``) holds, or else of every socket with one of ``names`` (a path or
    ``@name`` as ``unix_name`` writes it): the attribute with its header. None when that
    cannot be told (a device number the kernel's form cannot hold; an escaped byte in a name).
    """
    if file_id is not None:
        attr = w.unix_vfs_attr(*file_id)
        return None if attr is None else [attr]
    needles = []
    for name in names:
        raw = unix_raw_names(name)
        if raw is None:
            return None
        needles += map(w.unix_name_attr, raw)
    return needles


def _offsets(chunk: bytes) -> list[int]:
    """The offsets of the socket messages of one datagram (checked by ``_receive``)."""
    header = w.NLMSGHDR.unpack_from
    full, by_family = w.UNIX_ATTRS_OFFSET, w.SOCK_DIAG_BY_FAMILY
    found = []
    off, size = 0, len(chunk)
    while off + full <= size:
        length, kind, _flags, _seq, _pid = header(chunk, off)
        if kind != by_family:
            break
        found.append(off)
        off += (length + 3) & ~3
    return found


def _message(chunk: bytes, at: int) -> bytes:
    """The message at offset ``at`` of a datagram, padded to 4 bytes."""
    (length,) = w.U32.unpack_from(chunk, at)
    return chunk[at:at + ((length + 3) & ~3)]


def _found(dumps: Sequence[UnixDump], needles: Sequence[bytes]
           ) -> Iterator[tuple[int, int, int]]:
    """``(dump, chunk, message offset)`` of each message holding one of ``needles``."""
    for d, dump in enumerate(dumps):
        for c, chunk in enumerate(dump.chunks):
            positions = []
            for needle in needles:
                at = chunk.find(needle)
                while at >= 0:
                    positions.append(at)
                    at = chunk.find(needle, at + 1)
            yield from _holding(d, c, chunk, positions)


def _hits(dumps: Sequence[UnixDump], pattern: re.Pattern, wanted: set[bytes]
          ) -> Iterator[tuple[int, int, int]]:
    """``(dump, chunk, message offset)`` of each message holding a match of ``pattern`` whose
    group is in ``wanted``."""
    if not wanted:
        return
    for d, dump in enumerate(dumps):
        for c, chunk in enumerate(dump.chunks):
            if not wanted.isdisjoint(pattern.findall(chunk)):
                yield from _holding(d, c, chunk, [m.start() for m in pattern.finditer(chunk)
                                                  if m.group(1) in wanted])


def _holding(d: int, c: int, chunk: bytes, positions: list[int]
             ) -> Iterator[tuple[int, int, int]]:
    """``(d, c, message offset)`` of the message of ``chunk`` holding each position."""
    if positions:
        starts = _offsets(chunk)
        for pos in positions:
            k = bisect.bisect_right(starts, pos) - 1
            if k >= 0:
                yield d, c, starts[k]
