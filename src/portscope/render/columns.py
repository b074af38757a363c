"""Column specs for socket listings, shared by every tabular renderer.

A column turns a ``Socket`` into display text. Text that comes from processes (names, command
lines, paths) is escaped with ``escape.safe()``: control, bidirectional and invisible
characters never reach a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..ports import endpoint_text
from ..types import NetNamespace, Socket
from .escape import safe


def owner_pids(sock: Socket) -> str:
    """The holders' PIDs joined by commas, or ``-`` when none is visible."""
    return ",".join(str(o.pid) for o in sock.owners) if sock.owners else "-"


def owner_names(sock: Socket) -> str:
    """The holders' distinct process names; without owners, why (``(permission)``)."""
    if not sock.owners:
        return f"({sock.owner_unknown})" if sock.owner_unknown else ""
    names = dict.fromkeys(safe(o.process.name or "?") for o in sock.owners)
    return ",".join(names)


def owner_users(sock: Socket) -> str:
    """The holders' distinct users; without owners, the kernel's socket uid (``uid 0``)."""
    if not sock.owners:
        return "?" if sock.uid < 0 else f"uid {sock.uid}"     # -1: the source did not say
    users = dict.fromkeys(safe(o.process.user or "?") for o in sock.owners)
    return ",".join(users)


@dataclass(frozen=True, slots=True)
class Column:
    """A column: ``key`` (CSV header and ``--columns`` name), ``header`` (table title),
    ``get`` (socket -> text), ``align`` ("left" | "right")."""

    key: str
    header: str
    get: Callable[[Socket], str]
    align: str = "left"


def _local(s: Socket) -> str:
    if s.unix is not None:
        return safe(s.local.address) or "*"
    return endpoint_text(*s.local)


def _remote(s: Socket) -> str:
    if s.unix is not None:
        # as ss shows it: the peer's name (``*`` for none) and its socket inode
        name = safe(s.remote.address) if s.remote and s.remote.address else "*"
        return f"{name} {s.unix.peer_inode}" if s.unix.peer_inode else name
    return endpoint_text(s.remote.address, s.remote.port) if s.remote else "*"


_UNIX_NETIDS = {"stream": "u_str", "dgram": "u_dgr", "seqpacket": "u_seq"}


def _proto(s: Socket) -> str:
    if s.unix is not None:
        return _UNIX_NETIDS[s.unix.type.value]
    return f"{s.proto}{'6' if s.family == 'ipv6' else ''}"


def peer_processes(sock: Socket) -> str:
    """The processes on the other end of a UNIX socket: ``name/pid`` of each owner of its
    peers, each once; empty for other sockets."""
    if sock.unix is None:
        return ""
    found = dict.fromkeys(f"{safe(o.process.name or '?')}/{o.pid}"
                          for peer in sock.unix.peers for o in peer.owners)
    return ",".join(found)


def _scope(s: Socket) -> str:
    return "v6only" if s.v6only else ("dual" if s.v6only is False else "")


PROTO = Column("proto", "Proto", _proto)
STATE = Column("state", "State", lambda s: s.state.value)
LOCAL = Column("local", "Local Address:Port", _local)
REMOTE = Column("remote", "Peer Address:Port", _remote)
RECV_Q = Column("recv_q", "Recv-Q", lambda s: str(s.rx_queue_bytes), "right")
SEND_Q = Column("send_q", "Send-Q", lambda s: str(s.tx_queue_bytes), "right")
PID = Column("pid", "PID", owner_pids, "right")
PROCESS = Column("process", "Process", owner_names)
USER = Column("user", "User", owner_users)
INODE = Column("inode", "Inode", lambda s: str(s.inode), "right")
SCOPE = Column("v6only", "V6only", _scope)
PEERS = Column("peer_processes", "Peer Process", peer_processes)


def container_name(sock: Socket) -> str:
    """The container's name, else its short id (12 hex digits); empty when none."""
    c = sock.container
    if c is None:
        return ""
    return safe(c.name) if c.name else c.id[:12]


