"""take_snapshot(): sockets from a backend joined with their owners from one fd scan, and with
the containers they belong to (``containers/``)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import gc
import itertools
import os
import socket as _socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import backends, containers, namespaces, sockstat, unixsock
from .backends.base import Backend, RawBackend
from .owners import bpf, fdscan, process, visibility
from .errors import AccessDenied, BackendError, BackendUnavailable, InvalidInput
from .filters import SocketFilter, address_covers
from .types import (LISTENER_STATES, Family, NetNamespace, Owner, OwnerUnknown,
                    Proto, Snapshot, Socket, State)

if TYPE_CHECKING:
    from .owners.sockets import HeldSockets

class SnapshotStream:
    """A snapshot being read: iterate it once for its sockets, decoded and joined lazily.

    ``complete``, ``warnings`` and ``missing_owners`` are final once the iteration ended. The CLI
    streams large listings this way (a full snapshot of 200,000 sockets never needs to be held
    as objects at once); ``take_snapshot()`` collects it into a ``Snapshot``.

    Container attribution happens during the iteration: a socket whose first owner runs in a
    container gets ``container``; a forwarder's listener (docker-proxy, conmon, dockerd,
    rootlessport) is held back and comes at the end with ``container`` and ``published``, once
    the listeners inside the containers were seen; then, when asked for, ``State.PUBLISHED``
    rows for ports published with no host socket.

    Attributes:
        taken_at: when the scan started (aware UTC).
        hostname, backend, namespaces, unreadable, unreadable_pids: as in ``Snapshot``.
        warnings: diagnostics, one line each (final once the stream was iterated).
        missing_owners: sockets left without owner for lack of permission.
        partial_owners: sockets shown with some holders while others could not be
            attributed (the psutil backend).
        dump_bytes: size of the kernel replies still to decode (0 when already decoded); UNIX
            sockets, decoded already but still to be joined, count as their reply's size.
    """

    def __init__(self, sockets: Iterator[Socket], flt: SocketFilter, taken_at: datetime,
                 backend: str, warnings: list[str], covered: Sequence[NetNamespace],
                 unreadable: frozenset[int], resolver: containers.ContainerResolver | None = None,
                 published: bool = False,
                 shares: Callable[..., Iterator[Socket | str]] | None = None,
                 dump_bytes: int = 0) -> None:
        self._sockets = sockets
        self._shares = None if published else shares
        self.dump_bytes = dump_bytes
        self._flt = flt
        self._resolver = resolver
        self._published = published
        self.taken_at = taken_at
        self.hostname = _socket.gethostname()
        self.backend = backend
        self._warnings = warnings
        self.namespaces = tuple(covered)
        self.unreadable = unreadable
        self.unreadable_pids = len(unreadable)
        self.missing_owners = 0
        self.partial_owners = 0

    @property
    def complete(self) -> bool:
        """False when some sockets' owners could not be read, all or some of them (final
        after iteration)."""
        return not self.missing_owners and not self.partial_owners

    @property
    def warnings(self) -> list[str]:
        """Diagnostics, one line each; final once the stream was iterated."""
        if not self.missing_owners:
            return list(self._warnings)
        return [*self._warnings, missing_owners_note(self.missing_owners, self.unreadable,
                                                     self.backend)]

    @property
    def other_warnings(self) -> list[str]:
        """``warnings`` but the missing-owner summary (for a caller that says which of its
        sockets lack owners itself, with ``missing_owners_note``)."""
        return list(self._warnings)

    @property
    def divisible(self) -> bool:
        """True when ``share()`` can split the stream (a decoded-on-the-fly netlink dump)."""
        return self._shares is not None

    def share(self, index: int, count: int, unix_rows: Callable | None = None
              ) -> Iterator[Socket | str]:
        """Share ``index`` of ``count`` disjoint parts of the stream, for rendering in several
        processes; together the shares hold every socket once (a forwarder's listener comes
        at the end of the share that holds it). Use either the shares or the whole stream.

        ``unix_rows``: a writer's encoder of joined UNIX sockets (``jsonfmt.UnixRows``,
        called with the join, the owner index, the ``owner_unknown`` of a socket without a
        visible holder, the container lookup and the share): the UNIX sockets then come as
        the texts it yields (``str``), unless the filter selects by owner.

        Raises:
            ValueError: the stream is not ``divisible``.
        """
        if self._shares is None:
            raise ValueError("this snapshot stream cannot be divided")
        if unix_rows is None or self._flt.needs_owners:
            return self._walk(self._shares(index, count))
        made: list = []

        def encoder(*args):
            made.append(unix_rows(*args))
            return made[-1]

        return self._walk(self._shares(index, count, encoder), made)

    def __iter__(self) -> Iterator[Socket]:
        return self._walk(self._sockets)

    def _walk(self, sockets: Iterator[Socket | str], encoded: Sequence = ()
              ) -> Iterator[Socket | str]:
        """``sockets`` filtered by owner, with container attribution, and counted; a ``str``
        (a socket's text, from one of the ``encoded`` encoders, which count their own sockets
        without owner) is passed on."""
        match = self._flt.match_owners if self._flt.needs_owners else None
        permission = OwnerUnknown.PERMISSION
        missing = partial = 0
        resolver = self._resolver
        forwarders = containers.FORWARDERS
        host = namespaces.own_inode() if self._published else None
        present: set[tuple[Proto, str, int | None]] = set()
        with _gc_paused():
            for s in sockets:
                if s.__class__ is str:
                    yield s
                    continue
                if match is not None and not match(s):
                    continue
                if s.owner_unknown is permission:
                    if s[11]:
                        partial += 1    # some holders shown, others not attributable
                    else:
                        missing += 1
                if host is not None and s.netns == host:
                    present.add((s.proto, s.local.address, s.local.port))
                if resolver is not None and s[16] is None:     # UNIX: joined in unixsock
                    held = s[11]
                    if held:
                        process = held[0][2]
                        if process.container is not None or process.name in forwarders:
                            s = resolver.attach(s)
                            if s is None:       # a forwarder: resolved once all were seen
                                continue
                    elif s[14] is not None:
                        resolver.remember(s)
                yield s
            if resolver is not None:
                yield from resolver.forwarded()
                if host is not None and any(ns.inode == host for ns in self.namespaces):
                    yield from self._published_rows(resolver, host, present)
                self._warnings.extend(w for w in resolver.warnings if w not in self._warnings)
        self.missing_owners += missing + sum(rows.missing_owners for rows in encoded)
        self.partial_owners += partial

    def share_result(self) -> tuple[int, list[str]]:
        """What iterating this stream (or a share of it) found: ``(missing_owners, warnings
        other than the missing-owner summary)``, for ``add_share_result`` in another
        process."""
        return self.missing_owners, list(self._warnings)

    def add_share_result(self, missing_owners: int, warnings: Sequence[str]) -> None:
        """Count in what iterating a share in another process found (``share_result``)."""
        self.missing_owners += missing_owners
        self._warnings.extend(w for w in warnings if w not in self._warnings)

    def _published_rows(self, resolver: containers.ContainerResolver, host: int,
                        present: set[tuple[Proto, str, int | None]]) -> Iterator[Socket]:
        # the filter's socket predicates but its states (PUBLISHED is not a kernel state)
        flt = replace(self._flt, states=None)
        for row in resolver.published_rows(host, present):
            if flt.match_socket(row) and flt.match_owners(row):
                yield row

    def to_snapshot(self, sockets: Sequence[Socket]) -> Snapshot:
        """A ``Snapshot`` of ``sockets`` (this stream's, once iterated) with its metadata."""
        return Snapshot(sockets=tuple(sockets), taken_at=self.taken_at, hostname=self.hostname,
                        backend=self.backend, complete=self.complete,
                        warnings=tuple(self.warnings), namespaces=self.namespaces,
                        unreadable_pids=self.unreadable_pids, unreadable=self.unreadable)


def missing_owners_note(sockets: int, unreadable: frozenset[int], backend: str) -> str:
    """The one stderr line for ``sockets`` socket(s) without a visible owner: why (privilege,
    hidepid, a sandbox or LSM for root, naming a few of the ``unreadable`` PIDs:
    ``owners.visibility.obstacle``) and what shows them."""
    if unreadable or visibility.hidden_from_caller() is not None:
        why = visibility.obstacle(unreadable)
    elif backend == "psutil":
        why = "the psutil backend names no holder for them" + (
            "" if os.geteuid() == 0 else f" (hidden from this user: {visibility.remedy()})")
    else:
        why = f"the {backend} backend could not attribute them"
    return f"{sockets} socket(s) have no visible owner: {why}"


@contextlib.contextmanager
def _gc_paused():
    """Collections off while a snapshot builds its objects: they form no cycles, and a
    collection would only re-walk them (measured: 35 % of a 200,000-socket listing)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def open_snapshot(flt: SocketFilter | None = None, *, backend: str | None = None,
                  owners: bool = True, workers: int | None = None,
                  netns: str | None = None, published: bool = False,
                  unix_select: unixsock.Selector | None = None,
                  must_enter: bool = False) -> SnapshotStream:
    """Start a snapshot and return it as a stream of sockets (see ``take_snapshot``).

    The socket dumps and the fd scan happen here (the scan in forked workers while the kernel
    dumps); decoding, joining and container attribution happen while the stream is iterated.
    Arguments, errors and privileges are those of ``take_snapshot``.
    """
    with _gc_paused():
        return _open_snapshot(flt or SocketFilter(), backend, owners, workers, netns, published,
                              unix_select, must_enter)


def _open_snapshot(flt: SocketFilter, backend: str | None, owners: bool, workers: int | None,
                   netns: str | None, published: bool,
                   unix_select: unixsock.Selector | None = None,
                   must_enter: bool = False) -> SnapshotStream:
    taken_at = datetime.now(timezone.utc)
    name = backend or backends.default_backend()
    module = backends.load(name)
    scan_owners = owners and not module.PROVIDES_OWNERS
    if workers is None:
        workers = fdscan.default_workers()
    # A BPF scan is a thread that reads the kernel's iterators: start it first, so that it
    # runs beside the namespace discovery and the dumps, and cut it to the dumps' inodes
    # afterwards. Without it: a listener or single-port dump is cheap (under 1 ms to a few
    # tens of ms), so dump first and scan /proc for its inodes only; a full dump is not, so
    # scan in forked workers meanwhile, and decode the dumps once the owners are known.
    walked = scan_owners and bpf.usable()
    # A port lookup as root: the walk reads the sockets on that port only, and counts the
    # others per namespace, so that only a namespace whose counts do not match is dumped
    port = flt.single_port if (module.NAME == "netlink" and unix_select is None
                               and Proto.UNIX not in flt.protos) else None
    pending: fdscan.BpfScan | fdscan.PendingScan | None = (
        fdscan.BpfScan(workers=workers, port=port,
                       records=bool(flt.protos & {Proto.TCP, Proto.UDP})) if walked else None)
    entries = namespaces.select(netns, netns_by_pid=pending.netns_by_pid if pending else None)
    namespaces.require_entry(entries)
    cheap = flt.single_port is not None or unix_select is not None or (
        flt.states is not None and flt.states <= LISTENER_STATES)
    raw = isinstance(module, RawBackend)    # netlink: keep the reply, decode while streaming
    lazy = raw and scan_owners and not cheap
    if lazy and pending is None:
        pending = fdscan.PendingScan(workers=workers)
    # a full listing: the holders' details are read on the other CPU meanwhile (those of
    # every process the walk visits), once, not by each process writing a share of it
    infos = process.InfoReader(sorted(pending.netns_by_pid() or ())) \
        if walked and lazy and workers else None
    # As root, the BPF descriptor walk has read every socket a process holds, in every
    # namespace (or every socket on the port asked for): the dumps are then only for what it
    # cannot have (see _dump_beside). (Not for a listener query: its dumps are cheap, and the
    # walk's records of every socket would cost more than they spare: measured 0.67 s
    # against 0.19 s at 200,000 for a port, before the walk could be limited to one.)
    # (Nor for UNIX sockets alone: the walk reads no UNIX fields, and waiting for it would
    # only keep their dump from running beside it.)
    # The caller's own namespace is dumped meanwhile, on the other CPU, for what the walk
    # cannot have there: TIME_WAIT sockets, which a busy host always has, and the sockets of
    # a process it cannot see; for a port, its sockets whole (see _dump_beside)
    early = None
    own = namespaces.own_inode()
    if walked and (port or lazy) and any(e.namespace.inode == own for e in entries):
        ask = flt if port else _beside_filter(flt)
        if ask is not None:
            early = module.collect(ask, netns=own, counts=sockstat.read())
    held = pending.held_sockets(port) if (walked and (lazy or port) and module.NAME == "netlink"
                                          and flt.protos & {Proto.TCP, Proto.UDP}) else None
    if held is not None:
        return _open_beside(held, pending, module, entries, flt, taken_at, published, early,
                            infos, must_enter)
    warnings: list[str] = []
    covered: list[NetNamespace] = []
    dumps = []
    uncovered: list[NetNamespace] = []
    for entry, result in zip(entries, _dump_each(module, entries, flt, raw, early)):
        if isinstance(result, FileNotFoundError):
            continue             # the namespace ended since it was found: nothing to cover
        if result is None:
            uncovered.append(entry.namespace)   # the backend reads only the caller's namespace
            continue
        if isinstance(result, OSError):
            warnings.append(_not_entered(entry.namespace, result, must_enter))
            continue
        part, part_warnings = result
        dumps.append(part)
        warnings.extend(part_warnings)
        covered.append(entry.namespace)
    if uncovered and must_enter:     # a view of that namespace alone: an empty one would lie
        raise InvalidInput(f"the {name} backend reads only this network namespace, not "
                           f"{namespaces.label(uncovered[0])} (--backend netlink or "
                           "procfs reads it)")
    if uncovered:
        warnings.append(f"the {name} backend reads only this network namespace: "
                        f"{len(uncovered)} other(s) not covered (--backend netlink covers them)")
    unix = _join_unix_each(module, entries, covered, warnings, flt, unix_select, must_enter,
                           defer=lazy)
    if not scan_owners:
        stream: Iterator[Socket] = itertools.chain(itertools.chain.from_iterable(
            map(module.decode, dumps) if raw else dumps), unix.sockets())
        return SnapshotStream(stream, flt, taken_at, name, warnings, covered, frozenset())
    resolver = containers.ContainerResolver(listeners_in=_listeners_in)
    if raw:
        if lazy:
            scan = pending.result()
            index = fdscan.OwnerIndex(scan, infos.result() if infos else None)
        else:      # a small dump: scan the descriptors for its inodes only
            wanted = frozenset(i for part in dumps for i in module.inodes(part)) \
                | unix.wanted()
            scan = pending.result(wanted) if pending is not None else _scan_for(wanted, workers)
            index = fdscan.OwnerIndex(scan)
        missing = _missing_reason(scan)

        def shares(k: int, n: int, unix_rows=None) -> Iterator[Socket | str]:
            return itertools.chain(itertools.chain.from_iterable(
                module.decode(module.split(part, n)[k], index, missing, OwnerUnknown.KERNEL,
                              resolver) for part in dumps),
                unix.sockets(index, missing, resolver.container, (k, n)) if unix_rows is None
                else unix_rows(unix, index, missing, resolver.container, (k, n)))

        stream = shares(0, 1)
    else:
        sockets = [s for part in dumps for s in part]
        wanted = frozenset(s.inode for s in sockets if s.inode) | unix.wanted()
        scan = pending.result(wanted) if pending is not None else _scan_for(wanted, workers)
        index = fdscan.OwnerIndex(scan)
        stream = itertools.chain(join_owners(sockets, index, _missing_reason(scan)),
                                 unix.sockets(index, _missing_reason(scan), resolver.container))
    return SnapshotStream(stream, flt, taken_at, name, warnings, covered,
                          frozenset(scan.unreadable), resolver, published,
                          shares if raw else None,
                          sum(map(len, dumps)) + unix.size_bytes() if raw else 0)


def _open_beside(held: HeldSockets, pending: fdscan.BpfScan, module,
                 entries: list[namespaces.NamespaceEntry], flt: SocketFilter,
                 taken_at: datetime, published: bool, early=None,
                 infos: process.InfoReader | None = None,
                 must_enter: bool = False) -> SnapshotStream:
    """``open_snapshot`` of a full listing (or of one port) from the TCP and UDP sockets the
    BPF walk read, and dumps of the rest (UNIX sockets are dumped as without it); ``early``:
    the caller's own namespace dumped already (``collect``'s result), taken whole; ``infos``:
    the holders' details being read; ``must_enter``: as ``take_snapshot``'s."""
    warnings: list[str] = []
    covered: list[NetNamespace] = []
    dumps = []
    take: dict[int, tuple[frozenset[tuple[Proto, Family]], SocketFilter]] = {}
    for entry, result in zip(entries, _dump_beside(module, held, entries, flt, early)):
        if isinstance(result, FileNotFoundError):
            continue             # the namespace ended since it was found: nothing to cover
        if isinstance(result, OSError):
            warnings.append(_not_entered(entry.namespace, result, must_enter))
            continue
        parts, taken, part_flt, part_warnings = result
        dumps.extend(parts)
        take[entry.namespace.inode] = (taken, part_flt)
        warnings.extend(part_warnings)
        covered.append(entry.namespace)
    unix = _join_unix_each(module, entries, covered, warnings, flt, must_enter=must_enter,
                           defer=True)
    resolver = containers.ContainerResolver(listeners_in=_listeners_in)
    kernel = OwnerUnknown.KERNEL
    walked = held.inodes if any(beside for _part, beside in dumps) else frozenset()

    def rest(sockets: Iterator[Socket], beside: bool) -> Iterator[Socket]:
        """The dumped sockets, but those of a dump beside the walk that it read already."""
        if not beside:
            return sockets
        return (s for s in sockets if not s.inode or s.inode not in walked)

    scan = pending.result()
    index = fdscan.OwnerIndex(scan, infos.result() if infos else None)
    missing = _missing_reason(scan)

    def shares(k: int, n: int, unix_rows=None) -> Iterator[Socket | str]:
        return itertools.chain(
            held.decode(flt, take, index, missing, (k, n)),
            *(rest(module.decode(module.split(part, n)[k], index, missing, kernel, resolver),
                   beside) for part, beside in dumps),
            unix.sockets(index, missing, resolver.container, (k, n)) if unix_rows is None
            else unix_rows(unix, index, missing, resolver.container, (k, n)))

    return SnapshotStream(shares(0, 1), flt, taken_at, module.NAME, warnings, covered,
                          frozenset(scan.unreadable), resolver, published, shares,
                          len(held.records) + sum(len(part) for part, _beside in dumps)
                          + unix.size_bytes())


_BESIDE_STATES = frozenset({State.TIME_WAIT, State.FIN_WAIT2, State.NEW_SYN_RECV,
                            State.BOUND_INACTIVE})


def _beside_filter(flt: SocketFilter) -> SocketFilter | None:
    """``flt`` narrowed to the TCP states ``_dump_beside`` may dump in a namespace whose
    counts match the walk's (None when it asks for none of them)."""
    states = flt.states_for(Proto.TCP) & _BESIDE_STATES
    return replace(flt, protos=frozenset({Proto.TCP}), states=states) if states else None


