"""The portable backend: TCP and UDP sockets with their owners from psutil.

For macOS, Windows and the BSDs, and as a parity check of the Linux backends. psutil joins
sockets to processes itself, so sockets come with ``owners`` (``PROVIDES_OWNERS``), but:

- **Every holder where psutil can tell them.** ``net_connections()`` names one PID per socket
  on Linux (psutil keeps one holder per inode). Each process's own list
  (``Process.net_connections``) names the rest: a socket is given every process that lists
  a socket with the same protocol, addresses and state when it is the only such socket.
  When several sockets look alike (an SO_REUSEPORT group) and more processes hold them than
  psutil named, which holds which cannot be told without inodes: each keeps psutil's one
  holder, with ``owner_unknown`` "permission" (more holders exist, unattributed), so the
  snapshot is not ``complete``. That second pass costs about as much again as the first (each
  socket-holding process re-reads ``/proc/net``: 1.8x in total measured with 130 processes).
  On macOS and the BSDs psutil lists a socket once per holding process, so it appears here as
  one record per holder.
- **No inode, queues, v6only or cookie:** ``inode`` is 0 (psutil does not give it, so here 0
  does not mean "no descriptor"), queues are 0, ``v6only`` and ``cookie`` None.
- **uid** is the holder's effective uid (the kernel records the creator's effective uid, which
  differs when a process changed uid after creating the socket); -1 (the JSON schema's "the
  source does not tell it", shown as ``?``) with no readable owner.
- **Unattributed sockets.** On Linux, psutil returns a socket whose holder it cannot see
  (another user's process, a closed descriptor) with no PID rather than skipping it, but it
  returns a set: identical unattributed rows (two SO_REUSEPORT listeners of unreadable
  processes) collapse into one. Here such a socket gets ``owner_unknown`` "permission", or
  "kernel" for TIME_WAIT.
- **macOS without root:** ``psutil.net_connections`` raises AccessDenied, so the processes are
  asked one by one; the sockets of processes that refuse are missing and a warning says how
  many processes were skipped.
- **PID reuse:** the PID psutil reports is turned into process details afterwards; a PID that
  was reused in between names the new process.
"""

from __future__ import annotations

import socket
import sys
from datetime import datetime, timezone

import psutil

from ..errors import BackendError
from ..filters import SocketFilter
from ..identity import WILDCARDS
from ..types import (Endpoint, Family, Owner, OwnerUnknown, ProcessInfo, Proto, Socket, State,
                     UnixInfo, UnixType)

NAME = "psutil"
PROVIDES_OWNERS = True

# psutil status -> State for TCP. CLOSE, BOUND, IDLE and DELETE_TCB are decided in _tcp_state.
_TCP_STATES = {
    psutil.CONN_ESTABLISHED: State.ESTABLISHED, psutil.CONN_SYN_SENT: State.SYN_SENT,
    psutil.CONN_SYN_RECV: State.SYN_RECV, psutil.CONN_FIN_WAIT1: State.FIN_WAIT1,
    psutil.CONN_FIN_WAIT2: State.FIN_WAIT2, psutil.CONN_TIME_WAIT: State.TIME_WAIT,
    psutil.CONN_CLOSE_WAIT: State.CLOSE_WAIT, psutil.CONN_LAST_ACK: State.LAST_ACK,
    psutil.CONN_LISTEN: State.LISTEN, psutil.CONN_CLOSING: State.CLOSING,
}
_FAMILIES = {socket.AF_INET: Family.IPV4, socket.AF_INET6: Family.IPV6}

# psutil < 6.0 names Process.net_connections() connections().
_process_sockets = getattr(psutil.Process, "net_connections", None) or psutil.Process.connections


def _kind(flt: SocketFilter) -> str | None:
    """psutil's ``kind`` for the filter's protocols and families (None: nothing wanted)."""
    tcp, udp = Proto.TCP in flt.protos, Proto.UDP in flt.protos
    ipv4, ipv6 = Family.IPV4 in flt.families, Family.IPV6 in flt.families
    if not (tcp or udp) or not (ipv4 or ipv6):
        return None
    return ("inet" if tcp and udp else "tcp" if tcp else "udp") + \
        ("" if ipv4 and ipv6 else "4" if ipv4 else "6")


def _tcp_state(status: str, local: Endpoint, remote: Endpoint | None) -> State | None:
    state = _TCP_STATES.get(status)
    if state is not None:
        return state
    if status == psutil.CONN_CLOSE:
        # macOS and the BSDs list a bound TCP socket that neither listens nor connects as
        # CLOSED: that is what the netlink backend calls BOUND_INACTIVE.
        return State.BOUND_INACTIVE if local.port and remote is None else State.CLOSE
    if status == "BOUND":          # Solaris, AIX: bound, not listening
        return State.BOUND_INACTIVE
    if status in ("IDLE", "DELETE_TCB"):   # Solaris: not bound yet; Windows: being deleted
        return State.CLOSE
    return None


