"""The change stream: consecutive views of the sockets turned into events. Pure: no I/O.

A *view* maps each tracked thing's ``Key`` to what was seen of it (``Item``). In the default
scope the things are listeners (TCP LISTEN and BOUND_INACTIVE, bound UDP), one per kernel
socket, keyed by ``(netns, proto, local address, local port, inode)``; with ``connections=True``
connected sockets are added, aggregated so that a busy server does not make one item per
connection: the connections accepted from a listener per remote *address* (the client's
ephemeral port dropped), the other connections (outgoing) per local address and remote
endpoint (the local ephemeral port dropped).

Comparing two views gives the events (``EventKind``): ``opened``, ``closed``,
``owners-changed`` (a holder added or gone: fork, exec, handover across a restart; sockets
only) and ``state-changed`` (BOUND_INACTIVE -> LISTEN on one socket). Each item keeps the owners
as they were resolved while it was seen (pid, start time, exe, user, unit, container): a
``closed`` event carries the owners of the last view that had it, because at close the
process may already be gone.

Usage::

    events = diff(prev_snapshot, cur_snapshot)                # two portscope Snapshots
    events = diff_views(prev_view, cur_view, after=t1, at=t2, source=Source.POLL)

An event's time is ``at``; ``after`` is the earliest moment it can have happened (polling:
the previous poll, so "between after and at"), None when the source timed it exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from ..types import LISTENER_STATES, Family, ProcessInfo, Proto, Snapshot, Socket, State


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class EventKind(_StrEnum):
    """What happened to a tracked socket or connection group."""

    OPENED = "opened"
    CLOSED = "closed"
    OWNERS_CHANGED = "owners-changed"
    STATE_CHANGED = "state-changed"


class Source(_StrEnum):
    """What timed an event.

    - ``poll``: two snapshots differed; the event happened between ``after`` and ``at``.
    - ``tracepoint``: the kernel's ``sock:inet_sock_set_state`` tracepoint (exact, TCP only).
    - ``sock-destroy``: the sock_diag destroy multicast groups (exact close).
    - ``startup``: the recorder's first snapshot against what it had stored: the change
      happened while nothing was recording (between the last stored poll and ``at``).
    """

    POLL = "poll"
    TRACEPOINT = "tracepoint"
    SOCK_DESTROY = "sock-destroy"
    STARTUP = "startup"


#: states of a connected socket a process holds (kernel-held leftovers such as TIME_WAIT have
#: no descriptor and are not counted)
CONNECTED_STATES = frozenset({State.ESTABLISHED, State.SYN_SENT, State.SYN_RECV,
                              State.CLOSE_WAIT, State.FIN_WAIT1, State.FIN_WAIT2,
                              State.LAST_ACK, State.CLOSING})


class Key(NamedTuple):
    """The identity of a tracked socket or connection group across views.

    A socket (listener): ``inode`` set, ``remote_address`` and ``remote_port`` None.
    Connections accepted from a listener: the listener's ``address``/``port``, ``inode`` 0,
    ``remote_address`` the client's address, ``remote_port`` None. Outgoing connections:
    the local ``address``, ``port`` None, ``inode`` 0, the remote address and port.
    """

    netns: int | None
    proto: Proto
    address: str
    port: int | None
    inode: int
    remote_address: str | None = None
    remote_port: int | None = None

    @property
    def is_connections(self) -> bool:
        """True for a group of connections (``--connections``), False for one socket."""
        return self.remote_address is not None


class Item(NamedTuple):
    """What a view holds for a key.

    Attributes:
        family: ``Family`` of the socket(s).
        state: the socket's state; ``ESTABLISHED`` for a connection group.
        owners: the holders, each process once (first descriptor order), as resolved in the
            snapshot this item comes from.
        uid: the kernel's socket uid (of the first connection for a group).
        v6only: IPV6_V6ONLY of an IPv6 socket, None otherwise.
        connections: the number of connections of a group; 0 for a socket.
    """

    family: Family
    state: State
    owners: tuple[ProcessInfo, ...]
    uid: int
    v6only: bool | None = None
    connections: int = 0


View = Mapping[Key, Item]


@dataclass(frozen=True, slots=True)
class Event:
    """One change.

    Attributes:
        kind: ``EventKind``.
        key: the socket or connection group.
        item: what was seen of it: after the change, or for ``closed`` the last view that had
            it (its owners are those of that moment).
        at: when it happened (exact), or the latest it can have happened; aware UTC.
        after: the earliest it can have happened (the previous poll), None when exact.
        source: ``Source`` that timed it.
        old_state: for ``state-changed``, the state before.
        added: for ``owners-changed``, holders that appeared (fork, exec, handover).
        removed: for ``owners-changed``, holders that went away (their records as last seen).
        pid: the process the kernel named as the cause (tracepoint: the caller of
            ``listen()`` or ``close()``), None when not known.
    """

    kind: EventKind
    key: Key
    item: Item
    at: datetime
    after: datetime | None
    source: Source
    old_state: State | None = None
    added: tuple[ProcessInfo, ...] = ()
    removed: tuple[ProcessInfo, ...] = ()
    pid: int | None = None


def socket_key(sock: Socket) -> Key:
    """The identity of one socket: ``(netns, proto, local address, local port, inode)``.

    The one place that decides it (to be shared with audit baselines and the exporter)."""
    return Key(sock.netns, sock.proto, sock.local.address, sock.local.port, sock.inode)


def same_holder(a: ProcessInfo, b: ProcessInfo) -> bool:
    """Two owner records are the same holder when pid and start time agree and, where both
    are known, the executable too (an ``exec`` keeps the pid and start time but changes the
    executable; an exiting process's executable can no longer be read, which is no change)."""
    return (a.pid == b.pid and a.started_at == b.started_at
            and (a.exe is None or b.exe is None or a.exe == b.exe))


def _owners(sock: Socket) -> tuple[ProcessInfo, ...]:
    seen: dict[int, ProcessInfo] = {}
    for owner in sock.owners:
        seen.setdefault(owner.pid, owner.process)
    return tuple(seen.values())


def view(sockets: Iterable[Socket], *, connections: bool = False) -> dict[Key, Item]:
    """The view of ``sockets`` (one snapshot's).

    Args:
        sockets: sockets of one snapshot, with owners (any filter; sockets outside the scope
            are ignored).
        connections: also track connected sockets, aggregated per listener and remote
            address (accepted) or per local address and remote endpoint (outgoing). A
            connection belongs to a listener of its namespace, protocol and local port whose
            address is its local address or the wildcard of its family.
    Returns:
        ``{Key: Item}``; listeners are TCP LISTEN/BOUND_INACTIVE and unconnected UDP.
    """
    result: dict[Key, Item] = {}
    connected: list[Socket] = []
    for s in sockets:
        if s.state in LISTENER_STATES and s.remote is None:
            result[socket_key(s)] = Item(s.family, s.state, _owners(s), s.uid, s.v6only)
        elif connections and s.remote is not None and s.inode and s.state in CONNECTED_STATES:
            connected.append(s)
    if not connected:
        return result
    from ..identity import WILDCARDS        # ipaddress: only when connections are tracked
    listening: dict[tuple, set[str]] = {}
    for key in result:
        listening.setdefault((key.netns, key.proto, key.port), set()).add(key.address)
    groups: dict[Key, list[Socket]] = {}
    for s in connected:
        addresses = listening.get((s.netns, s.proto, s.local.port), ())
        if s.local.address in addresses:
            key = Key(s.netns, s.proto, s.local.address, s.local.port, 0, s.remote.address)
        elif WILDCARDS.get(s.family) in addresses:
            key = Key(s.netns, s.proto, WILDCARDS[s.family], s.local.port, 0,
                      s.remote.address)
        else:
            key = Key(s.netns, s.proto, s.local.address, None, 0, s.remote.address,
                      s.remote.port)
        groups.setdefault(key, []).append(s)
    for key, members in groups.items():
        seen: dict[int, ProcessInfo] = {}
        for s in members:
            for owner in s.owners:
                seen.setdefault(owner.pid, owner.process)
        first = members[0]
        result[key] = Item(first.family, State.ESTABLISHED, tuple(seen.values()), first.uid,
                           first.v6only, len(members))
    return result


def diff_views(prev: View, cur: View, *, after: datetime | None, at: datetime,
               source: Source = Source.POLL) -> list[Event]:
    """The events that turn ``prev`` into ``cur``.

    Args:
        prev, cur: views (``view()``), ``prev`` the older.
        after: when ``prev`` was taken (the earliest the changes can have happened), or None
            when ``source`` times them exactly.
        at: when ``cur`` was taken (aware UTC).
        source: what timed the change (``Source``).
    Returns:
        events in order: closed, state-changed, owners-changed, opened; within a kind in key
        order (``(netns, proto, address, port, inode, ...)``). A connection group's count
        changing is no event.
    """
    closed = [Event(EventKind.CLOSED, k, prev[k], at, after, source)
              for k in sorted(prev.keys() - cur.keys(), key=_order)]
    opened = [Event(EventKind.OPENED, k, cur[k], at, after, source)
              for k in sorted(cur.keys() - prev.keys(), key=_order)]
    changed: list[Event] = []
    owners_changed: list[Event] = []
    for key in prev.keys() & cur.keys():
        old, new = prev[key], cur[key]
        if old == new:
            continue
        if old.state is not new.state:
            changed.append(Event(EventKind.STATE_CHANGED, key, new, at, after, source,
                                 old_state=old.state))
        if key.is_connections or old.owners == new.owners:
            continue
        added = tuple(p for p in new.owners if not any(same_holder(p, q) for q in old.owners))
        removed = tuple(p for p in old.owners if not any(same_holder(p, q) for q in new.owners))
        if added or removed:
            owners_changed.append(Event(EventKind.OWNERS_CHANGED, key, new, at, after, source,
                                        added=added, removed=removed))
    changed.sort(key=lambda e: _order(e.key))
    owners_changed.sort(key=lambda e: _order(e.key))
    return [*closed, *changed, *owners_changed, *opened]


def _order(key: Key) -> tuple:
    return (key.netns or 0, key.proto, key.address, key.port or 0, key.inode,
            key.remote_address or "", key.remote_port or 0)


def diff(prev: Snapshot, cur: Snapshot, *, connections: bool = False) -> list[Event]:
    """The events between two snapshots, timed by polling ("between ``prev.taken_at`` and
    ``cur.taken_at``"). See ``view`` for ``connections`` and ``diff_views`` for the order."""
    return diff_views(view(prev.sockets, connections=connections),
                      view(cur.sockets, connections=connections),
                      after=prev.taken_at, at=cur.taken_at, source=Source.POLL)