def _dump_beside(module, held: HeldSockets, entries: list[namespaces.NamespaceEntry],
                 flt: SocketFilter, early=None) -> list:
    """Per namespace, read from inside it: ``([(raw dump, beside)], (proto, family) pairs to
    take from ``held``, the filter of its sockets, warnings)``, or the OSError that kept us
    out; a dump ``beside`` the walk may return sockets the walk read too (to be dropped).
    ``early``: the caller's own namespace dumped already (``collect``'s result), by ``flt``
    (taken whole) or by ``_beside_filter(flt)`` (taken when it holds all that is needed).

    Where a namespace's sockstat counts equal what the walk found there, a protocol's sockets
    come from ``held`` and only what no descriptor holds is dumped: TIME_WAIT when there are
    any, SYN queue requests when a listener has some, BOUND_INACTIVE when some socket there
    escaped the walk (a process it could not see), and the listeners the walk lacks when
    they are all it lacks. Elsewhere (connections not yet accepted, orphans, kernel sockets,
    a count that changed meanwhile) it is dumped whole.
    """
    own = namespaces.own_inode()
    foreign = foreign_filter(entries, flt)

    def work(entry: namespaces.NamespaceEntry):
        inode = entry.namespace.inode
        part_flt = flt if inode == own else foreign
        if early is not None and inode == own and early[0].flt == part_flt:
            return [(early[0], False)], frozenset(), part_flt, list(early[1])
        counts = sockstat.read()
        taken: set[tuple[Proto, Family]] = set()
        parts, warnings = [], []
        tcp_states = part_flt.states_for(Proto.TCP)
        if tcp_states:
            rest = tcp_states
            unheld = held.unheld(inode, counts, Proto.TCP)
            if unheld and unheld > 0 and State.LISTEN in tcp_states:
                # listeners of a process the walk cannot see (a sandboxed PID) are found by
                # a LISTEN dump, which walks only the listening hash (under 1 ms); a walk of
                # one port read the others' listeners only as a count: every port's
                # listeners are counted against it, that port's are kept
                listening = replace(part_flt, protos=frozenset({Proto.TCP}),
                                    states=frozenset({State.LISTEN}))
                part, part_warnings = module.collect(listening, inode, counts)
                if held.port is None:
                    unseen = sum(1 for i in module.inodes(part) if i not in held.inodes)
                else:
                    every, _ = module.collect(replace(listening, port_range=None), inode,
                                              counts)
                    unseen = len(module.inodes(every)) - held.listening(inode)
                if unseen == unheld:
                    parts.append((part, True))
                    warnings.extend(part_warnings)
                    unheld = 0
            if unheld == 0:
                taken.update((Proto.TCP, family) for family in part_flt.families)
                # a TIME_WAIT socket reports its substate: TIME_WAIT or FIN_WAIT2 (an orphan
                # in FIN_WAIT2 turns into one); a held FIN_WAIT2 socket the dump returns too
                # is dropped again by its inode
                rest = tcp_states & ({State.TIME_WAIT, State.FIN_WAIT2} if counts.tcp_tw
                                     else set())
                if inode in held.syn_queued:
                    rest |= tcp_states & {State.NEW_SYN_RECV}
                if not held.has_every_socket(inode, counts):
                    rest |= tcp_states & {State.BOUND_INACTIVE}
            if rest and early is not None and inode == own and unheld == 0 \
                    and rest <= early[0].flt.states:
                part, part_warnings = early       # its other states: held ones, or new
                parts.append((part, True))
                warnings.extend(part_warnings)
            elif rest:
                part, part_warnings = module.collect(
                    replace(part_flt, protos=frozenset({Proto.TCP}), states=frozenset(rest)),
                    inode, counts)
                parts.append((part, unheld == 0))    # TCP taken from the walk: drop its own
                warnings.extend(part_warnings)
        if part_flt.states_for(Proto.UDP):
            rest = frozenset(family for family in part_flt.families
                             if held.unheld(inode, counts, Proto.UDP, family) != 0)
            taken.update((Proto.UDP, family) for family in part_flt.families - rest)
            if rest:
                part, part_warnings = module.collect(
                    replace(part_flt, protos=frozenset({Proto.UDP}), families=rest),
                    inode, counts)
                parts.append((part, False))
                warnings.extend(part_warnings)
        return parts, frozenset(taken), part_flt, warnings

    return namespaces.run_in(entries, work)