def _to_socket(conn, netns: int | None) -> Socket | None:
    """A Socket (no owners) from one psutil connection; None for an unknown status."""
    family = _FAMILIES[conn.family]
    laddr, raddr = conn.laddr, conn.raddr
    # An empty laddr is an unbound socket: the wildcard address, port 0.
    local = Endpoint(laddr[0], laddr[1]) if laddr else Endpoint(WILDCARDS[family], 0)
    remote = Endpoint(raddr[0], raddr[1]) if raddr and raddr[1] else None
    if conn.type == socket.SOCK_STREAM:
        proto = Proto.TCP
        state = _tcp_state(conn.status, local, remote)
        if state is None:
            return None
    else:
        # psutil gives UDP sockets the status NONE; the remote tells connected from not.
        proto = Proto.UDP
        state = State.UNCONN if remote is None else State.ESTABLISHED
    return Socket(proto, family, local, remote, state, 0, -1, netns)


def _field(method):
    """``method()``, or None when psutil refuses it (AccessDenied)."""
    try:
        return method()
    except psutil.AccessDenied:
        return None


def process_details(pid: int) -> tuple[ProcessInfo, int] | None:
    """``(ProcessInfo, effective uid or -1)`` of ``pid`` from psutil; None when it has exited.

    Fields psutil refuses (AccessDenied) are None. Source: ``psutil.Process``.
    """
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            uids = _field(proc.uids) if hasattr(proc, "uids") else None  # no uids on Windows
            started = _field(proc.create_time)
            cmdline = _field(proc.cmdline)
            info = ProcessInfo(
                pid=pid, ppid=_field(proc.ppid), name=_field(proc.name),
                exe=_field(proc.exe) or None, cmdline=tuple(cmdline) if cmdline else None,
                user=_field(proc.username), uid=None if uids is None else uids.real,
                started_at=None if started is None
                else datetime.fromtimestamp(started, tz=timezone.utc))
    except psutil.NoSuchProcess:       # exited (or a zombie) since psutil listed the socket
        return None
    return info, -1 if uids is None else uids.effective


def _per_process(kind: str) -> tuple[list[tuple[object, int | None]], int]:
    """Every process's own sockets, for when the system-wide call is refused: ``([(psutil
    connection, pid), ...], how many processes refused)``."""
    entries: list[tuple[object, int | None]] = []
    denied = 0
    for proc in psutil.process_iter():
        try:
            conns = _process_sockets(proc, kind=kind)
        except psutil.AccessDenied:
            denied += 1
            continue
        except psutil.NoSuchProcess:   # exited after process_iter listed it
            continue
        entries.extend((conn, proc.pid) for conn in conns)
    return entries, denied


def _key(conn) -> tuple:
    """What a socket looks like to psutil: protocol, family, addresses and status."""
    return conn.type, conn.family, tuple(conn.laddr or ()), tuple(conn.raddr or ()), conn.status


def _holders_by_key(kind: str) -> dict[tuple, set[tuple[int, int]]]:
    """``_key`` -> every ``(pid, fd)`` whose process lists such a socket, from each readable
    process's own list (processes that refuse, or exit meanwhile, are left out)."""
    found: dict[tuple, set[tuple[int, int]]] = {}
    for proc in psutil.process_iter():
        try:
            conns = _process_sockets(proc, kind=kind)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue            # not ours to read, or gone: psutil's one holder stands
        for conn in conns:
            found.setdefault(_key(conn), set()).add((proc.pid, conn.fd))
    return found


