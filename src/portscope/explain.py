"""Plain-language explanations of a port or a process, built from a real ``Snapshot``.

``explain_port()`` says, for each socket on a port: the listener's scope (loopback only, all
interfaces, one address; IPv4, IPv6 or both), which processes hold it and why several can (one
socket shared through fork() vs an SO_REUSEPORT group of separate sockets), the connections
accepted from it (each its own socket, named by its 4-tuple), clients on this host using
ephemeral ports, sockets the kernel keeps (TIME_WAIT), bound-but-not-listening sockets, and the
port's class and service name. ``explain_pid()`` does the same for every socket of a process.
A PID names a process; a port names an endpoint: both explanations end by saying so.

The text may contain process names: escape it before writing it to a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .owners import visibility
from .owners.process import process_info
from .bindcheck import socket_options
from .identity import ip_address, ipv4_mapped, split_zone
from .ports import HostPortRanges, endpoint_text, host_port_ranges, port_class
from .snapshot import accepted_connections, at_address
from .types import (KERNEL_HELD_STATES, Family, NetNamespace, OwnerUnknown, ProcessInfo, Proto,
                    Snapshot, Socket, State)

MAX_LISTED = 20          # connections listed one by one per section; the rest are counted
MAX_COMMAND = 120        # characters of a command line quoted in a summary
IN_SHORT = ("A PID names a process; a port names an endpoint (protocol, address and "
            "port). One process can hold many sockets on many ports, one socket can be held by "
            "many processes (fork shares it), and one port can carry many sockets: a listener "
            "per family or per SO_REUSEPORT member, plus one socket per accepted connection.")


@dataclass(frozen=True, slots=True)
class Section:
    """One part of an explanation: a ``title``, sentences (``lines``) and the ``sockets`` they
    are about."""

    title: str
    lines: tuple[str, ...]
    sockets: tuple[Socket, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    """An explanation.

    Attributes:
        kind: ``"port"`` or ``"pid"``.
        subject: the port or PID.
        found: False when nothing is on the port / the process holds no socket or is gone.
        summary: the first paragraph.
        sections: the details, one per listener, group or kind of socket.
        complete: False when something explained could not be seen: holders of its sockets,
            or the process's own descriptors (hidden is never said as "none").
    """

    kind: str
    subject: int
    found: bool
    summary: str
    sections: tuple[Section, ...]
    complete: bool = True


# ---------------------------------------------------------------------------------------------
# Words for one socket

def scope_text(sock: Socket) -> str:
    """Where a bound socket receives: ``"all addresses, IPv6 and IPv4 (dual-stack ...)"``,
    ``"loopback only ..."``, ``"one address ..."``."""
    text, zone = split_zone(sock.local.address)
    mapped = ipv4_mapped(text)
    ip = ip_address(text)
    if mapped is not None and not ip.is_unspecified:
        return (f"one IPv4 address, {mapped}, through an IPv6 socket "
                "(an IPv4-mapped address ::ffff:a.b.c.d is IPv4)")
    if ip.is_unspecified:
        if ip.version == 4:
            return "all interfaces, IPv4 only (0.0.0.0 is the IPv4 wildcard)"
        if sock.v6only:
            return "all interfaces, IPv6 only (v6only is on: IPv4 needs a socket of its own)"
        return ("all interfaces, IPv6 and IPv4 (dual-stack: v6only is off, so IPv4 clients "
                "arrive as ::ffff:a.b.c.d on this one socket)")
    family = "IPv4" if ip.version == 4 else "IPv6"
    if ip.is_loopback:
        return f"loopback only, {family}: reachable from this host only"
    if zone:
        return f"one link-local {family} address on interface {zone}"
    return f"one address, {family}: reachable only through {text}"


def _process_text(process: ProcessInfo) -> str:
    return f"{process.name or '?'} (pid {process.pid}, user {process.user or '?'})"


def owners_text(sock: Socket) -> str:
    """Who holds ``sock`` and, when several processes do, why they can."""
    if not sock.owners:
        return {
            OwnerUnknown.PERMISSION: f"its holder is hidden from this user "
                                     f"({visibility.remedy()})" + (
                                         "" if sock.uid < 0 else
                                         f"; the kernel says the socket belongs to uid "
                                         f"{sock.uid}"),
            OwnerUnknown.KERNEL: "no process holds it: the kernel does",
            OwnerUnknown.VANISHED: "its holder closed it during the scan",
            OwnerUnknown.OTHER_NETNS: "its holder lives in another network namespace",
        }.get(sock.owner_unknown, "no holder was looked up")
    if len(sock.owners) == 1:
        owner = sock.owners[0]
        return f"held by {_process_text(owner.process)} through descriptor {owner.fd}"
    pids = {o.pid for o in sock.owners}
    roots = [o for o in sock.owners if o.process.ppid not in pids]
    children = [o for o in sock.owners if o.process.ppid in pids]
    shared = (f"held by {len(sock.owners)} processes through this one socket (inode "
              f"{sock.inode}): ")
    if len(roots) == 1:
        pid_list = ", ".join(str(o.pid) for o in children)
        return (shared + f"{_process_text(roots[0].process)} and {len(children)} forked "
                f"child(ren) (pid {pid_list}). They share it because a child made by fork() "
                "inherits its parent's descriptors: it is still one kernel socket, with one "
                "accept queue, and whichever process calls accept() first gets the next "
                "connection")
    names = ", ".join(_process_text(o.process) for o in sock.owners)
    return (shared + f"{names}. Unrelated processes share one socket when a descriptor was "
            "inherited across exec() or passed over a UNIX socket (SCM_RIGHTS)")


def _peer(sock: Socket) -> str:
    return endpoint_text(*sock.remote) if sock.remote else "*"


def _owner_short(sock: Socket) -> str:
    if sock.owners:
        return ", ".join(f"{o.process.name or '?'} pid {o.pid}" for o in sock.owners)
    return "kernel" if sock.owner_unknown is OwnerUnknown.KERNEL else \
        f"holder {sock.owner_unknown or 'unknown'}"


def _connection_line(sock: Socket) -> str:
    return (f"{endpoint_text(*sock.local)} <-> {_peer(sock)}  {sock.state.value}  "
            f"inode {sock.inode}  {_owner_short(sock)}")


def _listed(lines: list[str], items: Sequence[Socket], line: Callable[[Socket], str]) -> None:
    for sock in items[:MAX_LISTED]:
        lines.append("  " + line(sock))
    if len(items) > MAX_LISTED:
        lines.append(f"  ... and {len(items) - MAX_LISTED} more")


def _state_text(sock: Socket, port: int) -> str:
    if sock.proto is Proto.UDP:
        if sock.remote is None:
            return ("An unconnected UDP socket: it receives datagrams sent to this address and "
                    "port from any sender. UDP has no listen() and no accept(): no connection "
                    "sockets are made, replies leave from this same socket.")
        return (f"A connected UDP socket: connect() fixed its peer to {_peer(sock)}, so it "
                f"exchanges datagrams with that peer only; it still holds local port {port}.")
    if sock.state is State.BOUND_INACTIVE:
        return ("Bound but not listening (BOUND_INACTIVE): the process called bind() but neither "
                "listen() nor connect(). It accepts nothing, yet it holds the port: a new bind() "
                "gets EADDRINUSE. ss and netstat do not show such a socket.")
    return ("A listening socket: the kernel completes TCP handshakes on it and queues the new "
            "connections until a holder calls accept().")


def _time_wait_text(sock: Socket, port: int) -> str:
    if sock.local.port == port:
        return (f"{_connection_line(sock)}: this side closed the connection first; the kernel "
                f"keeps it, with no process, for up to 60 s so that late packets are not taken "
                f"for a new connection. Until then a new bind() of port {port} fails with "
                "EADDRINUSE unless both the old listener and the new socket set SO_REUSEADDR.")
    return (f"{_connection_line(sock)}: a client's closed connection to port {port}, kept by "
            f"the kernel up to 60 s; it occupies the client's port "
            f"{sock.local.port}, not {port}.")


# ---------------------------------------------------------------------------------------------
# A port

def _same_endpoint(a: Socket, b: Socket) -> bool:
    return (a.proto, a.local, a.v6only, a.netns) == (b.proto, b.local, b.v6only, b.netns)


def _namespace_label(namespaces: Sequence[NetNamespace], inode: int | None) -> str:
    name = next((ns.name for ns in namespaces if ns.inode == inode), None)
    return name or f"net:[{inode}]"


def _in_namespace(snapshot: Snapshot, sock: Socket) -> str:
    """`` in network namespace NAME`` when the snapshot covers several, else empty."""
    if len(snapshot.namespaces) <= 1:
        return ""
    return f" in network namespace {_namespace_label(snapshot.namespaces, sock.netns)}"


def _where(snapshot: Snapshot) -> str:
    """Where the snapshot looked: ``"in this network namespace"``, ``"in network namespace
    NAME"`` or ``"in any of the N network namespaces looked at"``."""
    spaces = snapshot.namespaces
    if len(spaces) > 1:
        return f"in any of the {len(spaces)} network namespaces looked at"
    if spaces and spaces[0].name != "host":
        return f"in network namespace {_namespace_label(spaces, spaces[0].inode)}"
    return "in this network namespace"