def foreign_filter(entries: list[namespaces.NamespaceEntry], flt: SocketFilter
                   ) -> SocketFilter:
    """The filter to dump the namespaces other than the caller's with, when ``entries``
    (``namespaces.select``'s) are dumped by ``flt``: ``flt`` itself, or, for a listener view
    of several namespaces (``flt.states`` within ``LISTENER_STATES`` and holding
    BOUND_INACTIVE), ``flt`` without BOUND_INACTIVE. Pure: reads nothing.

    Finding BOUND_INACTIVE sockets walks the kernel's bind hash, which all namespaces share:
    45 ms per namespace on a host with 200,000 bound ports, against 0.3 ms for its
    listeners. A listener view of several namespaces asks for them in the caller's own only
    (a view of one namespace, --netns NAME, has them)."""
    if (len(entries) > 1 and flt.states is not None and flt.states <= LISTENER_STATES
            and State.BOUND_INACTIVE in flt.states):
        return dataclasses.replace(flt, states=flt.states - {State.BOUND_INACTIVE})
    return flt


def _listeners_in(pid: int, pids: list[int], proto: Proto, port: int) -> list[Socket]:
    """The ``proto`` listeners on ``port`` in the network namespace of process ``pid``, with
    their owners among ``pids`` (the listeners behind a container's published port). Empty
    when that namespace cannot be entered or read."""
    path = f"/proc/{pid}/ns/net"
    try:
        inode = os.stat(path).st_ino
    except OSError:
        return []                   # the container's process is gone
    entry = namespaces.NamespaceEntry(NetNamespace(inode), path, pid)
    flt = SocketFilter(protos=frozenset({proto}), states=LISTENER_STATES,
                       port_range=(port, port))
    try:
        netlink = backends.load("netlink")
        (result,) = namespaces.run_in([entry], lambda e: netlink.dump(flt, netns=inode))
    except BackendError:
        return []                   # no sock_diag (in there): nothing more to tell
    if isinstance(result, OSError):
        return []                   # not allowed in (no CAP_SYS_ADMIN), or it ended
    sockets = result[0]
    scan = fdscan.PendingScan(wanted=frozenset(s.inode for s in sockets), pids=pids).result()
    return list(join_owners(sockets, fdscan.OwnerIndex(scan), _missing_reason(scan)))


