"""Where the change stream's events come from, and when they are timed.

- Polling (always): a listener snapshot every ``interval_s`` (default 1 s), diffed with the
  previous one; an event then happened "between the previous poll and this one".
- The tracepoint ``sock:inet_sock_set_state`` (root, tracefs; kernel >= 4.16): read through a
  private tracefs instance (``instances/portscope-PID``, filtered in the kernel to TCP
  sockets entering or leaving LISTEN), it times TCP listeners opening and closing exactly and
  names the PID that called ``listen()`` or ``close()``. It wakes the poller at once, so the
  snapshot right after it finds the socket's inode, namespace and owners; a listener that
  opened and closed before that snapshot is known from the tracepoint alone (its namespace
  and inode unknown). Without the tracepoint such a listener is not seen at all.
- The sock_diag destroy multicast groups (``ss -E``; any user, the caller's network namespace
  only): time the close of TCP listeners and bound UDP sockets exactly.

``Feed`` runs them together and yields ``Batch``es of ``diff.Event``, each event saying which
source timed it.
"""

from __future__ import annotations

import ctypes
import os
import queue
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import NamedTuple

from .. import backends, namespaces, snapshot, sockstat
from ..owners import process as owner_process
from ..backends import _netlink_io as nlio
from ..backends import _netlink_wire as wire
from ..filters import SocketFilter
from ..snapshot import take_snapshot
from ..types import LISTENER_STATES, Family, OwnerUnknown, ProcessInfo, Proto, State
from .diff import (CONNECTED_STATES, Event, EventKind, Item, Key, Source, View, diff_views,
                   view)
from .tracker import OwnerTracker

TRACEFS_PLACES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
INSTANCE_PREFIX = "portscope-"
#: a hint not matched by this many snapshots is dropped (a socket of a namespace not covered)
HINT_SNAPSHOTS = 3
#: seconds between dumps of BOUND_INACTIVE sockets (a walk of the kernel's whole bind hash)
BOUND_SCAN_S = 30.0


class Hint(NamedTuple):
    """A kernel report that a socket opened (``opened``) or closed, exactly timed.

    ``pid`` (and ``process``, resolved when the report was read) is the process the kernel
    named: the caller of ``listen()`` or ``close()``; None for destroy reports."""

    source: Source
    at: datetime
    opened: bool
    proto: Proto
    family: Family
    address: str
    port: int
    pid: int | None = None
    process: ProcessInfo | None = None


@dataclass
class Batch:
    """The events of one poll: ``events`` in order; ``seen_at`` when its scan started (aware
    UTC): the recorder was looking from then on."""

    events: list[Event]
    seen_at: datetime


# ------------------------------------------------------------------------------ tracepoint

_TRACE_LINE = re.compile(rb"^\s*(.*)-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): inet_sock_set_state: "
                         rb"(.*)$")
_TCP_LISTEN = "TCP_LISTEN"