def _hidden(sockets: Sequence[Socket]) -> int:
    return sum(1 for s in sockets if s.owner_unknown is OwnerUnknown.PERMISSION)


def _group_text(group: Sequence[Socket], port: int) -> str:
    options = [socket_options(s) for s in group]
    confirmed = all(o is not None and o[1] for o in options)
    owners = "; ".join(_owner_short(s) for s in group)
    first = group[0]
    how = "SO_REUSEPORT group" if first.proto is Proto.TCP or confirmed else \
        "SO_REUSEPORT (or SO_REUSEADDR) group"
    share = ("the kernel spreads new connections among them by a hash of the 4-tuple, and each "
             "has its own accept queue" if first.proto is Proto.TCP else
             "the kernel spreads incoming datagrams among them")
    check = " (SO_REUSEPORT confirmed on each)" if confirmed else ""
    return (f"{len(group)} separate sockets are bound to {endpoint_text(*first.local)} (held "
            f"by: {owners}): an {how}{check}. Each socket set the option before bind(), and "
            f"all belong to the same user; {share}. This differs from fork sharing, where "
            "several processes hold one socket.")


def explain_port(snapshot: Snapshot, port: int, *, address: str | None = None,
                 proto: Proto | str | None = None, ranges: HostPortRanges | None = None,
                 name_of: Callable[[int, str], str | None] | None = None) -> Explanation:
    """Explain what uses ``port`` in ``snapshot``.

    Args:
        snapshot: every socket of the namespace (clients are found by their remote port).
        port: 1-65535.
        address: only sockets bound to it or to a wildcard covering it.
        proto: only this protocol (default: TCP and UDP).
        ranges: this host's port ranges (default: read now).
        name_of: ``(port, proto) -> service name`` (default: ``services.service_name``).
    Returns:
        an ``Explanation``; ``found`` is False when no socket uses the port.
    Raises:
        ValueError: port out of range.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, not {port!r}")
    if name_of is None:
        from .services import service_name as name_of
    ranges = ranges or host_port_ranges()
    protos = {Proto(proto)} if proto else {Proto.TCP, Proto.UDP}
    usable = [s for s in snapshot.sockets if s.proto in protos
              and s.family in (Family.IPV4, Family.IPV6)]
    local = at_address([s for s in usable if s.local.port == port], address)
    clients = [s for s in usable if s.remote is not None and s.remote.port == port
               and s.local.port != port and s.state not in KERNEL_HELD_STATES]
    client_tw = [s for s in usable if s.remote is not None and s.remote.port == port
                 and s.local.port != port and s.state in KERNEL_HELD_STATES]
    summary = _port_summary(port, local, clients, ranges, name_of, protos, _where(snapshot))
    sections: list[Section] = []
    accepted = accepted_connections(local)
    claimed: set[int] = set()
    listeners = [i for i, s in enumerate(local) if s.state in (State.LISTEN, State.BOUND_INACTIVE)
                 or (s.proto is Proto.UDP)]
    done: set[int] = set()
    for i in listeners:
        if i in done:
            continue
        sock = local[i]
        group = [j for j in listeners if j not in done and _same_endpoint(local[j], sock)
                 and local[j].state is sock.state]
        done.update(group)
        kind = {State.LISTEN: "listener", State.BOUND_INACTIVE: "bound, not listening"}.get(
            sock.state, "bound socket" if sock.remote is None else "connected socket")
        title = (f"{sock.proto.value.upper()} {kind} {endpoint_text(*sock.local)}"
                 f"{_in_namespace(snapshot, sock)}")
        lines = [f"Scope: {scope_text(sock)}."]
        if len(group) > 1:
            title += f" ({len(group)} sockets)"
            lines.append(_group_text([local[j] for j in group], port))
        for j in group:
            member = local[j]
            owners = owners_text(member)
            lines.append(f"Socket inode {member.inode}: {owners}." if len(group) > 1
                         else f"{owners[0].upper()}{owners[1:]}.")
        lines.append(_state_text(sock, port))
        conns = [c for j in group for c in accepted.get(j, [])
                 if c.owners or c.state not in KERNEL_HELD_STATES]
        claimed.update(id(c) for c in conns)
        if sock.state is State.LISTEN:
            if conns:
                lines.append(f"{len(conns)} connection(s) accepted from it. Each is its own "
                             "socket, named by its 4-tuple (local address, local port, remote "
                             f"address, remote port), so all of them share port {port} without "
                             "conflict:")
                _listed(lines, conns, _connection_line)
            else:
                lines.append("No connection is open on it right now.")
        sections.append(Section(title, tuple(lines), tuple(local[j] for j in group) + tuple(conns)))
    kernel = [s for s in local if s.state in KERNEL_HELD_STATES and not s.owners]
    others = [s for i, s in enumerate(local) if i not in done and id(s) not in claimed
              and s not in kernel]
    if others:
        lines = [f"Connected sockets whose local port is {port} but that no listener here "
                 "accepted: a client that bound this port itself, or connections whose "
                 "listener is already closed. Each still holds the port:"]
        _listed(lines, others, _connection_line)
        sections.append(Section("Other connections on the port", tuple(lines), tuple(others)))
    if kernel or client_tw:
        lines = [_time_wait_text(s, port) for s in (kernel + client_tw)[:MAX_LISTED]]
        if len(kernel) + len(client_tw) > MAX_LISTED:
            lines.append(f"... and {len(kernel) + len(client_tw) - MAX_LISTED} more")
        sections.append(Section("Closed connections kept by the kernel", tuple(lines),
                                tuple(kernel + client_tw)))
    if clients:
        low, high = ranges.ephemeral
        lines = [f"Clients on this host connected to port {port}. The client end of each "
                 "connection is a socket of its own, on a port the kernel picked from the "
                 f"ephemeral range {low}-{high} (unless the client bound one):"]
        _listed(lines, clients, lambda s: (
            f"{endpoint_text(*s.local)} -> {_peer(s)}  {s.state.value}  {_owner_short(s)}"
            + ("" if ranges.is_ephemeral(s.local.port) else "  (not an ephemeral port)")))
        sections.append(Section("Clients of this port", tuple(lines), tuple(clients)))
    sections.append(Section("In short", (IN_SHORT,)))
    return Explanation("port", port, bool(local or clients or client_tw), summary,
                       tuple(sections), complete=not _hidden([*local, *clients]))


def _port_summary(port: int, local: Sequence[Socket], clients: Sequence[Socket],
                  ranges: HostPortRanges, name_of, protos, where: str) -> str:
    names = []
    for proto in sorted(protos):
        name = name_of(port, proto.value)
        if name:
            names.append(f"{name}/{proto.value}")
    klass = port_class(port)
    bounds = {"well-known": "0-1023", "registered": "1024-49151", "dynamic": "49152-65535"}[klass]
    parts = [f"Port {port} is a {klass} port ({bounds})"
             + (f"; its service name is {', '.join(names)}" if names else
                "; no service name is assigned to it") + "."]
    if port < ranges.unprivileged_start:
        parts.append(f"Binding it needs CAP_NET_BIND_SERVICE (it is below "
                     f"net.ipv4.ip_unprivileged_port_start, {ranges.unprivileged_start}).")
    if ranges.is_ephemeral(port):
        low, high = ranges.ephemeral
        parts.append(f"It lies in this host's ephemeral range {low}-{high}, from which the "
                     "kernel picks ports for outgoing connections.")
    if not local and not clients:
        parts.append(f"No socket uses it {where}.")
    else:
        listening = sum(1 for s in local if s.state is State.LISTEN)
        kernel = sum(1 for s in local if s.state in KERNEL_HELD_STATES and not s.owners)
        parts.append(f"{len(local)} socket(s) have it as their local port ({listening} "
                     f"listening, {kernel} kept by the kernel); {len(clients)} client socket(s) "
                     "here are connected to it.")
        hidden = _hidden([*local, *clients])
        if hidden:
            parts.append(f"The holders of {hidden} of them could not be seen: "
                         f"{visibility.remedy()}.")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# A process

def explain_pid(snapshot: Snapshot, pid: int, *, ranges: HostPortRanges | None = None,
                name_of: Callable[[int, str], str | None] | None = None) -> Explanation:
    """Explain every TCP and UDP socket process ``pid`` holds in ``snapshot``.

    Args:
        snapshot: a snapshot with owners.
        pid: the process.
        ranges, name_of: as for ``explain_port``.
    Returns:
        an ``Explanation``; ``found`` is False when the process holds no socket or is gone.
    Raises:
        ValueError: pid < 1.
    """
    if not isinstance(pid, int) or pid < 1:
        raise ValueError(f"pid must be a positive int, not {pid!r}")
    if name_of is None:
        from .services import service_name as name_of
    ranges = ranges or host_port_ranges()
    mine = [s for s in snapshot.sockets if any(o.pid == pid for o in s.owners)
            and s.family in (Family.IPV4, Family.IPV6)]
    process = next((o.process for s in mine for o in s.owners if o.pid == pid), None) \
        or process_info(pid)
    if process is None:
        if visibility.process_exists(pid):      # it exists, but /proc does not show it
            return Explanation(
                "pid", pid, False, f"PID {pid} names a process this user cannot see, so its "
                f"sockets are unknown ({visibility.remedy()}).",
                (Section("In short", (IN_SHORT,)),), complete=False)
        return Explanation("pid", pid, False, f"No process has PID {pid} (it may have exited).",
                           (Section("In short", (IN_SHORT,)),))
    unreadable = pid in snapshot.unreadable
    command = " ".join(process.cmdline or ()) or process.name or "?"
    if len(command) > MAX_COMMAND:
        command = command[:MAX_COMMAND - 3] + "..."
    started = process.started_at.isoformat(timespec="seconds") if process.started_at else "?"
    ports = sorted({s.local.port for s in mine if s.local.port is not None})
    summary = (f"PID {pid} names a process: {process.name or '?'}, user {process.user or '?'}, "
               f"started {started}, command: {command}. "
               + (f"Its descriptors could not be read, so which sockets it holds is unknown "
                  f"({visibility.remedy()})." if unreadable else
                  f"It holds {len(mine)} TCP/UDP socket(s) on {len(ports)} local port(s) "
                  f"{_where(snapshot)}." if mine else
                  f"It holds no TCP or UDP socket {_where(snapshot)}."))
    sections: list[Section] = []
    listening = [s for s in mine if s.state in (State.LISTEN, State.BOUND_INACTIVE)
                 or (s.proto is Proto.UDP and s.remote is None)]
    accepted = accepted_connections(snapshot.sockets)
    index = {id(s): i for i, s in enumerate(snapshot.sockets)}
    from_listener = {id(c) for conns in accepted.values() for c in conns}
    shown: set[int] = set()          # connections already listed under their listener
    for sock in listening:
        others = [o for o in sock.owners if o.pid != pid]
        owners = owners_text(sock)
        lines = [f"Scope: {scope_text(sock)}.", f"{owners[0].upper()}{owners[1:]}.",
                 _state_text(sock, sock.local.port)]
        if others:
            lines.append(f"This process is one of {len(sock.owners)} holders of the same "
                         "socket.")
        peers = [s for s in snapshot.sockets if s is not sock and s.state is sock.state
                 and _same_endpoint(s, sock) and s.inode != sock.inode]
        if peers and sock.state is State.LISTEN:
            lines.append(_group_text([sock, *peers], sock.local.port))
        conns = [c for c in accepted.get(index[id(sock)], [])
                 if c.owners or c.state not in KERNEL_HELD_STATES]
        if conns:
            lines.append(f"{len(conns)} connection(s) accepted from it, each its own socket "
                         "named by its 4-tuple:")
            _listed(lines, conns, _connection_line)
            shown.update(id(c) for c in conns)
        name = name_of(sock.local.port, sock.proto.value)
        kind = "listener" if sock.state is State.LISTEN else "bound socket"
        klass = f"{port_class(sock.local.port)} port"
        title = (f"{sock.proto.value.upper()} {kind} {endpoint_text(*sock.local)} "
                 f"({f'{name}, ' if name else ''}{klass}){_in_namespace(snapshot, sock)}")
        sections.append(Section(title, tuple(lines), (sock, *conns)))
    connected = [s for s in mine if s not in listening and id(s) not in shown]
    served = [s for s in connected if id(s) in from_listener]
    outgoing = [s for s in connected if id(s) not in from_listener]
    if served:
        lines = ["Connections accepted by a listener on this host that this process holds "
                 "(each its own socket, named by its 4-tuple):"]
        _listed(lines, served, _connection_line)
        sections.append(Section("Accepted connections", tuple(lines), tuple(served)))
    if outgoing:
        low, high = ranges.ephemeral
        lines = ["Connections this process made (or UDP peers it fixed). Its end of each uses "
                 f"a local port, normally an ephemeral one from {low}-{high}:"]
        _listed(lines, outgoing, lambda s: (
            f"{endpoint_text(*s.local)} -> {_peer(s)}  {s.state.value}"
            + ("  (ephemeral port)" if ranges.is_ephemeral(s.local.port) else "")))
        sections.append(Section("Outgoing connections", tuple(lines), tuple(outgoing)))
    sections.append(Section("In short", (IN_SHORT,)))
    return Explanation("pid", pid, bool(mine), summary, tuple(sections),
                       complete=not unreadable and not _hidden(mine))



# ---------------------------------------------------------------------------------------------
# UNIX sockets

def who_may_connect(file) -> str:
    """Who may connect to a socket file, from its mode and owner (``unixsock.SocketFile``):
    connecting needs write permission on the file (and search permission on each directory
    above it, not judged here); root may always."""
    import grp
    from .owners.process import user_name
    mode = file.mode or 0
    if mode & 0o002:
        return "every user (the file is writable by all: mode o+w)"
    who = []
    if mode & 0o200:
        who.append(f"its owner {user_name(file.uid)}")
    if mode & 0o020:
        try:
            group = grp.getgrgid(file.gid).gr_name
        except KeyError:
            group = str(file.gid)
        who.append(f"members of group {group}")
    return (" and ".join(who) or "nobody but root") + " (and root)"


def explain_unix(snapshot: Snapshot, target: str, file, verdict) -> Explanation:
    """Explain a UNIX socket file or abstract name: the listener and its holders, the file's
    mode and owner and who may therefore connect, and the connected clients.

    Args:
        snapshot: the sockets ``unixsock.lookup(target)`` found (bound to the file's inode, or
            with that abstract name), with owners and peers.
        target: the path or ``@name``.
        file: the ``unixsock.SocketFile`` at the path, None for an abstract name.
        verdict: ``unixsock.unbound_verdict``'s: a file no socket is bound to is called
            stale only when it says so (else its reasons are given: a namespace that could
            not be read may hold it).
    Returns:
        an ``Explanation`` of kind ``"unix"`` (``subject`` the target); ``found`` is False when
        no socket is bound there.
    """
    sockets = snapshot.sockets
    listeners = [s for s in sockets if s.state is State.LISTEN
                 or (s.unix.type == "dgram" and s.unix.peer_inode is None)]
    connections = [s for s in sockets if s not in listeners]
    sections = []
    if file is None:
        reach = ("An abstract name has no file and no permissions: any process in the same "
                 "network namespace may connect to it, including containers that share this "
                 "namespace (--network host).")
    elif file.error:
        reach = f"There is no socket file at this path ({file.error.replace('-', ' ')})."
    elif not file.is_socket:
        reach = "The file at this path is not a socket file."
    else:
        reach = (f"The socket file has mode {file.mode:04o}, owner uid {file.uid}, group gid "
                 f"{file.gid}; connecting needs write permission on it, so these may connect: "
                 f"{who_may_connect(file)}.")
    if not sockets:
        if verdict is not None and not verdict.stale:
            summary = (f"{target} is a socket file not proven stale: "
                       + "; ".join(text for _code, text in verdict.reasons) + ".")
            return Explanation("unix", target, False, summary, ())
        stale = file is not None and file.is_socket
        summary = (f"No socket is bound to {target}. " + (
            "It is a stale socket file: a server that binds there gets EADDRINUSE until the "
            f"file is removed (portscope check --clean {target})." if stale else reach))
        return Explanation("unix", target, False, summary, ())
    for sock in listeners:
        kind = sock.unix.type.value
        lines = [owners_text(sock)]
        if sock.local.address != target and file is not None:
            lines.append(f"It was bound as {sock.local.address}: the file was renamed or "
                         "moved since; the kernel keeps the bind-time name and the inode "
                         "identifies it.")
        if sock.state is State.LISTEN:
            lines.append(f"{sock.rx_queue_bytes} connection(s) wait to be accepted (backlog "
                         f"limit {sock.tx_queue_bytes}).")
        lines.append(reach)
        clients = [o for p in sock.unix.peers for o in p.owners]
        if clients and sock.unix.type == "dgram":
            lines.append("Connected senders: " + ", ".join(
                dict.fromkeys(_process_text(o.process) for o in clients)) + ".")
        sections.append(Section(f"{kind} socket {sock.state.value} (inode {sock.inode})",
                                tuple(lines), (sock,)))
    if connections:
        lines = []
        for sock in connections[:MAX_LISTED]:
            peers = [o for p in sock.unix.peers for o in p.owners]
            who = ", ".join(dict.fromkeys(_process_text(o.process) for o in peers)) or \
                "a process this user cannot see, or none"
            lines.append(f"inode {sock.inode} ({_owner_short(sock)}) talks to {who}")
        if len(connections) > MAX_LISTED:
            lines.append(f"... and {len(connections) - MAX_LISTED} more")
        sections.append(Section(f"{len(connections)} accepted connection(s), each its own "
                                "socket bound to the same file", tuple(lines),
                                tuple(connections)))
    clients = {o.pid: o for s in connections for p in s.unix.peers for o in p.owners}
    holders = {o.pid: o for s in listeners for o in s.owners}
    summary = (f"{target} is a UNIX socket "
               f"{'file' if file is not None else 'abstract name'}: "
               f"{len(listeners)} listening socket(s) held by "
               f"{', '.join(_process_text(o.process) for o in holders.values()) or 'no visible process'}"
               f"; {len(connections)} connection(s) from {len(clients)} client process(es).")
    return Explanation("unix", target, True, summary, tuple(sections))