def dump(flt: SocketFilter = SocketFilter(), netns: int | None = None
         ) -> tuple[list[Socket], list[str]]:
    """The TCP and UDP sockets that ``flt`` selects, each with the owner psutil names.

    Args:
        flt: the selection; protocols and families choose psutil's ``kind``, the other
            socket-level predicates are applied here. Owner predicates are left to the caller
            (``take_snapshot``).
        netns: the namespace inode to record in each socket (None: unknown).
    Returns:
        ``(sockets, warnings)``. Each socket has at most one owner (``Owner(pid, fd, info)``;
        fd -1 where psutil cannot tell it), or ``owner_unknown``: "permission" (psutil gave no
        PID), "kernel" (no PID, TIME_WAIT) or "vanished" (the process exited meanwhile).
        Warnings: processes skipped by the per-process fallback, unknown psutil states.
    Raises:
        BackendError: psutil could not read the system's socket tables.
    Privileges: see the module docstring (macOS needs root for a full view).
    Source: ``psutil.net_connections()``, else ``Process.net_connections()`` per process.
    """
    kind = _kind(flt)
    if kind is None:
        return [], []
    warnings: list[str] = []
    per_process = False
    try:
        entries = [(conn, conn.pid) for conn in psutil.net_connections(kind=kind)]
    except (RuntimeError, OSError) as exc:
        # psutil raises RuntimeError for a malformed /proc/net line on Linux, OSError when a
        # system table cannot be read.
        raise BackendError(f"psutil.net_connections failed: {exc}") from None
    except psutil.AccessDenied:        # macOS without root
        per_process = True
        entries, denied = _per_process(kind)
        if denied:
            warnings.append(f"psutil could not list the sockets of {denied} process(es) "
                            "(access denied): their sockets are missing; run as root to see "
                            "them")
    details: dict[int, tuple[ProcessInfo, int] | None] = {}
    unknown: set[str] = set()
    out: list[Socket] = []
    kept = []
    for conn, pid in entries:
        sock = _to_socket(conn, netns)
        if sock is None:
            unknown.add(conn.status)
        elif flt.match_socket(sock):
            kept.append((conn, pid, sock))
    # one system-wide row per socket (Linux): the other holders come from each process's list
    per_socket = (sys.platform.startswith("linux") and not per_process
                  and any(pid is not None for _, pid, _ in kept))
    holders = _holders_by_key(kind) if per_socket else {}
    alike: dict[tuple, int] = {}
    for conn, _, _ in kept:
        alike[_key(conn)] = alike.get(_key(conn), 0) + 1
    ambiguous = 0
    for conn, pid, sock in kept:
        if pid is None:
            why = OwnerUnknown.KERNEL if sock.state is State.TIME_WAIT \
                else OwnerUnknown.PERMISSION
            out.append(sock._replace(owner_unknown=why))
            continue
        pairs = {(pid, conn.fd)}
        more = holders.get(_key(conn), set()) - pairs
        unattributed = False
        if more and alike[_key(conn)] == 1:
            pairs |= more                   # the only such socket: they all hold it
        elif more:
            unattributed = True             # lookalikes: which one they hold is unknown
        owners = []
        uid = None
        for holder_pid, fd in sorted(pairs):
            if holder_pid not in details:
                details[holder_pid] = process_details(holder_pid)
            found = details[holder_pid]
            if found is None:
                continue                    # exited since psutil listed it
            info, holder_uid = found
            owners.append(Owner(holder_pid, fd, info))
            if holder_pid == pid or uid is None:
                uid = holder_uid
        if not owners:
            out.append(sock._replace(owner_unknown=OwnerUnknown.VANISHED))
            continue
        ambiguous += unattributed
        out.append(sock._replace(uid=uid, owners=tuple(owners),
                                 owner_unknown=OwnerUnknown.PERMISSION if unattributed
                                 else None))
    if ambiguous:
        warnings.append(f"{ambiguous} socket(s) look alike to psutil (same addresses and "
                        "state, e.g. an SO_REUSEPORT group) and have more holders than it "
                        "names: without socket inodes it cannot tell which holds which, so "
                        "each shows one (--backend netlink shows all)")
    if unknown:
        warnings.append(f"sockets with unknown psutil states skipped: {', '.join(sorted(unknown))}")
    return out, warnings


_UNIX_TYPES = {socket.SOCK_STREAM: UnixType.STREAM, socket.SOCK_DGRAM: UnixType.DGRAM,
               getattr(socket, "SOCK_SEQPACKET", 5): UnixType.SEQPACKET}


def dump_unix(netns: int | None = None) -> tuple[list[Socket], list[str]]:
    """The UNIX domain sockets psutil lists, each with the owner it names.

    psutil gives a UNIX socket's type, name (``laddr``), peer name (``raddr``, where the
    system tells it) and holder, but no inode, no state and no peer inode: ``inode`` is 0,
    ``state`` is ESTABLISHED when psutil names a peer and UNCONN otherwise (a listener cannot
    be told from an unconnected socket), ``unix`` has no file inode and no peer. Not on
    Windows (psutil has no AF_UNIX there: an empty list and a warning).

    Returns:
        ``(sockets, warnings)``.
    Raises:
        BackendError: psutil could not read the system's socket table.
    Source: ``psutil.net_connections(kind="unix")``.
    """
    if not hasattr(socket, "AF_UNIX"):
        return [], ["psutil lists no UNIX sockets on this system"]
    try:
        conns = psutil.net_connections(kind="unix")
    except (RuntimeError, OSError, psutil.AccessDenied) as exc:
        raise BackendError(f"psutil.net_connections(kind='unix') failed: {exc}") from None
    details: dict[int, tuple[ProcessInfo, int] | None] = {}
    out: list[Socket] = []
    for conn in conns:
        remote = Endpoint(conn.raddr, None) if conn.raddr else None
        sock = Socket(Proto.UNIX, Family.UNIX, Endpoint(conn.laddr or "", None), remote,
                      State.ESTABLISHED if remote else State.UNCONN, 0, -1, netns,
                      unix=UnixInfo(_UNIX_TYPES.get(conn.type, UnixType.STREAM)))
        pid = conn.pid
        if pid is not None and pid not in details:
            details[pid] = process_details(pid)
        found = details.get(pid) if pid is not None else None
        if found is None:
            why = OwnerUnknown.PERMISSION if pid is None else OwnerUnknown.VANISHED
            out.append(sock._replace(owner_unknown=why))
            continue
        info, uid = found
        out.append(sock._replace(uid=uid, owners=(Owner(pid, conn.fd, info),)))
    return out, []
