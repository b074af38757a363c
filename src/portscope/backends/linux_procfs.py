"""The Linux fallback backend: TCP and UDP sockets from ``/proc/net/{tcp,tcp6,udp,udp6}``, UNIX
domain sockets from ``/proc/net/unix`` (``dump_unix``).

Used where netlink sock_diag is unavailable (seccomp, an old or stripped kernel). It gives the
values the netlink backend gives, with these differences, all imposed by what ``/proc/net``
prints:

- ``v6only`` is None for IPv6 sockets: the tables do not show IPV6_V6ONLY, so a ``[::]``
  listener cannot be told dual-stack or IPv6-only (``SocketFilter.address`` with an IPv4
  address therefore does not match ``[::]`` listeners here).
- TCP sockets that are bound but neither listening nor connected (BOUND_INACTIVE) are never
  listed: the kernel prints the listening and established hashes, not the bind hash.
- A link-local address carries no ``%zone``: the bound interface is not printed.
- ``tx_queue_bytes`` of a TCP listener is 0 (netlink gives the backlog limit there).
- ``cookie`` is None.
- The kernel writes the text a page at a time, so a busy table is not one consistent
  snapshot: a socket that moves between reads can be missed or listed twice.

A malformed line never stops the listing: it is skipped, counted, and reported in one warning
per file (``"3 malformed lines in /proc/net/tcp skipped"``).

Speed: ``/proc/net`` has no state or port filter, so the kernel formats every socket of every
table read and a listener view costs nearly as much as a full one. Measured on Linux 6.18,
Python 3.11, 2 CPUs (a shared, loaded host), a process holding 9,000 loopback TCP connections
(18,001 sockets) in a fresh ``unshare -n`` namespace, best of 30 ``dump()`` calls: all sockets
90 ms (netlink 44 ms), of which 35 ms is the kernel writing ``/proc/net/tcp`` and about 2.4 us
per row is decoding; listeners only 63 ms (netlink 1.9 ms).
"""

from __future__ import annotations

import os
import re
import socket
import struct
from binascii import unhexlify

from ..errors import BackendError, BackendUnavailable
from ..filters import SocketFilter
from ..types import Endpoint, Family, Proto, Socket, State, UnixInfo, UnixType

NAME = "procfs"
PROVIDES_OWNERS = False
PROC_ROOT = "/proc/thread-self"      # net/ of the calling thread's namespace (run_in)

# (protocol, family, file name under <root>/net)
_TABLES = ((Proto.TCP, Family.IPV4, "tcp"), (Proto.TCP, Family.IPV6, "tcp6"),
           (Proto.UDP, Family.IPV4, "udp"), (Proto.UDP, Family.IPV6, "udp6"))

# State column (hex) -> State. Request sockets are printed as 03 (SYN_RECV), TIME_WAIT ones as
# 06. A TCP socket in TCP_CLOSE (07) is unhashed, so the kernel does not print it; should one
# appear it is CLOSE. For UDP, 07 (TCP_CLOSE) is an unconnected socket.
_TCP_STATES: list[State | None] = [None] * 256
for _number, _state in enumerate((
        State.ESTABLISHED, State.SYN_SENT, State.SYN_RECV, State.FIN_WAIT1, State.FIN_WAIT2,
        State.TIME_WAIT, State.CLOSE, State.CLOSE_WAIT, State.LAST_ACK, State.LISTEN,
        State.CLOSING, State.NEW_SYN_RECV), start=1):
    _TCP_STATES[_number] = _state
_UDP_STATES: list[State | None] = [None] * 256
_UDP_STATES[1] = State.ESTABLISHED
_UDP_STATES[7] = State.UNCONN

# One row: "sl: local:port remote:port st tx:rx tr:when retrnsmt uid timeout inode ...".
# Fields are separated by spaces or tabs only, so a match never spans two lines; any trailing
# columns are ignored. A nonblank line that does not match is malformed.
_ROW = (r"^[ \t]*\d+:[ \t]+({a}):([0-9A-Fa-f]{{4}})[ \t]+({a}):([0-9A-Fa-f]{{4}})"
        r"[ \t]+([0-9A-Fa-f]{{2}})[ \t]+([0-9A-Fa-f]{{1,16}}):([0-9A-Fa-f]{{1,16}})"
        r"[ \t]+\S+[ \t]+\S+[ \t]+(\d{{1,10}})[ \t]+\S+[ \t]+(\d{{1,20}})(?:[ \t\r][^\n]*)?$")