def tracefs_root() -> str | None:
    """Where tracefs is mounted (from ``/proc/self/mounts``); as root, mounted at
    ``/sys/kernel/tracing`` when it is nowhere. None when unavailable."""
    try:
        with open("/proc/self/mounts", "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == b"tracefs":
                    return fields[1].decode()
    except OSError:
        return None
    if os.geteuid() != 0 or not os.path.isdir(TRACEFS_PLACES[0]):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", TRACEFS_PLACES[0].encode(), b"tracefs", 0, None) != 0:
        return None
    return TRACEFS_PLACES[0]


def _tgid(tid: int) -> int:
    """The process (thread group) of thread ``tid`` (``/proc/TID/status``)."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


def parse_trace_line(line: bytes, clock_offset_s: float) -> Hint | None:
    """A ``Hint`` from one line of the tracepoint's ``trace_pipe`` output (None for lines
    about other transitions). ``clock_offset_s`` turns the trace clock (``mono``) into Unix
    time."""
    match = _TRACE_LINE.match(line)
    if match is None:
        return None
    fields = dict(part.split("=", 1) for part in match.group(4).decode("ascii", "replace")
                  .split() if "=" in part)
    old, new = fields.get("oldstate"), fields.get("newstate")
    if _TCP_LISTEN not in (old, new) or fields.get("protocol") != "IPPROTO_TCP":
        return None
    v6 = fields.get("family") == "AF_INET6"
    at = datetime.fromtimestamp(float(match.group(3)) + clock_offset_s, timezone.utc)
    return Hint(Source.TRACEPOINT, at, new == _TCP_LISTEN, Proto.TCP,
                Family.IPV6 if v6 else Family.IPV4,
                fields.get("saddrv6" if v6 else "saddr", ""), int(fields.get("sport", 0)),
                int(match.group(2)))


class Tracepoint:
    """The ``sock:inet_sock_set_state`` tracepoint in a private tracefs instance.

    Args:
        notify: called (in a reader thread) with each ``Hint``.
        port_range: only sockets whose local port lies in it (a kernel-side filter).
    Raises (from ``start``):
        OSError: tracefs or the tracepoint is unavailable, or the caller may not use it.
    """

    def __init__(self, notify: Callable[[Hint], None],
                 port_range: tuple[int, int] | None = None) -> None:
        self._notify = notify
        self._port_range = port_range
        self._instance: str | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        root = tracefs_root()
        if root is None:
            raise OSError("tracefs is not mounted and could not be mounted")
        instances = os.path.join(root, "instances")
        _remove_stale_instances(instances)
        path = os.path.join(instances, f"{INSTANCE_PREFIX}{os.getpid()}")
        os.mkdir(path)
        self._instance = path
        try:
            event = os.path.join(path, "events", "sock", "inet_sock_set_state")
            _write(os.path.join(path, "trace_clock"), "mono")
            condition = "protocol == 6 && (newstate == 10 || oldstate == 10)"
            if self._port_range is not None:
                low, high = self._port_range
                condition += f" && sport >= {low} && sport <= {high}"
            _write(os.path.join(event, "filter"), condition)
            _write(os.path.join(event, "enable"), "1")
            fd = os.open(os.path.join(path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            self.close()
            raise
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True,
                                        name="portscope-tracepoint")
        self._thread.start()

    def _read(self, fd: int) -> None:
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([fd, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                offset = time.time() - time.monotonic()
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    hint = parse_trace_line(line, offset)
                    if hint is None:
                        continue
                    pid = _tgid(hint.pid)
                    self._notify(hint._replace(pid=pid, process=owner_process.process_info(pid)))
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop reading and remove the instance."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._instance is not None:
            try:
                os.rmdir(self._instance)
            except OSError:
                pass            # busy: removed by the next start (_remove_stale_instances)
            self._instance = None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _remove_stale_instances(instances: str) -> None:
    """Remove instances left behind by portscope processes that died (kill -9)."""
    try:
        names = os.listdir(instances)
    except OSError:
        return
    for name in names:
        if name.startswith(INSTANCE_PREFIX) and name[len(INSTANCE_PREFIX):].isdigit():
            if not os.path.exists(f"/proc/{name[len(INSTANCE_PREFIX):]}"):
                try:
                    os.rmdir(os.path.join(instances, name))
                except OSError:
                    pass


# ------------------------------------------------------------------------ destroy multicast

_GROUPS = (wire.SKNLGRP_INET_TCP_DESTROY, wire.SKNLGRP_INET_UDP_DESTROY,
           wire.SKNLGRP_INET6_TCP_DESTROY, wire.SKNLGRP_INET6_UDP_DESTROY)


def parse_destroy(buf: bytes, at: datetime) -> list[Hint]:
    """Hints from one datagram of the destroy groups: sockets with no peer (listeners and
    bound UDP sockets); destroyed connections are skipped."""
    hints = []
    offset = 0
    size = wire.NLMSG_INET_DIAG_MSG.size
    while offset + size <= len(buf):
        (length, kind, _flags, _seq, _pid, family, _state, _timer, _retrans, sport, dport,
         src, _dst, _if, _cookie, _expires, _rq, _wq, _uid, _inode) = \
            wire.NLMSG_INET_DIAG_MSG.unpack_from(buf, offset)
        if length < size:
            break
        if kind == wire.SOCK_DIAG_BY_FAMILY and dport == 0:
            at_proto = wire.find_attr(buf, offset + size, offset + length,
                                      wire.INET_DIAG_PROTOCOL)
            proto = buf[at_proto] if at_proto >= 0 else 0
            if proto in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
                v6 = family == socket.AF_INET6
                address = socket.inet_ntop(family, src if v6 else src[:4])
                hints.append(Hint(Source.SOCK_DESTROY, at, False,
                                  Proto.TCP if proto == socket.IPPROTO_TCP else Proto.UDP,
                                  Family.IPV6 if v6 else Family.IPV4, address,
                                  wire.BSWAP16[sport]))
        offset += (length + 3) & ~3
    return hints


class DestroyEvents:
    """The sock_diag destroy multicast groups of the caller's network namespace.

    Args:
        notify: called (in a reader thread) with each ``Hint``.
    Raises (from ``start``):
        OSError: the groups cannot be joined.
    """

    def __init__(self, notify: Callable[[Hint], None]) -> None:
        self._notify = notify
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.lost = 0

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             wire.NETLINK_INET_DIAG)
        try:
            sock.bind((0, sum(1 << (g - 1) for g in _GROUPS)))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._thread = threading.Thread(target=self._read, args=(sock,), daemon=True,
                                        name="portscope-destroy")
        self._thread.start()

    def _read(self, sock: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([sock, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                try:
                    buf = sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:         # ENOBUFS: the kernel dropped reports; polling covers
                    self.lost += 1
                    continue
                for hint in parse_destroy(buf, datetime.now(timezone.utc)):
                    self._notify(hint)
        finally:
            sock.close()

    def close(self) -> None:
        """Stop reading."""
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)


# ------------------------------------------------------------------------------------ feed

class Feed:
    """The change stream of this host: polling, plus the exact sources when available.

    A poll of the listeners (netlink backend, without ``connections`` or UNIX sockets) reads
    the socket set only: LISTEN-only and bound-UDP dumps (a LISTEN dump walks the kernel's
    listening hash, not the established one), kept undecoded when they came back byte for
    byte as the last time; the owners come from an ``OwnerTracker`` (``tracker.py``), which
    reads descriptors only for new sockets and for processes that forked, exec'd or exited,
    plus a full owner scan every ``tracker.RESCAN_S``. A poll in which nothing changed costs
    the dumps and a comparison. Other polls take a whole snapshot (``take_snapshot``).

    Args:
        flt: which sockets (``list``'s filters: protocols, families, ports, owners); the states
            are set here: listeners, and with ``connections`` connected sockets too.
        connections: also track connections, aggregated (``diff.view``).
        netns: ``take_snapshot``'s ``netns`` (None: the caller's own, "all", a name, a PID).
        interval_s: seconds between polls.
        exact: use the tracepoint and the destroy groups (when they can be used).
        backend: ``take_snapshot``'s backend.
    Attributes:
        sources: the sources in use (``Source`` values).
        notes: lines for people about what is not available and why.
    """

    def __init__(self, flt: SocketFilter | None = None, *, connections: bool = False,
                 netns: str | None = None, interval_s: float = 1.0, exact: bool = True,
                 backend: str | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        states = LISTENER_STATES | (CONNECTED_STATES if connections else frozenset())
        self._flt = replace(flt or SocketFilter(), states=states)
        self._connections = connections
        self._netns = netns
        self._backend = backend
        self.interval_s = interval_s
        has_bound = Proto.TCP in self._flt.protos and State.BOUND_INACTIVE in states
        self._bound_flt = True if has_bound else None
        self._fast_flt = replace(self._flt, states=states - {State.BOUND_INACTIVE})
        self._tracker: OwnerTracker | None = None
        if (not connections and Proto.UNIX not in self._flt.protos
                and (backend or backends.default_backend()) == "netlink"):
            self._tracker = OwnerTracker()
        self._diag: dict[int, socket.socket] = {}   # netns inode -> its sock_diag socket
        # (netns inode, with BOUND_INACTIVE) -> the dump's replies, and per reply its sockets
        # and their view (None: to be made again, the owners changed)
        self._dumps: dict[tuple[int, bool], tuple[list, list[list]]] = {}
        self._views: dict[bool, dict[Key, Item]] = {}     # the last view of each kind
        self._merged: tuple | None = None      # a quiet poll's view: (polled, bound, merged)
        self._tracked_bound: dict[Key, Item] | None = None
        self._bound: dict[Key, Item] = {}
        self._bound_scan_at = float("-inf")
        self.bound_after: datetime | None = None
        self._hints: queue.SimpleQueue[Hint] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._readers: list = []
        self.sources = [Source.POLL]
        self.notes: list[str] = [] if self._tracker is None else list(self._tracker.notes)
        if exact:
            self._start_exact()

    def _notify(self, hint: Hint) -> None:
        self._hints.put(hint)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass                    # already awake

    def _start_exact(self) -> None:
        if Proto.TCP in self._flt.protos:
            tracepoint = Tracepoint(self._notify, self._flt.port_range)
            try:
                tracepoint.start()
            except OSError as exc:
                tracepoint.close()
                why = "needs root" if os.geteuid() else (exc.strerror or str(exc))
                self.notes.append(f"the tracepoint sock:inet_sock_set_state is not used "
                                  f"({why}): TCP opens are timed by polling, and a listener "
                                  f"that lives less than a poll interval is not seen")
            else:
                self._readers.append(tracepoint)
                self.sources.append(Source.TRACEPOINT)
        destroy = DestroyEvents(self._notify)
        try:
            destroy.start()
        except OSError as exc:
            destroy.close()
            self.notes.append(f"sock_diag destroy reports are not used ({exc.strerror or exc}):"
                              f" closes are timed by polling")
        else:
            self._readers.append(destroy)
            self.sources.append(Source.SOCK_DESTROY)

    def stop(self) -> None:
        """Make ``run`` return after the batch in progress (safe in a signal handler)."""
        self._stopping = True
        self._wake()

    def close(self) -> None:
        """Stop the readers and remove the tracefs instance."""
        for reader in self._readers:
            reader.close()
        self._readers = []
        if self._tracker is not None:
            self._tracker.close()
        for sock in self._diag.values():
            sock.close()
        self._diag = {}

    def snapshot_view(self, pids: Iterable[int] = (),
                      ports: set[tuple[Proto, int]] | None = None
                      ) -> tuple[dict[Key, Item], datetime, datetime]:
        """One poll: the current view, when its scan started and when it ended (a change
        it shows happened after the previous poll started and before this one ended). When
        nothing changed since the last poll, the view returned is the same object.

        ``pids``: processes a kernel report named as holders of new sockets (their
        descriptors are read first). ``ports``: ``(proto, port)`` pairs the kernel reported
        a change on: only their sockets are dumped again, the rest of the last view is
        kept (a poll for a tracepoint or destroy report; the listener-poll path only).

        BOUND_INACTIVE
        sockets are dumped every ``BOUND_SCAN_S`` only (finding them walks the kernel's bind
        hash: 200 ms at 200,000 bound sockets, against 1 ms for the listeners); in between
        the last ones found are carried over, and ``bound_after`` is when they were found.

        Raises:
            BackendError, AccessDenied, InvalidInput: as ``take_snapshot``.
        """
        flt = self._flt
        now = time.monotonic()
        full = self._bound_flt is None or now - self._bound_scan_at >= BOUND_SCAN_S
        chosen = flt if full else self._fast_flt
        if self._tracker is not None:
            found = self._poll_ports(chosen, ports, pids) if ports and not full else None
            current, taken_at = found or self._poll(chosen, full, pids)
            merged = self._merged
            if not full and merged is not None and merged[0] is current \
                    and merged[1] is self._bound:
                return merged[2], taken_at, datetime.now(timezone.utc)
            polled = current
        else:
            snap = take_snapshot(chosen, netns=self._netns, backend=self._backend)
            current, taken_at = view(snap.sockets, connections=self._connections), \
                snap.taken_at
        if self._bound_flt is not None:
            if full:
                self.bound_after, self._bound_scan_at = taken_at, now
                self._bound = {k: i for k, i in current.items()
                               if i.state is State.BOUND_INACTIVE}
            else:
                for key in self._bound.keys() & current.keys():
                    del self._bound[key]        # it listens now: the dump has it
                current = {**self._bound, **current}
        if self._tracker is not None and not full:
            self._merged = polled, self._bound, current
        return current, taken_at, datetime.now(timezone.utc)

    def _poll(self, flt: SocketFilter, full: bool, pids: Iterable[int]
              ) -> tuple[dict[Key, Item], datetime]:
        """The listener view from the dumps ``flt`` asks for (``full``: with BOUND_INACTIVE)
        and the tracker's owners; the previous view of the same kind itself when no dump
        and no owner changed. Source: NETLINK_SOCK_DIAG in each namespace (one socket kept
        per namespace), ``OwnerTracker``."""
        taken_at = datetime.now(timezone.utc)
        module = backends.load("netlink")
        dumps: dict[tuple[int, bool], tuple[list, list[list]]] = {}
        same = full in self._views

        def dump(part_flt: SocketFilter, netns: int, sock: socket.socket):
            old = self._dumps.get((netns, full))
            return module.collect(part_flt, netns, sockstat.read(), sock,
                                  old[0] if old else None)[0]

        for netns, raw in self._dump_each(flt, dump):
            key = (netns, full)
            replies, parts = self._dumps.get(key, ([], []))
            if len(replies) != len(raw.replies):
                same = False
            dumps[key] = raw.replies, []
            for index, reply in enumerate(raw.replies):     # one per request: TCP, UDP4, 6
                if index < len(replies) and replies[index] == reply:
                    dumps[key][1].append(parts[index])
                else:
                    dumps[key][1].append([list(module.decode(module.RawDump(
                        raw.flt, netns, [reply]))), None])
                    same = False
        if dumps.keys() != {k for k in self._dumps if k[1] is full}:
            same = False
        self._dumps = {**{k: v for k, v in self._dumps.items() if k[1] is not full}, **dumps}
        for inode in self._diag.keys() - {k[0] for k, _ in self._dumps.items()}:
            self._diag.pop(inode).close()
        inodes = None
        if not same or self._tracked_bound is not self._bound:
            # the carried BOUND_INACTIVE sockets stay tracked between their dumps
            inodes = {s.inode for _replies, parts in dumps.values() for part in parts
                      for s in part[0]} | {k.inode for k in self._bound}
            self._tracked_bound = self._bound
        changed = self._tracker.update(inodes, pids)
        if changed:
            self._views.clear()         # the views of replies with those sockets: anew
            for _replies, parts in self._dumps.values():
                for part in parts:
                    if part[1] is not None and any(s.inode in changed for s in part[0]):
                        part[1] = None
        elif same:
            return self._views[full], taken_at
        current: dict[Key, Item] = {}
        for _replies, parts in dumps.values():
            for part in parts:          # the view of a reply that changed, or of all
                if part[1] is None:
                    part[1] = self._tracked_view(part[0])
                current.update(part[1])
        self._views[full] = current
        return current, taken_at

    def _tracked_view(self, sockets: list) -> dict[Key, Item]:
        """The view of ``sockets`` with the tracker's owners, kept to the owner filters."""
        joined = snapshot.join_owners(sockets, self._tracker, OwnerUnknown.VANISHED)
        if self._flt.needs_owners:
            joined = filter(self._flt.match_owners, joined)
        return view(joined)

    def _dump_each(self, flt: SocketFilter, dump: Callable) -> list[tuple[int, object]]:
        """``dump(filter, netns inode, sock_diag socket)`` run inside each namespace polled
        (others than the caller's get ``snapshot.foreign_filter``'s filter): ``(netns
        inode, its result)`` for those that could be entered (one that is gone or refused
        is left uncovered, as by ``take_snapshot``)."""
        entries = namespaces.select(self._netns)
        namespaces.require_entry(entries)
        foreign = snapshot.foreign_filter(entries, flt)
        own = namespaces.own_inode()

        def work(entry: namespaces.NamespaceEntry):
            netns = entry.namespace.inode
            return dump(flt if netns == own else foreign, netns, self._diag_socket(netns))

        return [(entry.namespace.inode, result) for entry, result
                in zip(entries, namespaces.run_in(entries, work))
                if not isinstance(result, OSError)]

    def _diag_socket(self, netns: int) -> socket.socket:
        """The sock_diag socket kept for namespace ``netns`` (opened in it: call from
        inside)."""
        sock = self._diag.get(netns)
        if sock is None:
            sock = self._diag[netns] = nlio.open_diag_socket()
        return sock

    def _poll_ports(self, flt: SocketFilter, ports: set[tuple[Proto, int]],
                    pids: Iterable[int]) -> tuple[dict[Key, Item], datetime] | None:
        """The last listener view with the sockets of ``ports`` dumped again (port-filtered
        dumps: the kernel skips the other ports' sockets) and their owners resolved; None
        when there is no view yet, or when owners of other sockets changed meanwhile (a
        whole poll is needed). Source: NETLINK_SOCK_DIAG, ``OwnerTracker``."""
        base = self._views.get(False)
        if base is None:
            return None
        taken_at = datetime.now(timezone.utc)
        module = backends.load("netlink")

        def dump(part_flt: SocketFilter, netns: int, sock: socket.socket) -> list:
            return [module.collect(replace(part_flt, protos=frozenset({proto}),
                                           port_range=(port, port)), netns, None, sock)[0]
                    for proto, port in ports if proto in part_flt.protos]

        sockets = [s for _netns, raws in self._dump_each(flt, dump) for raw in raws
                   for s in module.decode(raw)]
        self._dumps.clear()     # the next whole poll decodes anew: it cannot be "the same"
        kept = {k: i for k, i in base.items() if (k.proto, k.port) not in ports}
        fresh = {s.inode for s in sockets}
        changed = self._tracker.update(
            {k.inode for k in kept} | fresh | {k.inode for k in self._bound}, pids)
        if changed - fresh:
            self._views.clear()     # other sockets' owners changed too: a whole poll
            return None
        current = {**kept, **self._tracked_view(sockets)}
        self._views = {False: current}
        return current, taken_at

    def run(self, initial: View | None = None, initial_seen_at: datetime | None = None
            ) -> Iterator[Batch]:
        """Poll until ``stop()``; yield a ``Batch`` per poll (possibly without events).

        Args:
            initial: what was known before (the recorder's stored view): the first batch then
                holds the changes since, timed ``startup`` between ``initial_seen_at`` and
                the first poll. None: the first poll is the baseline and yields no events.
        """
        cur, taken_at, done_at = self.snapshot_view()
        if initial is not None:
            yield Batch(diff_views(initial, cur, after=initial_seen_at, at=done_at,
                                   source=Source.STARTUP), taken_at)
        prev, prev_at = cur, taken_at
        known = _endpoints(prev)
        pending: list[tuple[Hint, int]] = []
        next_poll = time.monotonic() + self.interval_s
        while not self._stopping:
            timeout = max(0.0, next_poll - time.monotonic())
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                os.read(self._wake_r, 4096)
            early = self._drain(known, pending)
            if self._stopping:
                return
            regular = time.monotonic() >= next_poll
            if not early and not regular:
                continue
            if regular:
                next_poll = time.monotonic() + self.interval_s
            bound_after = self.bound_after
            cur, taken_at, done_at = self.snapshot_view(
                {h.pid for h, _ in pending if h.opened and h.pid},
                None if regular else {(h.proto, h.port) for h, _ in pending})
            events = [] if cur is prev else _bound_timing(
                diff_views(prev, cur, after=prev_at, at=done_at), bound_after)
            now_known = known if cur is prev else _endpoints(cur)
            # reports that came in while the snapshot was taken may be about what it found
            self._drain(known | now_known, pending)
            events, pending = _apply_hints(events, pending, known | now_known, now_known)
            prev, prev_at, known = cur, taken_at, now_known
            yield Batch(events, taken_at)

    def _drain(self, known: set[tuple], pending: list[tuple[Hint, int]]) -> bool:
        """Move the reports that came in to ``pending``; True when one of them matters."""
        early = False
        while True:
            try:
                hint = self._hints.get_nowait()
            except queue.Empty:
                return early
            if self._relevant(hint, known, pending):
                pending.append((hint, 0))
                early = True

    def _relevant(self, hint: Hint, known: set[tuple], pending: list[tuple[Hint, int]]) -> bool:
        """Whether a hint is worth a snapshot now: an open the filter wants, or the close of
        a socket the last view had or of an open still pending (the destroy groups report
        every socket of the namespace, most of them unrelated)."""
        flt = self._flt
        if hint.proto not in flt.protos or hint.family not in flt.families:
            return False
        if flt.port_range is not None and not flt.port_range[0] <= hint.port <= \
                flt.port_range[1]:
            return False
        if hint.opened:
            return True
        return (hint.proto, hint.address, hint.port, hint.family) in known or any(
            h.opened and h.port == hint.port and h.address == hint.address
            for h, _ in pending)