def _scan_for(wanted: frozenset[int], workers: int) -> fdscan.FdScan:
    """The /proc scan for ``wanted`` (the BPF scan, when usable, was started up front)."""
    return fdscan.PendingScan(wanted=wanted, workers=workers if wanted else 0,
                                 pids=None if wanted else []).result()


def _not_entered(ns: NetNamespace, error: OSError, must_enter: bool, part: str = "") -> str:
    """The warning line (``namespaces.not_entered``) for namespace ``ns``, left out because
    ``error`` (setns refused: no CAP_SYS_ADMIN, a seccomp filter such as systemd's
    ``RestrictNamespaces=``) kept the dump out of it; ``part``: which of its sockets, when not
    all.

    Raises:
        AccessDenied: with that line, when ``must_enter``; but for EINVAL: its file is no
            namespace any more (``ip netns del`` unmounts it before unlinking it), it was
            deleted since it was found and holds nothing.
    """
    message = namespaces.not_entered(ns, error, part)
    if must_enter and error.errno != errno.EINVAL:
        raise AccessDenied(message)
    return message


def _dump_each(module: Backend, entries: list[namespaces.NamespaceEntry], flt: SocketFilter,
               raw: bool, early=None) -> list:
    """Per namespace: ``(raw dump or socket list, warnings)``, the OSError that kept us out,
    or None for a namespace this backend cannot read at all; ``early``: the caller's own
    namespace's raw dump, taken already (used when it was taken by ``flt``).

    netlink dumps each namespace from inside it (``setns`` in a worker thread); the others
    as ``_read_each`` says.
    """
    own = namespaces.own_inode()
    if module.NAME == "netlink":
        work = module.collect if raw else module.dump
        foreign = foreign_filter(entries, flt)
        # Each namespace's socket counts (sockstat, read from inside it) tell which dumps
        # would come back empty: those are not asked for (see sockstat.py).
        return namespaces.run_in(entries, lambda e: early if early is not None and (
            e.namespace.inode == own and early[0].flt == flt) else work(
            flt if e.namespace.inode == own else foreign, netns=e.namespace.inode,
            counts=sockstat.read()))
    return _read_each(module, entries, functools.partial(module.dump, flt), None)