_ROWS = {Family.IPV4: re.compile(_ROW.format(a="[0-9A-Fa-f]{8}").encode(), re.M),
         Family.IPV6: re.compile(_ROW.format(a="[0-9A-Fa-f]{32}").encode(), re.M)}
_NONBLANK = re.compile(rb"^[ \t\r]*[^ \t\r\n]", re.M)

# The kernel prints each 32-bit word of an address as a native-endian integer in hex ("%08X"):
# read the words big-endian (as written), store them native (as in memory).
_WORDS_AS_WRITTEN = {4: struct.Struct(">I").unpack, 16: struct.Struct(">4I").unpack}
_WORDS_IN_MEMORY = {4: struct.Struct("=I").pack, 16: struct.Struct("=4I").pack}
_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}


def parse_table(data: bytes, proto: Proto, family: Family, states: frozenset[State] | None = None,
                port_range: tuple[int, int] | None = None, netns: int | None = None
                ) -> tuple[list[Socket], int]:
    """Decode the text of one ``/proc/net/{tcp,tcp6,udp,udp6}`` table.

    Args:
        data: the whole file, header line included (a first line starting ``sl`` is skipped).
        proto, family: what the table holds (``tcp6`` is TCP over IPv6).
        states: keep only these states (None: every state).
        port_range: keep only local ports in ``(low, high)``, inclusive (None: any port).
        netns: the namespace inode to record in each socket.
    Returns:
        ``(sockets without owners, number of malformed lines)``; blank lines are not counted.
        A line is malformed when a field is missing or not of its form (hex address of the
        family's length, 4 hex digit ports, decimal uid and inode) or its state is unknown
        for the protocol.
    Raises:
        nothing for any content of ``data``.
    """
    known = _TCP_STATES if proto is Proto.TCP else _UDP_STATES
    af = _AF[family]
    size = 4 if family is Family.IPV4 else 16
    as_written, in_memory = _WORDS_AS_WRITTEN[size], _WORDS_IN_MEMORY[size]
    ntop = socket.inet_ntop
    names: dict[bytes, str] = {}
    low, high = port_range or (0, 65535)
    new = tuple.__new__
    out: list[Socket] = []
    append = out.append
    rows = 0
    bad_states = 0
    for (laddr, lport, raddr, rport, state_hex, tx, rx, uid, inode) in _ROWS[family].findall(data):
        rows += 1
        state = known[int(state_hex, 16)]
        if state is None:
            bad_states += 1
            continue
        if states is not None and state not in states:
            continue
        port = int(lport, 16)
        if not low <= port <= high:
            continue
        local = names.get(laddr)
        if local is None:
            local = names[laddr] = ntop(af, in_memory(*as_written(unhexlify(laddr))))
        remote = None
        remote_port = int(rport, 16)
        if remote_port:
            remote_addr = names.get(raddr)
            if remote_addr is None:
                remote_addr = names[raddr] = ntop(af, in_memory(*as_written(unhexlify(raddr))))
            remote = new(Endpoint, (remote_addr, remote_port))
        append(new(Socket, (proto, family, new(Endpoint, (local, port)), remote, state,
                            int(inode), int(uid), netns, None, int(rx, 16), int(tx, 16), (),
                            None, None, None, None, None)))
    header = 1 if data.lstrip(b" \t").startswith(b"sl") else 0
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if lines - header != rows:          # some line did not match: count the nonblank ones
        lines = len(_NONBLANK.findall(data))
    return out, lines - header - rows + bad_states


def dump(flt: SocketFilter = SocketFilter(), netns: int | None = None,
         proc_root: str = PROC_ROOT) -> tuple[list[Socket], list[str]]:
    """Read the caller's network namespace's TCP and UDP sockets that ``flt`` selects.

    Args:
        flt: the selection; protocols and families choose the files read, states and the
            local port are checked before a row is decoded, the other socket-level predicates
            are applied afterwards (owner predicates are not).
        netns: the namespace inode to record in each socket (None: unknown).
        proc_root: the procfs mount to read (``<proc_root>/net/tcp`` ...); tests pass a fixture
            directory.
    Returns:
        ``(sockets without owners, warnings)``; a warning per table with malformed lines
        (``"2 malformed lines in /proc/net/tcp skipped"``) or missing an IPv4 table. A missing
        ``tcp6``/``udp6`` (IPv6 disabled) is silent: there are no IPv6 sockets then.
    Raises:
        BackendUnavailable: ``<proc_root>/net`` does not exist (procfs not mounted).
        BackendError: a table exists but cannot be read (permission, I/O error).
    Privileges: none; every user sees every socket of the namespace (with its uid and inode).
    Source: ``<proc_root>/net/{tcp,tcp6,udp,udp6}``.
    """
    net = os.path.join(proc_root, "net")
    if not os.path.isdir(net):
        raise BackendUnavailable(f"{net} does not exist (is procfs mounted?)")
    out: list[Socket] = []
    warnings: list[str] = []
    for proto, family, name in _TABLES:
        if proto not in flt.protos or family not in flt.families:
            continue
        path = f"{net}/{name}"
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if family is Family.IPV4:
                warnings.append(f"{path} is missing: no {proto} sockets listed")
            continue
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror}") from None
        sockets, bad = parse_table(data, proto, family, flt.states, flt.port_range, netns)
        out += sockets
        if bad:
            warnings.append(f"{bad} malformed line{'s' if bad > 1 else ''} in {path} skipped")
    if flt.address is not None:
        out = [s for s in out if flt.match_socket(s)]
    return out, warnings


