"""The data model: endpoints, sockets, their owners and a snapshot of them.

The field names are part of the JSON schema (``schema_version`` 1) and stay stable.

``Endpoint``, ``Socket`` and ``Owner`` are immutable ``NamedTuple`` records rather than frozen dataclasses:
a snapshot of a busy host holds 200,000 sockets and 400,000 endpoints, and a frozen slotted
dataclass costs about 1.1 us to build against 0.2 us for a named tuple (measured on Python 3.11,
see ``benchmarks/README.md``). The few per-process records are frozen slotted dataclasses.
Stdlib only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class _StrEnum(str, enum.Enum):
    """A string enum whose members are their values (``str(Proto.TCP) == "tcp"``)."""

    def __str__(self) -> str:
        return self.value


class Proto(_StrEnum):
    """Transport protocol of a socket."""

    TCP = "tcp"
    UDP = "udp"
    UNIX = "unix"
    RAW = "raw"


class Family(_StrEnum):
    """Address family of a socket."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    UNIX = "unix"


class State(_StrEnum):
    """Socket state under the kernel's names (``include/net/tcp_states.h``).

    ``PUBLISHED`` is portscope's own: a row for a published container port that has no host
    socket (only listener views ask for these rows). ``BOUND_INACTIVE`` is a TCP socket that called ``bind()`` but never ``listen()`` or
    ``connect()``: it holds its port, yet ss, netstat and ``/proc/net`` do not show it (the
    kernel dumps it from the bind hash, kernel >= 6.8). ``UNCONN`` is an unconnected UDP socket
    (the kernel's TCP_CLOSE), as ss names it.
    """

    ESTABLISHED = "ESTABLISHED"
    SYN_SENT = "SYN_SENT"
    SYN_RECV = "SYN_RECV"
    FIN_WAIT1 = "FIN_WAIT1"
    FIN_WAIT2 = "FIN_WAIT2"
    TIME_WAIT = "TIME_WAIT"
    CLOSE = "CLOSE"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    LISTEN = "LISTEN"
    CLOSING = "CLOSING"
    NEW_SYN_RECV = "NEW_SYN_RECV"
    BOUND_INACTIVE = "BOUND_INACTIVE"
    UNCONN = "UNCONN"
    #: not a kernel state: a port a container runtime publishes through NAT rules (DNAT) with
    #: no socket on the host; such rows have inode 0 and ``owner_unknown`` ``dnat``.
    PUBLISHED = "PUBLISHED"


#: States in which a socket is a server endpoint (a "listener" in portscope's views).
LISTENER_STATES = frozenset({State.LISTEN, State.BOUND_INACTIVE, State.UNCONN})

#: States held by the kernel after the process closed the socket (no descriptor, no owner).
KERNEL_HELD_STATES = frozenset({State.TIME_WAIT, State.FIN_WAIT2, State.LAST_ACK, State.CLOSING,
                                State.FIN_WAIT1, State.NEW_SYN_RECV, State.SYN_RECV})


class OwnerUnknown(_StrEnum):
    """Why a socket has no visible owner (``Socket.owner_unknown``).

    - ``permission``: some processes' ``/proc/PID/fd`` could not be read by this caller.
    - ``kernel``: the kernel holds the socket with no descriptor (TIME_WAIT, orphans, inode 0).
    - ``vanished``: every process was readable and none holds it any more (closed mid-scan).
    - ``other-netns``: held by a process of another network namespace that was not scanned.
    - ``dnat``: no socket at all: a container runtime forwards the port with NAT rules
      (``State.PUBLISHED`` rows).
    """

    PERMISSION = "permission"
    KERNEL = "kernel"
    VANISHED = "vanished"
    OTHER_NETNS = "other-netns"
    DNAT = "dnat"