def _read_each(module: Backend, entries: list[namespaces.NamespaceEntry],
               read: Callable[..., object], absent: object) -> list:
    """Per namespace, by a backend without netlink: ``read(netns=INODE)`` (``module.dump``
    or ``module.dump_unix``, their other arguments bound), or ``absent`` where this backend
    cannot read that namespace at all (psutil sees only the caller's). procfs reads another
    namespace's ``/proc/net`` through ``/proc/PID/net`` of a process living there, else from
    inside it, as netlink does (``namespaces.run_in``: ``/proc/thread-self/net`` of the
    thread that entered it), so that a namespace setns refuses gives the ``OSError`` that
    kept it out, as netlink's dumps do, never a namespace silently left out."""
    own = namespaces.own_inode()
    results = [absent] * len(entries)
    enter = []
    for i, entry in enumerate(entries):
        inode = entry.namespace.inode
        if inode == own or entry.path == namespaces.OWN_PATH:   # no /proc: only our own
            results[i] = read(netns=inode or None)
        elif module.NAME == "procfs" and entry.pid is not None:
            results[i] = read(netns=inode, proc_root=f"/proc/{entry.pid}")
        elif module.NAME == "procfs":
            enter.append(i)
    entered = namespaces.run_in([entries[i] for i in enter],
                                lambda e: read(netns=e.namespace.inode))
    for i, result in zip(enter, entered):
        results[i] = result
    return results


