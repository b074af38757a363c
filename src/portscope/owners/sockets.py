"""The TCP and UDP sockets that processes hold, as the BPF descriptor walk read them.

The ``task_file`` program (``bpf.py``) writes one 128-byte record per socket descriptor of
every process, with what ``inet_diag`` would report of the socket: family, state, local and
remote endpoint, network namespace, uid, v6only, queues and cookie. One walk covers every
network namespace, where a sock_diag dump walks the kernel's established and bind hashes,
which all namespaces share, once per namespace (about 2 ms for the first, 30 ms for the
second on a host with 200,000 sockets, whether the namespace holds any socket or not).

What a descriptor cannot show still needs a dump: TIME_WAIT, SYN queue requests, connections
not yet accepted, orphans, kernel sockets, and the sockets of processes the walk could not see.
``HeldSockets.unheld`` compares what the walk found in a namespace with that namespace's
sockstat counts (``sockstat.py``) to decide, per protocol and family, whether the walk has
them all; ``snapshot.py`` then dumps only the rest (TIME_WAIT where ``tw`` is not 0, SYN queue
requests where a listener has some) and everything where the counts differ.

A walk limited to one port (``bpf.IterScan(port)``) writes whole records for the sockets on
that port only and counts the others in the kernel; ``HeldSockets`` adds those counts to its
census, so the comparison with sockstat is the same.

Fields as ``inet_diag`` fills them (``inet_diag_msg_common_fill``, ``tcp_diag_get_info``,
``udp_diag_get_info``): the local port is ``sk_num``; the queues of a listener are its accept
backlog and its limit, of another TCP socket ``rcv_nxt - copied_seq`` (at least 0) and
``write_seq - snd_una``, of a UDP socket ``rmem_alloc - forward_deficit`` and
``wmem_alloc - 1``. One difference: the kernel gives a socket its cookie when something first
asks for it (a sock_diag dump, ``SO_COOKIE``); a socket nothing asked yet has cookie None here.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from ..backends._netlink_wire import BSWAP16
from ..backends.linux_netlink import _TCP_STATES, _UDP_STATES, _scoped
from ..filters import SocketFilter
from ..sockstat import SocketCounts
from ..types import Endpoint, Family, Owner, OwnerUnknown, Proto, Socket
from .bpf import SHARED_BYTE, SOCKET_RECORD_BYTES
from .fdscan import _positions, repeated

# The record (bpf._socket_program): inode, holder, then netns u32, family u16, kind u8 (6 TCP,
# 17 UDP, 0 another socket), state u8 (0: in no hash table), sport u16 (host order), dport
# u16 (network order), the byte holding skc_ipv6only, the shared mark (bpf.SHARED_BYTE,
# read apart), src4, dst4, src6, dst6,
# bound_dev_if, uid, ack_backlog, max_ack_backlog, rmem_alloc, wmem_alloc, rcv_nxt,
# copied_seq, write_seq, snd_una, SYN queue length, forward_deficit, cookie.
RECORD = struct.Struct("=QQIHBBHHB3x4s4s16s16siIIIiIIIIIIiq")
assert RECORD.size == SOCKET_RECORD_BYTES
_WORDS = SOCKET_RECORD_BYTES // 8
_KEY_WORD = 2                 # netns | family << 32 | kind << 48 | state << 56
_PORT_HALF = 12               # sport, as the 12th u16 of a record
_STATE_BYTE = 23
_AF = {socket.AF_INET: Family.IPV4, socket.AF_INET6: Family.IPV6}
_KIND = {6: Proto.TCP, 17: Proto.UDP}
_TCP_CLOSE, _TCP_LISTEN = 7, 10
_KERNEL_NUMBERS = {Proto.TCP: {state: n for n, state in enumerate(_TCP_STATES) if state},
                   Proto.UDP: {state: n for n, state in enumerate(_UDP_STATES) if state}}


class HeldSockets:
    """The TCP and UDP sockets in the records of one BPF walk, each once.

    Attributes:
        records: everything the walk wrote (``RECORD`` per socket descriptor).
        port: the local port the walk was limited to (``bpf.IterScan``): only the TCP and UDP
            sockets on it have whole records, the other sockets are in ``census`` and
            ``everything`` only; None when every socket has its record.
        census: ``(netns | family << 32 | kind << 48 | kernel state << 56)`` -> how many
            distinct sockets; state 0 means in no hash table (never bound, or closed): no dump
            would show those.
        everything: network namespace -> how many sockets of any family (UNIX, netlink...)
            the walk found there (to hold against sockstat's ``sockets: used``).
        syn_queued: network namespaces where a held listener has requests in its SYN queue
            (with ``port``: a listener on that port).
    """

    __slots__ = ("records", "port", "census", "everything", "syn_queued", "bit_v6only",
                 "_skip", "_inodes")

    def __init__(self, records: bytes, bit_v6only: int, port: int | None = None,
                 counted: Mapping[int, int] | None = None, marked: bool = False) -> None:
        """``records``: what the walk wrote; ``bit_v6only``: the bit of ``skc_ipv6only`` in
        its byte (from BTF); ``port``: the port the walk was limited to, and ``counted``
        its counts of the sockets it wrote no record of (key word as in ``census`` -> how
        many); ``marked``: the records of sockets that several descriptors may hold carry
        ``bpf.SHARED_BYTE`` (only those need to be looked at for repeats)."""
        words = array("Q", records)
        keys = words[_KEY_WORD::_WORDS]
        census = Counter(keys)
        # a socket several descriptors hold is counted and decoded once (its first record)
        inodes = words[0::_WORDS]
        self._skip: set[int] = set()
        for i in _repeats(records, inodes, marked):
            census[keys[i]] -= 1
            self._skip.add(i * SOCKET_RECORD_BYTES)
        census.update(counted or {})
        self.census = Counter({key: count for key, count in census.items()
                               if key >> 48 & 0xFF and count > 0})
        self.everything: Counter = Counter()
        for key, count in census.items():
            self.everything[key & 0xFFFFFFFF] += count
        states = records[_STATE_BYTE::SOCKET_RECORD_BYTES]
        self.syn_queued = set()
        for i in _found(states, _TCP_LISTEN):
            fields = RECORD.unpack_from(records, i * SOCKET_RECORD_BYTES)
            if fields[4] == 6 and fields[23]:
                self.syn_queued.add(fields[2])
        self.records = records
        self.port = port
        self.bit_v6only = bit_v6only
        self._inodes: frozenset[int] | None = None

    def hashed(self, netns: int, proto: Proto, family: Family | None = None) -> int:
        """How many held sockets of ``proto`` (and ``family``; both when None) sit in the
        kernel's hash tables of namespace ``netns`` as sockstat counts them (TCP: listening
        or established hash; UDP: bound)."""
        total = 0
        for key, count in self.census.items():
            if key & 0xFFFFFFFF != netns or _KIND.get(key >> 48 & 0xFF) is not proto:
                continue
            family_here = _AF.get(key >> 32 & 0xFFFF)
            state = key >> 56
            if family_here is None or (family is not None and family_here is not family):
                continue
            if state and not (proto is Proto.TCP and state == _TCP_CLOSE):
                total += count
        return total

    def listening(self, netns: int) -> int:
        """How many held TCP listeners namespace ``netns`` has (of every port, also when the
        walk was limited to one)."""
        return sum(count for key, count in self.census.items()
                   if key & 0xFFFFFFFF == netns and key >> 48 == 6 | _TCP_LISTEN << 8)

    def unheld(self, netns: int, counts: SocketCounts | None, proto: Proto,
               family: Family | None = None) -> int | None:
        """How many hashed sockets of ``proto`` (and ``family``) namespace ``netns`` has
        beyond those in these records (sockstat's count less the walk's): 0 when the records
        have every socket that a dump would return in a state a process can hold; None when
        the counts are unknown (negative when sockets closed since the walk)."""
        if counts is None:
            return None
        if proto is Proto.TCP:
            return counts.tcp_inuse - self.hashed(netns, proto)
        return counts.udp_inuse.get(family, 0) - self.hashed(netns, proto, family)

    @property
    def inodes(self) -> frozenset[int]:
        """The inodes of every socket the walk read (any family)."""
        if self._inodes is None:
            self._inodes = frozenset(array("Q", self.records)[0::_WORDS])
        return self._inodes

    def has_every_socket(self, netns: int, counts: SocketCounts | None) -> bool:
        """True when the walk found every socket of namespace ``netns`` that a process created
        (sockstat's ``sockets: used``): then no process it could not see (a sandboxed PID)
        holds a socket there, such as a TCP socket that is bound only (BOUND_INACTIVE: in
        no count of its own)."""
        return counts is not None and counts.sockets_used == self.everything.get(netns, 0)

    def candidates(self, flt: SocketFilter) -> Sequence[int]:
        """Offsets of the records that may match ``flt``: found in C by port (a single port)
        or by kernel state (a listener view), else every record.

        Raises:
            ValueError: the records are of one port (``port``) and ``flt`` asks for others.
        """
        port = flt.single_port
        if self.port is not None and port != self.port:
            raise ValueError(f"these records are of port {self.port} only")
        if port is not None:
            ports = array("H", self.records)[_PORT_HALF::SOCKET_RECORD_BYTES // 2]
            return [i * SOCKET_RECORD_BYTES for i in _positions(ports, port)]
        if flt.states is not None and len(flt.states) <= 3:
            states = self.records[_STATE_BYTE::SOCKET_RECORD_BYTES]
            numbers = {number for proto in flt.protos
                       for state, number in _KERNEL_NUMBERS.get(proto, {}).items()
                       if state in flt.states}
            found = sorted(i for number in numbers for i in _found(states, number))
            return [i * SOCKET_RECORD_BYTES for i in found]
        return range(0, len(self.records), SOCKET_RECORD_BYTES)

    def decode(self, flt: SocketFilter,
               take: Mapping[int, tuple[frozenset[tuple[Proto, Family]], SocketFilter]],
               owners: Mapping[int, tuple[Owner, ...]] | None = None,
               missing: OwnerUnknown | None = None, share: tuple[int, int] = (0, 1)
               ) -> Iterator[Socket]:
        """The held sockets that ``flt`` selects, as ``Socket`` records with their owners.

        Args:
            flt: the filter to narrow the records by (port, states) before decoding.
            take: network namespace -> (the ``(proto, family)`` pairs taken from these records
                there, the filter that namespace's sockets must match); other namespaces are
                left out.
            owners: socket inode -> its owners.
            missing: ``owner_unknown`` of a socket without entry in ``owners``.
            share: ``(k, n)``: only the k-th of n consecutive parts of the records.
        Yields:
            ``Socket`` records in descriptor-walk order.
        """
        owned = (owners or {}).get
        unpack = RECORD.unpack_from
        new = tuple.__new__
        ntop = socket.inet_ntop
        af_inet, af_inet6 = socket.AF_INET, socket.AF_INET6
        ipv4, ipv6 = Family.IPV4, Family.IPV6
        tcp, udp = Proto.TCP, Proto.UDP
        tcp_states, udp_states = _TCP_STATES, _UDP_STATES
        bit = self.bit_v6only
        bswap = BSWAP16
        records = self.records
        skip = self._skip
        everything = SocketFilter()
        checks = {netns: (taken, None if part_flt == everything else part_flt.match_socket)
                  for netns, (taken, part_flt) in take.items()}
        names4: dict[bytes, str] = {}
        names6: dict[bytes, str] = {}
        candidates = self.candidates(flt)
        k, n = share
        for at in candidates[k * len(candidates) // n:(k + 1) * len(candidates) // n]:
            if at in skip:
                continue
            (inode, _holder, netns, family, kind, state, sport, dport, v6byte, src4, dst4, src6,
             dst6, ifindex, uid, backlog, max_backlog, rmem, wmem, rcv_nxt, copied_seq,
             write_seq, snd_una, _syn_queue, deficit, cookie) = unpack(records, at)
            if not state or not kind:
                continue              # in no hash table (no dump shows it), or not inet
            selection = checks.get(netns)
            proto = tcp if kind == 6 else udp
            if selection is None:
                continue
            if family == af_inet:
                fam = ipv4
                address = names4.get(src4)
                if address is None:
                    address = names4[src4] = ntop(af_inet, src4)
                local = new(Endpoint, (address, sport))
                remote = None
                if dport:
                    address = names4.get(dst4)
                    if address is None:
                        address = names4[dst4] = ntop(af_inet, dst4)
                    remote = new(Endpoint, (address, bswap[dport]))
                v6only = None
            elif family == af_inet6:
                fam = ipv6
                address = names6.get(src6)
                if address is None:
                    address = names6[src6] = ntop(af_inet6, src6)
                if ifindex and src6[0] == 0xFE and src6[1] & 0xC0 == 0x80:
                    address = _scoped(address, ifindex)
                local = new(Endpoint, (address, sport))
                remote = None
                if dport:
                    address = names6.get(dst6)
                    if address is None:
                        address = names6[dst6] = ntop(af_inet6, dst6)
                    remote = new(Endpoint, (address, bswap[dport]))
                # inet_diag reports it of listeners and unconnected sockets only
                v6only = bool(v6byte >> bit & 1) if state in (_TCP_LISTEN, _TCP_CLOSE) else None
            else:
                continue
            if proto is tcp:
                if state == _TCP_LISTEN:
                    rqueue, wqueue = backlog, max_backlog
                else:
                    rqueue = max((rcv_nxt - copied_seq + 2 ** 31) % 2 ** 32 - 2 ** 31, 0)
                    wqueue = (write_seq - snd_una) % 2 ** 32
                kernel_state = tcp_states[state]
            else:
                rqueue, wqueue = (rmem - deficit) % 2 ** 32, (wmem - 1) % 2 ** 32
                kernel_state = udp_states[state]
            if (proto, fam) not in selection[0]:
                continue
            held = owned(inode, ())
            sock = new(Socket, (proto, fam, local, remote, kernel_state, inode, uid, netns,
                                v6only, rqueue, wqueue, held, None if held else missing,
                                cookie or None, None, None, None))
            if selection[1] is None or selection[1](sock):
                yield sock


def marked_inodes(records: bytes) -> set[int]:
    """The inodes of the records the walk marked (``bpf.SHARED_BYTE``): sockets that several
    descriptors may hold."""
    inode = struct.Struct("=Q").unpack_from
    return {inode(records, i * SOCKET_RECORD_BYTES)[0]
            for i in _found(records[SHARED_BYTE::SOCKET_RECORD_BYTES], 1)}


def _repeats(records: bytes, inodes: array, marked: bool) -> list[int]:
    """Indexes of the records whose inode an earlier record has (another descriptor of the
    same socket); when the walk marks the sockets that several descriptors may hold, only
    those are looked for (a socket dup'd during the walk: its later record is marked)."""
    suspects = marked_inodes(records) if marked else None
    if suspects is None and len(dict.fromkeys(inodes)) == len(inodes):
        return []
    return [i for found in repeated(inodes, suspects).values() for i in found[1:]]


def _found(data: bytes, value: int) -> Iterator[int]:
    """Every index of byte ``value`` in ``data``."""
    needle = bytes((value,))
    at = data.find(needle)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)