# /proc/net/unix: "Num: RefCount Protocol Flags Type St Inode Path"; Num is the kernel address
# (zeros without CAP_SYSLOG), Flags has __SO_ACCEPTCON (0x10000) for a listener, St is
# SS_CONNECTED (03) or SS_CONNECTING (02, not yet accepted) for a connected socket.
_UNIX_ROW = re.compile(rb"^[0-9A-Fa-f]+:[ \t]+[0-9A-Fa-f]{8}[ \t]+[0-9A-Fa-f]{8}[ \t]+"
                       rb"([0-9A-Fa-f]{8})[ \t]+([0-9A-Fa-f]{4})[ \t]+([0-9A-Fa-f]{2})[ \t]+"
                       rb"(\d{1,20})(?: ([^\n]*))?$", re.M)
_SO_ACCEPTCON = 0x10000
_UNIX_TYPES = {1: UnixType.STREAM, 2: UnixType.DGRAM, 5: UnixType.SEQPACKET}


def parse_unix(data: bytes, netns: int | None = None) -> tuple[list[Socket], int]:
    """Decode the text of ``/proc/net/unix``.

    Args:
        data: the whole file, header line included.
        netns: the namespace inode to record in each socket.
    Returns:
        ``(sockets, number of malformed lines)``. Each socket has what the file tells: type,
        state (LISTEN, ESTABLISHED or UNCONN), inode and name; ``uid`` is -1, queues 0 and
        ``unix.vfs_inode``, ``unix.peer_inode`` None (the file does not print them). The
        kernel prints a NUL inside an abstract name as ``@``, so such names cannot be told
        from names with ``@`` there; a path holding a newline breaks its line (malformed).
    Raises:
        nothing for any content of ``data``.
    """
    new = tuple.__new__
    out: list[Socket] = []
    names: dict[bytes, Endpoint] = {}
    rows = 0
    for flags, kind, st, inode, path in _UNIX_ROW.findall(data):
        rows += 1
        unix_type = _UNIX_TYPES.get(int(kind, 16))
        if unix_type is None:
            continue
        if st in (b"02", b"03"):
            state = State.ESTABLISHED
        elif int(flags, 16) & _SO_ACCEPTCON:
            state = State.LISTEN
        else:
            state = State.UNCONN
        local = names.get(path)
        if local is None:
            text = path.decode("utf-8", "backslashreplace")
            local = names[path] = new(Endpoint, (text, None))
        out.append(new(Socket, (Proto.UNIX, Family.UNIX, local, None, state, int(inode), -1,
                                netns, None, 0, 0, (), None, None, None, None,
                                new(UnixInfo, (unix_type, None, None, None, (), ())))))
    header = 1 if data.startswith(b"Num") else 0
    lines = len(_NONBLANK.findall(data))
    return out, lines - header - rows


def dump_unix(netns: int | None = None, proc_root: str = PROC_ROOT
              ) -> tuple[list[Socket], list[str]]:
    """Every UNIX domain socket of the caller's network namespace (see ``parse_unix`` for what
    ``/proc/net/unix`` cannot tell: no peer, no socket file inode, no queues, no uid).

    Returns:
        ``(sockets, warnings)``; a warning when malformed lines were skipped.
    Raises:
        BackendUnavailable: ``<proc_root>/net/unix`` does not exist.
        BackendError: it cannot be read.
    Source: ``<proc_root>/net/unix``.
    """
    path = os.path.join(proc_root, "net", "unix")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BackendUnavailable(f"{path} does not exist (no procfs, or no UNIX sockets)") \
            from None
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror}") from None
    sockets, bad = parse_unix(data, netns)
    warnings = [f"{bad} malformed line{'s' if bad > 1 else ''} in {path} skipped"] if bad else []
    return sockets, warnings