def _join_unix_each(module: Backend, entries: list[namespaces.NamespaceEntry],
                    covered: list[NetNamespace], warnings: list[str], flt: SocketFilter,
                    select: unixsock.Selector | None = None, must_enter: bool = False,
                    defer: bool = False) -> unixsock.UnixJoin:
    """The join of the UNIX sockets of every covered namespace (those whose inet dump
    succeeded), by the backend's ``dump_unix``, that ``flt`` (and ``select``) select (none
    when ``flt`` has no ``Proto.UNIX``); a namespace whose UNIX sockets cannot be read is said
    in ``warnings`` (with ``must_enter``: raises ``AccessDenied``, see ``_not_entered``).
    With ``select``, netlink decodes only the sockets it takes and those their join needs
    (``decode_unix_related``); else with ``defer``, a share at a time, when it is joined
    (``linux_netlink.join_unix``: a large listing written by two processes decodes its halves
    beside each other). A kernel without ``unix_diag`` (CONFIG_UNIX_DIAG off) gets the
    ``/proc/net/unix`` backend's instead, and a warning; unless ``select`` is a socket file
    (found by its inode, which ``/proc/net/unix`` does not give: it would find nothing and
    call a live file stale)."""
    if Proto.UNIX not in flt.protos:
        return unixsock.UnixJoin([], flt, select)
    wanted = {ns.inode for ns in covered}
    entries = [e for e in entries if e.namespace.inode in wanted]
    if module.NAME == "netlink":
        try:
            results = namespaces.run_in(entries, lambda e: module.collect_unix(
                netns=e.namespace.inode, counts=sockstat.read()))
        except BackendUnavailable as exc:
            if select is not None and select.file_id is not None:
                raise BackendUnavailable(f"{exc}: socket files cannot be matched to sockets "
                                         "without unix_diag (CONFIG_UNIX_DIAG)") from None
            warnings.append(f"{exc}: UNIX sockets read from /proc/net/unix (no peers, no "
                            "socket file inodes)")
            return _join_unix_each(backends.load("procfs"), entries, covered, warnings, flt,
                                   select, must_enter)
    else:
        results = _read_each(module, entries, module.dump_unix,
                             OSError(f"the {module.NAME} backend reads only this namespace"))
    found = []
    said = []
    for entry, result in zip(entries, results):
        if isinstance(result, FileNotFoundError):
            continue             # the namespace ended since its inet dump
        if isinstance(result, OSError):
            warnings.append(_not_entered(entry.namespace, result, must_enter,
                                         "UNIX sockets"))
            continue
        found.append(result[0])
        said.append(result[1])
    if module.NAME != "netlink":
        join = unixsock.UnixJoin([s for part in found for s in part], flt, select)
    elif select is not None:
        join = unixsock.UnixJoin(module.decode_unix_related(found, select), flt, select)
    elif defer:
        join = module.join_unix(found, flt)
    else:
        join = unixsock.UnixJoin([s for dump in found for s in dump.decode()], flt)
    for part_warnings in said:      # read after receiving: a dump received ahead (the CLI's)
        warnings.extend(part_warnings)      # says only then that it was interrupted
    return join


def take_snapshot(flt: SocketFilter | None = None, *, backend: str | None = None,
                  owners: bool = True, workers: int | None = None,
                  netns: str | None = None, published: bool = False,
                  unix_select: unixsock.Selector | None = None,
                  must_enter: bool = False) -> Snapshot:
    """Take a snapshot: sockets and every process holding them.

    Args:
        flt: which sockets (default: every TCP and UDP socket of IPv4 and IPv6; with
            ``Proto.UNIX`` in its protocols, UNIX domain sockets too, each with its peers).
        backend: ``"netlink"`` (Linux default), ``"procfs"`` (``/proc/net/{tcp,tcp6,udp,udp6}``)
            or ``"psutil"`` (other systems; one owner per socket).
        owners: False skips the owner scan (sockets then have no owners and
            ``owner_unknown`` None). The scan uses BPF iterators when the caller may load them
            (``owners/bpf.py``), else ``/proc/*/fd``; ``PORTSCOPE_FDSCAN=proc`` forces the latter.
        workers: forked workers of a ``/proc/*/fd`` scan (default: one per extra CPU, up to
            3; 0 scans in-process).
        netns: which network namespaces: None or ``"host"`` (the caller's own), ``"all"``,
            a name (``ip netns``, Docker) or a PID; one fd scan serves them all, and each
            socket carries its namespace inode in ``netns``.
        published: also list ports that a container runtime publishes with NAT rules and no
            host socket, as ``State.PUBLISHED`` rows (when the caller's namespace is covered).
        unix_select: UNIX sockets only: keep those it takes (``unixsock.selector``, beside
            ``flt``); owners are then scanned for them and their peers only. Every UNIX
            socket is still dumped (peers are found among them all), but netlink decodes
            only the selected ones and those related to them.
        must_enter: a namespace of ``netns`` that cannot be entered (setns refused: no
            CAP_SYS_ADMIN, a seccomp filter such as systemd's ``RestrictNamespaces=``) raises
            ``AccessDenied`` naming it, instead of being left out with a warning: for a
            caller that acts on what it finds, or would answer "none" (``kill``). One that
            vanished since it was found is still left out (it holds nothing).
    Returns:
        a ``Snapshot``; ``complete`` is False when some processes' descriptors could not be read,
        and those sockets carry ``owner_unknown="permission"``. With owners, sockets carry
        their ``container``; a container runtime's forwarder listener (docker-proxy, conmon,
        dockerd, rootlessport) also ``published``: the container-side address and port, and
        the processes serving it inside (found when the container's namespace is covered,
        e.g. ``netns="all"``). Forwarder listeners come after the other sockets.
    Raises:
        ValueError: unknown backend; InvalidInput: unknown namespace name or PID; with
            ``must_enter``, a backend that reads only the caller's namespace (psutil) asked
            for another.
        BackendUnavailable: the backend cannot run here.
        BackendError: the kernel interface failed.
        AccessDenied: other namespaces were asked for without CAP_SYS_ADMIN; with
            ``must_enter``, one could not be entered.
    Privileges: sockets are visible to every user; owners only for processes whose
    ``/proc/PID/fd`` the caller may read (root, or the same user for dumpable processes), or
    all of them through BPF (CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON); entering other
    network namespaces needs CAP_SYS_ADMIN.
    """
    stream = open_snapshot(flt, backend=backend, owners=owners, workers=workers, netns=netns,
                           published=published, unix_select=unix_select,
                           must_enter=must_enter)
    return stream.to_snapshot(list(stream))