class Endpoint(NamedTuple):
    """One end of a socket: ``address`` is the textual IP (``"0.0.0.0"``, ``"::"``,
    ``"fe80::1%eth0"``) or a UNIX socket's name: its path, ``@name`` for an abstract name
    (NUL bytes and undecodable bytes shown as ``\\x00``, ``\\xff``), ``""`` for an unnamed
    socket; ``port`` is None where the family has no port."""

    address: str
    port: int | None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as seen during one snapshot.

    ``(pid, started_at)`` is the identity of a process: a PID alone may be reused.
    Sources: ``/proc/PID/stat`` (ppid, start time), ``/proc/PID/exe``, ``/proc/PID/cmdline``,
    ``/proc/PID/status`` (uid), ``/proc/PID/cgroup`` (systemd unit, container id); psutil on
    other systems. Fields that could not be read are None.

    Attributes:
        pid: process id in the caller's PID namespace.
        ppid: parent process id.
        name: the kernel's ``comm`` (at most 15 characters on Linux).
        exe: absolute path of the executable (may end in `` (deleted)``).
        cmdline: the argument vector.
        user: user name of the real uid (the number as text when it has no name).
        uid: real user id.
        started_at: start time, an aware UTC datetime.
        unit: the systemd unit (``nginx.service``) when the process runs in one.
        container: the container id (64 hex digits) when the process runs in one.
    """

    pid: int
    ppid: int | None = None
    name: str | None = None
    exe: str | None = None
    cmdline: tuple[str, ...] | None = None
    user: str | None = None
    uid: int | None = None
    started_at: datetime | None = None
    unit: str | None = None
    container: str | None = None


class Owner(NamedTuple):
    """A process holding a socket through descriptor ``fd`` (-1 when the backend cannot tell
    the descriptor, as psutil on some systems). A named tuple for the same reason as Socket."""

    pid: int
    fd: int
    process: ProcessInfo


@dataclass(frozen=True, slots=True)
class Container:
    """A container a socket or process belongs to.

    Attributes:
        id: the full container id (64 hex digits).
        name: the runtime's name for it, None when the runtime did not answer.
        runtime: ``docker``, ``podman``, ``containerd``/``kubernetes``, or None if unknown.
        image: the image name, None when the runtime did not answer.
        pod: the pod id (a Kubernetes pod UID, a Podman pod id) when the container is in one.
    """

    id: str
    name: str | None = None
    runtime: str | None = None
    image: str | None = None
    pod: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """Where a host port that a container runtime publishes really goes.

    Attributes:
        container: the container the port is published for.
        address: the container-side address the traffic is sent to (its IP on the container
            network), None when unknown.
        port: the container-side port, None when the runtime's state could not be read.
        forwarder: what holds the host port: ``docker-proxy`` (proxies the traffic),
            ``conmon``, ``dockerd`` or ``rootlessport`` (hold it while NAT rules or a helper
            forward), or None when nothing does (NAT rules only, ``State.PUBLISHED``).
        served_by: every process holding a listener on ``port`` in the container's network
            namespace that receives for ``address`` (empty: nothing serves it, or that
            namespace was not covered by the snapshot).
    """

    container: Container
    address: str | None
    port: int | None
    forwarder: str | None
    served_by: tuple["Owner", ...] = ()


class Socket(NamedTuple):
    """One kernel socket and every process that holds it.

    Attributes:
        proto: ``Proto`` (tcp, udp, unix).
        family: ``Family`` (ipv4, ipv6, unix).
        local: local endpoint.
        remote: remote endpoint, None for a socket with no peer (listeners, unconnected UDP).
        state: ``State``.
        inode: socket inode (the ``socket:[N]`` of ``/proc/PID/fd``); 0 = no descriptor.
        uid: owning uid as the kernel records it (the creator's effective uid); -1 where the
            source does not tell it (psutil with no readable holder, ``/proc/net/unix``).
        netns: network namespace inode, None when unknown.
        v6only: for IPv6 sockets, IPV6_V6ONLY; None for IPv4.
        rx_queue_bytes: receive queue in bytes; for a listener, the accept queue in connections.
        tx_queue_bytes: send queue in bytes; for a listener, the accept backlog limit.
        owners: every process holding the socket (fork sharing lists them all).
        owner_unknown: why ``owners`` is empty (an ``OwnerUnknown`` value), else None.
        cookie: the kernel's socket cookie (unique while the socket lives), None if unknown.
        container: the container serving this socket, when known (by its owner's cgroup, the
            socket's cgroup, its network namespace, or the forwarder that publishes it).
        published: for a host port held by a container runtime's forwarder (or published
            with NAT rules only), where it really goes; None otherwise.
        unix: for a UNIX domain socket, its type, socket file, peer and peers
            (``UnixInfo``); None for other sockets.

    A UNIX socket has ``local.address`` its name (``Endpoint``) and ``local.port`` None;
    ``remote`` is its peer's name (``""`` for an unnamed peer) when it is connected; states
    are LISTEN, ESTABLISHED, SYN_SENT and UNCONN (not connected).
    """

    proto: Proto
    family: Family
    local: Endpoint
    remote: Endpoint | None
    state: State
    inode: int
    uid: int
    netns: int | None = None
    v6only: bool | None = None
    rx_queue_bytes: int = 0
    tx_queue_bytes: int = 0
    owners: tuple[Owner, ...] = ()
    owner_unknown: OwnerUnknown | None = None
    cookie: int | None = None
    container: Container | None = None
    published: Published | None = None
    unix: UnixInfo | None = None

    @property
    def is_listener(self) -> bool:
        """True for a server endpoint: TCP LISTEN or BOUND_INACTIVE, unconnected UDP, a UNIX
        listener or unconnected UNIX datagram socket."""
        return self.state in LISTENER_STATES


class UnixType(_StrEnum):
    """The type of a UNIX domain socket."""

    STREAM = "stream"
    DGRAM = "dgram"
    SEQPACKET = "seqpacket"


class Peer(NamedTuple):
    """A UNIX socket connected to another: its socket ``inode`` and its ``owners`` (empty when
    none is visible or the peer is not in the snapshot)."""

    inode: int
    owners: tuple[Owner, ...] = ()


class UnixInfo(NamedTuple):
    """What only a UNIX domain socket has (``Socket.unix``).

    Attributes:
        type: ``UnixType`` (stream, dgram, seqpacket).
        vfs_dev: for a socket bound to a path, the device of the socket file, as ``st_dev``
            of ``os.stat`` gives it; None otherwise or when the backend does not tell.
        vfs_inode: the inode of the socket file (the kernel gives its low 32 bits); None as
            ``vfs_dev``. A live socket whose file was renamed keeps its bind-time path in
            ``Socket.local`` but this inode follows the file.
        peer_inode: the socket inode of the peer (a connected socket), None when it has none
            or the backend does not tell.
        pending: for a listener, the socket inodes of the clients waiting in its accept queue.
        peers: the sockets this one talks to, found both ways: its peer, every socket whose
            peer it is (the clients of a datagram server), and a listener's pending clients;
            each with its owners.
    """

    type: UnixType
    vfs_dev: int | None = None
    vfs_inode: int | None = None
    peer_inode: int | None = None
    pending: tuple[int, ...] = ()
    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True, slots=True)
class NetNamespace:
    """A network namespace: ``inode`` of ``/proc/PID/ns/net``; ``name`` from ``/run/netns``."""

    inode: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every socket of one moment, joined with its owners.

    Attributes:
        sockets: the sockets, in kernel dump order.
        taken_at: when the scan started, aware UTC datetime.
        hostname: this host's name.
        backend: the socket source used (``netlink``, ``procfs``, ``psutil``).
        complete: False when some owners could not be read (see ``warnings``).
        warnings: one line each, for people (unreadable processes, interrupted dumps).
        namespaces: the network namespaces covered.
        unreadable_pids: how many processes' descriptors could not be read.
        unreadable: the PIDs whose descriptors could not be read (processes that hidepid
            hides are not listed at all, so not here either).
    """

    sockets: tuple[Socket, ...]
    taken_at: datetime
    hostname: str
    backend: str
    complete: bool = True
    warnings: tuple[str, ...] = ()
    namespaces: tuple[NetNamespace, ...] = field(default=())
    unreadable_pids: int = 0
    unreadable: frozenset[int] = frozenset()