def _bound_timing(events: list[Event], bound_after: datetime | None) -> list[Event]:
    """BOUND_INACTIVE sockets found or missed by a bind-hash dump: they changed since the
    previous such dump (``bound_after``), not since the previous poll."""
    if bound_after is None:
        return events
    return [replace(e, after=min(e.after, bound_after))
            if e.after is not None and e.kind in (EventKind.OPENED, EventKind.CLOSED)
            and e.item.state is State.BOUND_INACTIVE else e for e in events]


def _endpoints(current: View) -> set[tuple]:
    return {(k.proto, k.address, k.port, i.family) for k, i in current.items()
            if not k.is_connections}


def _hint_matches(hint: Hint, key: Key, item: Item) -> bool:
    return (not key.is_connections and hint.proto is key.proto and hint.port == key.port
            and hint.address == key.address and hint.family is item.family)


def _apply_hints(events: list[Event], pending: list[tuple[Hint, int]], seen: set[tuple],
                 current: set[tuple]) -> tuple[list[Event], list[tuple[Hint, int]]]:
    """Time ``events`` with the exact hints that match them; turn an opened-and-closed pair of
    tracepoint hints about an endpoint no snapshot saw (``seen``: the endpoints of the last two
    views) into events of their own; hints about seen endpoints that timed nothing are
    dropped (a second source reporting the same close, or a report that came after the
    snapshot had already found the socket), except closes of what the last view
    (``current``) still has: that close comes in the next snapshot. Returns the events and the hints kept for the
    next snapshot (with how many snapshots they have waited)."""
    used: set[int] = set()
    timed = []
    for event in events:
        wants_open = event.kind is EventKind.OPENED or (
            event.kind is EventKind.STATE_CHANGED and event.item.state is State.LISTEN)
        wants_close = event.kind is EventKind.CLOSED
        for index, (hint, _age) in enumerate(pending):
            if index in used or not (wants_open and hint.opened or wants_close
                                     and not hint.opened):
                continue
            if (event.after is None or hint.at >= event.after) and \
                    _hint_matches(hint, event.key, event.item):
                used.add(index)
                item = event.item
                if not item.owners and hint.process is not None:   # closed during the scan
                    item = item._replace(owners=(hint.process,))
                event = replace(event, item=item, at=hint.at, after=None, source=hint.source,
                                pid=hint.pid)
                break
        timed.append(event)
    # a listener opened and closed between two snapshots: the tracepoint's word alone
    for index, (hint, _age) in enumerate(pending):
        endpoint = (hint.proto, hint.address, hint.port, hint.family)
        if endpoint in seen and (hint.opened or endpoint not in current):
            used.add(index)
        if index in used or not hint.opened:
            continue
        for other, (close, _) in enumerate(pending):
            if (other not in used and not close.opened and close.proto is hint.proto
                    and close.port == hint.port and close.address == hint.address
                    and close.family is hint.family and close.at >= hint.at):
                used.update((index, other))
                key = Key(None, hint.proto, hint.address, hint.port, 0)
                owners = (hint.process,) if hint.process is not None else ()
                uid = hint.process.uid if hint.process is not None else -1
                item = Item(hint.family, State.LISTEN, owners, uid if uid is not None else -1)
                timed.append(Event(EventKind.OPENED, key, item, hint.at, None, hint.source,
                                   pid=hint.pid))
                timed.append(Event(EventKind.CLOSED, key, item, close.at, None, close.source,
                                   pid=close.pid))
                break
    # the others wait for the next snapshots (the socket may not be hashed yet), then go
    kept = [(hint, age + 1) for index, (hint, age) in enumerate(pending)
            if index not in used and age + 1 < HINT_SNAPSHOTS]
    timed.sort(key=lambda e: e.at)
    return timed, kept