def _missing_reason(scan: fdscan.FdScan) -> OwnerUnknown:
    # a socket with an inode and no holder: hidden from us (descriptors refused, or processes
    # not even listed under hidepid), or closed since the dump
    if scan.unreadable or visibility.hidden_from_caller() is not None:
        return OwnerUnknown.PERMISSION
    return OwnerUnknown.VANISHED


def join_owners(sockets: list[Socket], owners: fdscan.OwnerIndex,
                missing: OwnerUnknown) -> Iterator[Socket]:
    """``sockets`` (as dumped: no owners) with their holders attached, lazily, in order.

    Args:
        sockets: ``Socket`` records from a backend's dump (no owners yet).
        owners: socket inode -> holders, through ``get(inode) -> tuple[Owner, ...]`` (empty
            when none): an ``fdscan.OwnerIndex`` (a descriptor scan) or anything with its
            ``get`` (``history.tracker.OwnerTracker``).
        missing: the ``owner_unknown`` of a socket whose inode has no holder in ``owners``
            (``PERMISSION`` or ``VANISHED``; see ``_missing_reason``).
    Returns:
        each socket with ``owners`` set (a tuple of ``Owner``), and ``owner_unknown`` None
        when it has holders, ``missing`` when it has none, ``KERNEL`` when its inode is 0
        (held by the kernel with no descriptor: TIME_WAIT, orphans). Pure: reads nothing.
    """
    new = tuple.__new__
    kernel = OwnerUnknown.KERNEL
    for s in sockets:
        held = owners.get(s.inode) if s.inode else ()
        yield new(Socket, (*s[:11], held, None if held else (missing if s.inode else kernel),
                           *s[13:]))


def sockets(flt: SocketFilter | None = None, **kwargs) -> tuple[Socket, ...]:
    """The sockets of ``take_snapshot(flt, **kwargs)``: a tuple of ``Socket``."""
    return take_snapshot(flt, **kwargs).sockets


def listeners(**kwargs) -> tuple[Socket, ...]:
    """Listening sockets with their owners: TCP LISTEN and BOUND_INACTIVE, unconnected UDP.

    Keyword arguments are those of ``take_snapshot`` except ``flt``. Source: a LISTEN-only
    kernel dump (skips the established hash), then an fd scan for those inodes only.
    """
    return take_snapshot(SocketFilter.listeners(), **kwargs).sockets