def published_text(sock: Socket) -> str:
    """Where a published host port goes: ``172.17.0.2:8080 httpd/4242``; ``?`` for what the
    runtime did not tell; ``(no listener seen)`` when no process was seen serving it inside
    (none listens there, or the container's namespace was not covered)."""
    p = sock.published
    if p is None:
        return ""
    port = "?" if p.port is None else str(p.port)
    target = endpoint_text(p.address, port) if p.address else f"port {port}"
    if p.port is None:
        return target
    if not p.served_by:
        return f"{target} (no listener seen)"
    servers = ",".join(dict.fromkeys(f"{safe(o.process.name or '?')}/{o.pid}"
                                     for o in p.served_by))
    return f"{target} {servers}"


def published_sentence(sock: Socket) -> str:
    """One sentence naming the container behind a published host port."""
    p = sock.published
    c = p.container
    name = safe(c.name) if c.name else c.id[:12]
    about = ", ".join(x for x in (c.runtime, c.image and f"image {safe(c.image)}") if x)
    how = f"held by {p.forwarder}" if p.forwarder else "NAT rules only, no host socket"
    target = published_text(sock) or "?"
    return (f"{endpoint_text(*sock.local)} is published by container {name}"
            f"{f' ({about})' if about else ''}, {how}: forwards to {target}")


CONTAINER = Column("container", "Container", container_name)
PUBLISHED = Column("published", "Forwards to", published_text)


def service_column(name_of: Callable[[int, str], str | None]) -> Column:
    """A ``Service`` column using ``name_of(port, proto)`` (the registry lookup)."""
    return Column("service", "Service",
                  lambda s: (name_of(s.local.port, s.proto.value) or "") if s.local.port else "")


def netns_column(namespaces: Sequence[NetNamespace]) -> Column:
    """A ``Netns`` column: the namespace's name, else its inode."""
    names = {ns.inode: safe(ns.name) if ns.name else str(ns.inode) for ns in namespaces}
    return Column("netns", "Netns", lambda s: names.get(s.netns, str(s.netns or "")))


def accepted_column(count_of: Callable[[Socket], int | None]) -> Column:
    """An ``Accepted`` column: ``count_of(socket)`` is the number of connections accepted
    from a listener (``snapshot.accepted_connections``), None for other sockets (empty)."""
    def text(sock: Socket) -> str:
        count = count_of(sock)
        return "" if count is None else str(count)
    return Column("accepted", "Accepted", text, "right")


def port_columns(accepted: dict[int, int], *, owners: bool = True) -> tuple[Column, ...]:
    """The columns of ``portscope PORT``: ``accepted`` maps ``id(socket)`` of a listener to the
    connections accepted from it; ``owners`` adds PID, Process and User."""
    return (PROTO, STATE, LOCAL, REMOTE) + ((PID, PROCESS, USER) if owners else ()) + (
        accepted_column(lambda s: accepted.get(id(s))),)


def listener_columns(name_of: Callable[[int, str], str | None], *,
                     owners: bool = True, unix: bool = False) -> tuple[Column, ...]:
    """The columns of ``portscope`` (listeners): with the ``Service`` names of
    ``name_of(port, proto)``; ``owners`` adds PID, Process and User, and with ``unix`` (UNIX
    sockets listed) the processes connected to them."""
    return (PROTO, LOCAL, service_column(name_of), STATE, SCOPE) + (
        (PID, PROCESS, USER) if owners else ()) + ((PEERS,) if owners and unix else ())


LIST_COLUMNS = (PROTO, STATE, RECV_Q, SEND_Q, LOCAL, REMOTE, PID, PROCESS, USER)
NO_OWNER_COLUMNS = (PROTO, STATE, RECV_Q, SEND_Q, LOCAL, REMOTE, INODE)
#: listings that include UNIX sockets: their inode, and the processes on the other end
UNIX_LIST_COLUMNS = (PROTO, STATE, RECV_Q, SEND_Q, LOCAL, REMOTE, INODE, PID, PROCESS, USER,
                     PEERS)
