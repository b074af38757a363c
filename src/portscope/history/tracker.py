"""The owners of the tracked sockets, kept between polls instead of walked again each time.

A full owner scan walks every descriptor of every process (``owners/fdscan.py``: 0.1-0.3 s
at 110,000 socket descriptors); the change stream needs it for sockets that are new and for
processes that changed, not every second. ``OwnerTracker`` keeps who holds each tracked socket
(inode -> ``(pid, fd)`` pairs, and each holder's ``ProcessInfo``) and updates it:

- a socket new since the last poll: the descriptors of the processes a tracepoint named for
  it (the caller of ``listen()``) are read, then those of the processes started or exec'd
  since the last full scan (the connector names them), of those that held a new socket
  before, and the parents of those that hold it; one that none of them holds is looked
  for by a scan of every process for the new inodes only (BPF or ``/proc``);
- the process events connector (``owners/procevents.py``, root): an exiting holder is
  dropped without reading anything; the descriptors of a holder that exec'd (CLOEXEC ones
  are gone, its executable changed), of a child forked by a holder (it inherited them) and
  of that parent are read again;
- a full owner scan every ``RESCAN_S`` seconds, and whenever the connector lost reports.
  It bounds what the connector cannot tell: a descriptor passed to another process over a
  UNIX socket (SCM_RIGHTS), or closed or dup'd by a process that neither forked, exec'd nor
  exited, is seen within ``RESCAN_S``.

Without the connector (not root, or not in the host's PID namespace) every poll is a full
scan of the descriptors the caller can read: owner changes are then seen at the next poll,
at the old cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..owners import fdscan
from ..owners.process import process_info
from ..owners.procevents import ProcEvents
from ..types import Owner, ProcessInfo

#: seconds between full owner scans while the connector reports process changes (one costs
#: about 0.25 s of CPU at 10,000 listeners and 210,000 socket descriptors: 0.2 % of a core)
RESCAN_S = 120.0


class OwnerTracker:
    """Socket inode -> its holders, kept up to date by ``update``.

    Args:
        events: subscribe to the process events connector (when it can be used; else every
            ``update`` scans fully, see ``notes``).
        rescan_s: seconds between full scans while the connector is used.
    Attributes:
        notes: lines for people about what is not available and why.
        full_scans: how many full scans ran (for tests and benchmarks).
    """

    def __init__(self, *, events: bool = True, rescan_s: float = RESCAN_S) -> None:
        self._inodes: set[int] = set()
        self._tracked: set[int] | None = None   # the inodes the holders are of
        self._holders: dict[int, tuple[tuple[int, int], ...]] = {}   # inode -> (pid, fd)s
        self._owners: dict[int, tuple[Owner, ...]] = {}
        self._held_by: dict[int, set[int]] = {}                     # pid -> inodes
        self._infos: dict[int, ProcessInfo | None] = {}
        self._young: dict[int, int] = {}        # started or exec'd since the full scan: parent
        self._creators: set[int] = set()        # live processes that held a new socket
        self._rescan_s = rescan_s
        self._scanned_at = float("-inf")
        self._lost = 0
        self._changed: set[int] = set()
        self.full_scans = 0
        self.notes: list[str] = []
        self._events: ProcEvents | None = None
        if events:
            try:
                self._events = ProcEvents()
            except OSError as exc:
                self.notes.append(
                    f"process events are not used ({exc.strerror or exc}): the owners of "
                    f"every socket are read again at each poll")

    @property
    def uses_events(self) -> bool:
        """True when the process events connector tells which processes changed."""
        return self._events is not None

    def get(self, inode: int, default: tuple[Owner, ...] = ()) -> tuple[Owner, ...]:
        """The holders of ``inode`` as last updated (``Owner`` records, PID order);
        ``default`` when none is known."""
        return self._owners.get(inode, default)

    def close(self) -> None:
        """Leave the connector."""
        if self._events is not None:
            self._events.close()
            self._events = None

    def update(self, inodes: Iterable[int] | None, pids: Iterable[int] = ()) -> set[int]:
        """Bring the holders of ``inodes`` (the tracked sockets now; others are forgotten) up
        to date.

        Args:
            inodes: socket inodes of the current poll (0 is ignored); None: the same as at
                the last call.
            pids: processes a kernel report named for new sockets (a tracepoint's
                ``listen()`` caller): read first, before looking at every process.
        Returns:
            the inodes whose holders changed, or that came or went (empty: no change).
        Source: ``/proc/PID/fd`` (or the BPF descriptor walk) and ``/proc/PID/*`` for the
        holders' details.
        """
        if inodes is None:
            inodes = self._inodes
        else:
            inodes = self._inodes = set(inodes)
            inodes.discard(0)
        now = time.monotonic()
        dirty, exited = self._drain()
        if (self._events is None or self._events.lost != self._lost
                or now - self._scanned_at >= self._rescan_s):
            if self._events is not None:
                self._lost = self._events.lost
            return self._full(inodes, now)
        self._changed = set()
        for inode in self._holders.keys() - inodes if inodes is not self._tracked else ():
            self._set(inode, ())
            del self._holders[inode], self._owners[inode]
            self._changed.add(inode)
        for pid in exited:
            self._infos.pop(pid, None)
            for inode in self._held_by.pop(pid, ()):
                self._set(inode, tuple(h for h in self._holders[inode] if h[0] != pid))
        new = inodes - self._holders.keys() if inodes is not self._tracked else set()
        self._tracked = inodes
        for inode in new:
            self._holders[inode], self._owners[inode] = (), ()
            self._changed.add(inode)
        dirty.update(p for p in pids if p not in exited)
        if dirty:
            scan = fdscan.PendingScan(frozenset(inodes), pids=sorted(dirty)).result()
            for pid in dirty:
                self._infos.pop(pid, None)
            held = scan.inodes()
            for inode in set().union(*(self._held_by.get(pid, ()) for pid in dirty)) | held:
                pairs = [h for h in self._holders[inode] if h[0] not in dirty]
                pairs += scan.owners(inode)
                self._set(inode, tuple(sorted(pairs)))
        if new:
            self._find_new(new, dirty)
        return self._changed

    def _find_new(self, new: set[int], scanned: set[int]) -> None:
        """Find the holders of the sockets ``new`` since the last poll (``scanned``: the
        processes whose descriptors were just read). The processes started or exec'd since
        the last full scan are read (a server just started; the children a new socket's
        creator forked), then the parents those holders were forked from; sockets none of
        them holds are looked for in every process."""
        young = self._young
        named = {pid for inode in new for pid, _fd in self._holders[inode]}
        pids = (set(young) | self._creators | {young[pid] for pid in named if pid in young}
                ) - scanned
        while pids:
            scan = fdscan.PendingScan(frozenset(new), pids=sorted(pids)).result()
            scanned |= pids
            holders = set()
            for inode in scan.inodes():
                pairs = set(self._holders[inode]) | set(scan.owners(inode))
                self._set(inode, tuple(sorted(pairs)))
                holders.update(pid for pid, _fd in pairs)
            pids = {young[pid] for pid in holders if pid in young} - scanned
        lost = {inode for inode in new if not self._holders[inode]}
        if lost:                # held by a process nobody named: look at every process
            scan = fdscan.start_scan(frozenset(lost), fdscan.default_workers()).result()
            for inode in lost:
                self._set(inode, tuple(sorted(scan.owners(inode))))
        self._creators.update(pid for inode in new for pid, _fd in self._holders[inode])

    def _drain(self) -> tuple[set[int], set[int]]:
        """From the connector's reports: the processes whose descriptors must be read again
        (holders that exec'd, children of holders and their parents), and those that
        exited."""
        dirty: set[int] = set()
        exited: set[int] = set()
        if self._events is None:
            return dirty, exited
        young = self._young
        for event in self._events.drain():
            if event.kind == "exit":
                exited.add(event.pid)
                dirty.discard(event.pid)
                young.pop(event.pid, None)
                self._creators.discard(event.pid)
            elif event.kind == "exec":
                young.setdefault(event.pid, event.pid)
                if event.pid in self._held_by:
                    dirty.add(event.pid)
            else:
                young[event.pid] = event.parent
                exited.discard(event.pid)       # a reused PID
                if event.parent in self._held_by or event.parent in dirty:
                    dirty.update((event.pid, event.parent))
        return dirty, exited

    def _full(self, inodes: set[int], now: float) -> set[int]:
        scan = fdscan.start_scan(frozenset(inodes), fdscan.default_workers()).result()
        before = self._owners
        self._holders, self._owners, self._held_by, self._infos = {}, {}, {}, {}
        self._young = {}
        for inode in inodes:
            self._set(inode, tuple(sorted(scan.owners(inode))))
        self._scanned_at = now
        self._tracked = inodes
        self.full_scans += 1
        return {inode for inode in before.keys() | self._owners.keys()
                if before.get(inode) != self._owners.get(inode)}

    def _set(self, inode: int, pairs: tuple[tuple[int, int], ...]) -> None:
        """Record ``pairs`` as the holders of ``inode`` (and their ``Owner`` records)."""
        old = self._holders.get(inode, ())
        for pid, _fd in old:
            held = self._held_by.get(pid)
            if held is not None:
                held.discard(inode)
                if not held:
                    del self._held_by[pid]
        owners = []
        for pid, fd in pairs:
            info = self._infos[pid] if pid in self._infos else self._info(pid)
            if info is not None:
                owners.append(Owner(pid, fd, info))
                self._held_by.setdefault(pid, set()).add(inode)
        self._holders[inode] = tuple((o.pid, o.fd) for o in owners)
        if self._owners.get(inode) != (owners := tuple(owners)):
            self._changed.add(inode)
        self._owners[inode] = owners

    def _info(self, pid: int) -> ProcessInfo | None:
        info = self._infos[pid] = process_info(pid)
        return info