def owners_of(port: int, **kwargs) -> tuple[Owner, ...]:
    """Every process holding a socket whose **local** port is ``port`` (each pid once).

    Args:
        port: 1-65535.
    Returns:
        the owners, first holder of each PID in socket order.
    Raises:
        ValueError: port out of range.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, not {port!r}")
    seen: dict[int, Owner] = {}
    for s in take_snapshot(SocketFilter(port_range=(port, port)), **kwargs).sockets:
        for owner in s.owners:
            seen.setdefault(owner.pid, owner)
    return tuple(seen.values())


#: the states of a TCP socket that ``accept()`` may have returned: connected and still held
#: by a process (SYN_RECV: a TCP Fast Open child; not SYN_SENT: a connect()'s; not TIME_WAIT:
#: kernel-held)
ACCEPTED_STATES = frozenset({State.ESTABLISHED, State.SYN_RECV, State.FIN_WAIT1,
                             State.FIN_WAIT2, State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK})


class _Acceptors:
    """The TCP listeners of some sockets, and the rule telling which of them a connection was
    accepted from (``accepted_connections``)."""

    def __init__(self, sockets: Sequence[Socket]) -> None:
        self.sockets = sockets
        self.listening = [i for i, s in enumerate(sockets)
                          if s.proto is Proto.TCP and s.state is State.LISTEN]
        self.by_port: dict[tuple[int | None, int | None], list[int]] = {}
        for i in self.listening:
            self.by_port.setdefault((sockets[i].netns, sockets[i].local.port), []).append(i)

    def covering(self, netns: int | None, port: int, address: str) -> list[int]:
        """The listeners (indexes) whose port is ``port`` and whose address covers
        ``address`` in namespace ``netns``, in socket order."""
        sockets = self.sockets
        return [i for i in self.by_port.get((netns, port), ())
                if address_covers(sockets[i], address)]

    def pick(self, candidates: list[int], pids: set[int]) -> int:
        """The listener of ``candidates`` (several: an SO_REUSEPORT group) that accepted a
        connection held by ``pids``: the first sharing a holder PID, else the first."""
        if len(candidates) > 1:
            for i in candidates:
                if any(o.pid in pids for o in self.sockets[i].owners):
                    return i
        return candidates[0]


def accepted_connections(sockets: Sequence[Socket]) -> dict[int, list[Socket]]:
    """Pair each TCP listener with the connections ``accept()`` returned from it.

    An accepted socket is a TCP socket in ``ACCEPTED_STATES`` that a process still holds
    (a connection waiting in the accept queue, TIME_WAIT and other kernel-held leftovers have
    no inode and are not counted), with the listener's local port and an address the listener
    covers (a wildcard listener covers every address of its family; ``::`` without v6only
    covers IPv4 too). When several listeners cover it (an SO_REUSEPORT group), the one sharing
    a holder PID wins, else the first.

    Args:
        sockets: sockets of one snapshot and one network namespace.
    Returns:
        index of each listener in ``sockets`` -> its connected sockets (every listener has an
        entry, possibly empty).
    """
    acceptors = _Acceptors(sockets)
    result: dict[int, list[Socket]] = {i: [] for i in acceptors.listening}
    for s in sockets:
        if s.proto is not Proto.TCP or s.state not in ACCEPTED_STATES or not s.inode:
            continue
        candidates = acceptors.covering(s.netns, s.local.port, s.local.address)
        if candidates:
            result[acceptors.pick(candidates, {o.pid for o in s.owners})].append(s)
    return result


def listeners_accepted(netns: str | None = None, *, backend: str | None = None
                       ) -> tuple[Snapshot, dict[int, int]]:
    """The listeners with their owners, and how many connections each TCP listener accepted:
    the count of ``accepted_connections`` over every socket of its port (what ``portscope
    PORT`` shows as Accepted), without building the connections.

    Args:
        netns, backend: as ``take_snapshot``.
    Returns:
        ``(take_snapshot(SocketFilter(states=LISTENER_STATES)), counts)``: ``counts`` maps the
        index of each TCP listener in the snapshot's sockets to its count (listeners of a
        namespace that could not be read again are left out; a listener opened during the
        call may count 0).
    Raises:
        as ``take_snapshot``.
    Source: beside the snapshot, in a thread, per namespace: a LISTEN dump for the listeners'
    ports, then one netlink dump of the held TCP sockets in ``ACCEPTED_STATES`` on those ports,
    read for their local endpoint only (``held_connections``); the holders of a connection that
    several listeners cover (an SO_REUSEPORT group) are then looked for among those listeners'
    holders only (``/proc/PID/fd``). Another backend than netlink takes a snapshot of the
    connections after the listeners'.
    """
    flt = SocketFilter(states=LISTENER_STATES)
    name = backend or backends.default_backend()
    if name != "netlink":
        snapshot = take_snapshot(flt, backend=name, netns=netns)
        connections = take_snapshot(SocketFilter(protos=frozenset({Proto.TCP}),
                                                 states=ACCEPTED_STATES),
                                    backend=name, netns=netns).sockets
        return snapshot, {i: len(conns) for i, conns in
                          accepted_connections([*snapshot.sockets, *connections]).items()}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1, thread_name_prefix="portscope-accepted") as pool:
        held = pool.submit(_held_connections, netns)      # its errors re-raised by result()
        snapshot = take_snapshot(flt, netns=netns)
        return snapshot, _count_held(snapshot, held.result())


def _held_connections(netns: str | None) -> dict[int, dict[tuple[int, str], list[int]]]:
    """Per namespace inode: ``held_connections`` on the ports of its TCP listeners."""
    netlink = backends.load("netlink")
    listening = SocketFilter(protos=frozenset({Proto.TCP}), states=frozenset({State.LISTEN}))

    def work(entry: namespaces.NamespaceEntry) -> dict[tuple[int, str], list[int]]:
        ports = {s.local.port for s in netlink.dump(listening)[0]}
        return netlink.held_connections(ports, ACCEPTED_STATES)[0]

    entries = namespaces.select(netns)
    return {entry.namespace.inode: result for entry, result in
            zip(entries, namespaces.run_in(entries, work)) if not isinstance(result, OSError)}


def _count_held(snapshot: Snapshot, held: dict[int, dict[tuple[int, str], list[int]]]
                ) -> dict[int, int]:
    """``listeners_accepted``'s counts from the held connections of each namespace."""
    acceptors = _Acceptors(snapshot.sockets)
    counts = {i: 0 for i in acceptors.listening if snapshot.sockets[i].netns in held}
    shared: list[tuple[list[int], list[int]]] = []     # (candidates, inodes) to tell apart
    for netns, endpoints in held.items():
        for (port, address), inodes in endpoints.items():
            candidates = acceptors.covering(netns, port, address)
            if len(candidates) == 1:
                counts[candidates[0]] += len(inodes)
            elif candidates:
                shared.append((candidates, inodes))
    if shared:
        pids = sorted({o.pid for candidates, _ in shared for i in candidates
                       for o in snapshot.sockets[i].owners})
        scan = fdscan.PendingScan(wanted=frozenset(i for _, inodes in shared for i in inodes),
                                  pids=pids).result()
        for candidates, inodes in shared:
            for inode in inodes:
                counts[acceptors.pick(candidates,
                                      {pid for pid, _fd in scan.owners(inode)})] += 1
    return counts


def at_address(sockets: Sequence[Socket], address: str | None) -> list[Socket]:
    """The sockets of one port that ``ADDR:PORT`` names: those bound to ``address`` or to a
    wildcard covering it (``filters.address_covers``), and the connections accepted from those
    listeners, whatever address they carry (a ``[::]`` listener's IPv4 clients arrive on
    ``::ffff:a.b.c.d``), so that a listener has the same connections however it is asked for.

    Args:
        sockets: sockets of one port (one snapshot); ``address`` None keeps them all.
    Returns:
        the selected sockets, in their order.
    """
    if address is None:
        return list(sockets)
    keep = {id(s) for s in sockets if address_covers(s, address)}
    for i, conns in accepted_connections(sockets).items():
        if id(sockets[i]) in keep:
            keep.update(id(c) for c in conns)
    return [s for s in sockets if id(s) in keep]

