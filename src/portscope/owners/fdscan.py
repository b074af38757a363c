"""Who holds which socket: one pass over every process's descriptors.

The scan maps every socket inode to every ``(pid, fd)`` that holds it, so a listener shared by
a parent and its forked children lists all of them. ``start_scan`` picks how:

* BPF iterators (``owners/bpf.py``; root on Linux with BTF): the kernel walks the descriptor
  tables and returns only the sockets, in a thread beside the caller's socket dump; about 13x
  less time than the ``/proc`` scan at 237,000 descriptors;
* otherwise ``/proc/*/fd``: one readlink per descriptor of every process (about 2-3 us each, not
  per socket), split over forked workers (Python threads would serialise on the GIL) that run
  while the parent dumps the sockets; each worker writes its result to a memfd that the parent
  reads when the worker has exited.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections import Counter

from ..types import Owner, ProcessInfo
from . import bpf
from .process import PROC, process_info

_SOCKET_PREFIX = "socket:["
_HEADER = struct.Struct("=QQQQQ")  # counts of pairs, unreadable PIDs, chunks; vanished, scanned
FD_MASK = 0xFFFFFFFF                # an owner is packed as pid << 32 | fd


class FdScan:
    """Result of one ``/proc/*/fd`` pass: which processes hold which socket inodes.

    Attributes:
        unreadable: PIDs whose descriptors this caller may not read (EACCES).
        vanished: how many processes exited during the scan.
        scanned: how many processes were read.

    The index maps each inode to its owner packed as ``pid << 32 | fd``, or to -1 when
    several descriptors hold it (those are listed apart): about 100 bytes per socket
    descriptor, and one dict lookup per socket when joining.
    """

    __slots__ = ("_index", "_shared", "_count", "unreadable", "vanished", "scanned")

    def __init__(self, pairs: array, unreadable: list[int], vanished: int,
                 scanned: int, suspects: set[int] | None = None) -> None:
        """``pairs``: flat ``(inode, pid << 32 | fd)`` pairs, as ``_scan`` returns them;
        ``suspects``: when known, the only inodes that may be held more than once (the BPF
        walk marks them), so that the others need no counting."""
        inodes, owners = pairs[0::2], pairs[1::2]
        self._count = len(inodes)
        self._index = dict(zip(inodes, owners))
        self._shared: dict[int, list[tuple[int, int]]] = {}
        if len(self._index) != self._count:
            for inode, found in repeated(inodes, suspects).items():
                # PID order, whatever the worker split; once each (threads sharing a table)
                self._shared[inode] = sorted({(owners[i] >> 32, owners[i] & FD_MASK)
                                              for i in found})
                self._index[inode] = -1
        self.unreadable = unreadable
        self.vanished = vanished
        self.scanned = scanned

    def __len__(self) -> int:
        """How many socket descriptors were found."""
        return self._count

    def __contains__(self, inode: int) -> bool:
        return inode in self._index

    def owners(self, inode: int) -> list[tuple[int, int]]:
        """Every ``(pid, fd)`` holding socket ``inode``, in scan order (empty if none)."""
        packed = self._index.get(inode)
        if packed is None:
            return []
        if packed < 0:
            return list(self._shared[inode])
        return [(packed >> 32, packed & FD_MASK)]

    def inodes(self) -> set[int]:
        """Every socket inode some process holds."""
        return set(self._index)


class OwnerIndex:
    """Socket inode -> its owners (``Owner`` tuples), from an ``FdScan``.

    ``ProcessInfo`` is read from ``/proc`` once per PID, and only for PIDs whose sockets are
    asked for, unless ``infos`` (PID -> ``ProcessInfo``, None for an exited process) holds
    them already (``process.InfoReader``). ``get`` runs once per socket of a snapshot: keep it
    lean.

    Attributes:
        packed: socket inode -> its one holder packed as ``pid << 32 | fd`` (``FD_MASK``), or
            -1 when several descriptors hold it (``get`` lists them); read-only. A writer of a
            large listing reads it instead of ``get``: no tuples are built.
    """

    def __init__(self, scan: FdScan, infos: dict[int, ProcessInfo | None] | None = None
                 ) -> None:
        self._scan = scan
        self._index = self.packed = scan._index
        self._infos: dict[int, ProcessInfo | None] = infos or {}

    def _info(self, pid: int) -> ProcessInfo | None:
        info = self._infos[pid] = process_info(pid)
        return info

    def info(self, pid: int) -> ProcessInfo | None:
        """The ``ProcessInfo`` of ``pid`` (read from ``/proc/PID`` once), None when it exited."""
        infos = self._infos
        return infos[pid] if pid in infos else self._info(pid)


    def get(self, inode: int, default: tuple[Owner, ...] = ()) -> tuple[Owner, ...]:
        """The owners of ``inode``; ``default`` when none (processes that exited since the scan
        are left out)."""
        packed = self._index.get(inode)
        if packed is None:
            return default
        infos = self._infos
        if packed < 0:
            found = []
            for pid, fd in self._scan.owners(inode):
                info = infos[pid] if pid in infos else self._info(pid)
                if info is not None:
                    found.append(tuple.__new__(Owner, (pid, fd, info)))
            return tuple(found) or default
        pid = packed >> 32
        info = infos[pid] if pid in infos else self._info(pid)
        if info is None:
            return default
        return (tuple.__new__(Owner, (pid, packed & FD_MASK, info)),)


def repeated(inodes: array, suspects: set[int] | None = None) -> dict[int, list[int]]:
    """Every inode that ``inodes`` holds more than once -> its indexes there, in order.
    ``suspects``: the only inodes that may repeat, when known: a few are looked for alone
    (about 20 ms less than counting every inode at 200,000)."""
    if suspects is not None and len(suspects) <= 32:
        found = {inode: _positions(inodes, inode) for inode in suspects}
        return {inode: at for inode, at in found.items() if len(at) > 1}
    shared = [inode for inode, times in Counter(inodes).items() if times > 1]
    if len(shared) <= 32:           # a few: let array.index find them, in C
        return {inode: _positions(inodes, inode) for inode in shared}
    positions: dict[int, list[int]] = {inode: [] for inode in shared}
    for i, inode in enumerate(inodes):
        if inode in positions:
            positions[inode].append(i)
    return positions


def list_pids() -> list[int]:
    """Every PID visible in ``/proc`` (with ``hidepid``, only the caller's)."""
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def _positions(values: array, value: int) -> list[int]:
    """Every index of ``value`` in ``values``."""
    found = []
    try:
        while True:
            found.append(values.index(value, found[-1] + 1 if found else 0))
    except ValueError:
        return found


def _scan(pids, wanted: frozenset[int] | None) -> tuple[array, array, int, int]:
    """Scan ``pids``; return flat ``(inode, pid << 32 | fd)`` pairs, unreadable PIDs, vanished
    count and scanned count."""
    pairs = array("Q")
    push = pairs.extend
    unreadable = array("Q")
    vanished = scanned = 0
    readlink, listdir, open_, close = os.readlink, os.listdir, os.open, os.close
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    prefix = _SOCKET_PREFIX
    for pid in pids:
        try:
            dir_fd = open_(f"{PROC}/{pid}/fd", flags)
        except (FileNotFoundError, ProcessLookupError):
            vanished += 1          # exited between listdir(/proc) and now
            continue
        except PermissionError:
            unreadable.append(pid)
            continue
        scanned += 1
        owner = pid << 32
        try:
            for name in listdir(dir_fd):
                try:
                    link = readlink(name, dir_fd=dir_fd)
                except (FileNotFoundError, ProcessLookupError):
                    continue       # the descriptor was closed after listdir
                except PermissionError:
                    unreadable.append(pid)
                    break
                if link[:8] == prefix:
                    inode = int(link[8:-1])
                    if wanted is None or inode in wanted:
                        push((inode, owner | int(name)))
        except (FileNotFoundError, ProcessLookupError):
            vanished += 1          # exited while its descriptors were listed
        finally:
            close(dir_fd)
    return pairs, unreadable, vanished, scanned


class _Tally:
    """What one scanner (a worker or the caller) found, over the chunks it scanned; it
    travels from a worker to the caller as bytes."""

    def __init__(self) -> None:
        self.pairs = array("Q")
        self.unreadable = array("Q")
        self.done = array("Q")
        self.vanished = 0
        self.scanned = 0

    def scan(self, chunk_number: int, pids: list[int], wanted: frozenset[int] | None) -> None:
        pairs, unreadable, vanished, scanned = _scan(pids, wanted)
        self.pairs.extend(pairs)
        self.unreadable.extend(unreadable)
        self.vanished += vanished
        self.scanned += scanned
        self.done.append(chunk_number)

    def to_bytes(self) -> bytes:
        return (_HEADER.pack(len(self.pairs), len(self.unreadable), len(self.done),
                             self.vanished, self.scanned)
                + self.pairs.tobytes() + self.unreadable.tobytes() + self.done.tobytes())

    def add_bytes(self, data: bytes) -> None:
        """Add a worker's tally (from ``to_bytes``)."""
        start = _HEADER.size
        *counts, vanished, scanned = _HEADER.unpack_from(data)
        for target, count in zip((self.pairs, self.unreadable, self.done), counts):
            target.frombytes(data[start:start + 8 * count])
            start += 8 * count
        self.vanished += vanished
        self.scanned += scanned


class PendingScan:
    """An fd scan under way; ``result()`` finishes it and returns the ``FdScan``.

    The PIDs are cut into up to ``CHUNKS`` interleaved chunks whose numbers are written, one
    byte each, into a pipe. ``workers`` forked processes, started by the constructor, and the
    caller (once it calls ``result()``, typically after its socket dump) take chunks from the
    pipe until it is empty: whoever is free scans the next chunk, so the caller's time spent
    dumping is never lost. Each worker hands its tally over in a memfd; a chunk nobody
    reported (a worker that died) is rescanned by the caller. Without fork or memfd (not
    Linux), the caller scans everything.
    """

    CHUNKS = 64

    def __init__(self, wanted: frozenset[int] | None = None, workers: int = 0,
                 pids: list[int] | None = None) -> None:
        self._wanted = wanted
        pids = list_pids() if pids is None else pids
        count = max(1, min(self.CHUNKS, len(pids)))
        self._chunks = [pids[k::count] for k in range(count)]
        self._children: list[tuple[int, int]] = []
        self._tokens = -1
        if workers > 0 and hasattr(os, "memfd_create") and hasattr(os, "fork"):
            read_end, write_end = os.pipe()
            os.write(write_end, bytes(range(count)))
            os.close(write_end)             # the pipe reads as empty once every chunk is taken
            self._tokens = read_end
            for _ in range(workers):
                self._children.append(self._fork())

    def _take(self):
        """Yield chunk numbers taken from the pipe until none is left."""
        while True:
            token = os.read(self._tokens, 1)
            if not token:
                return
            yield token[0]

    def _fork(self) -> tuple[int, int]:
        memfd = os.memfd_create("portscope-fdscan", os.MFD_CLOEXEC)
        child = os.fork()
        if child == 0:                      # the worker: scan, write, leave without cleanup
            status = 1
            try:
                tally = _Tally()
                for k in self._take():
                    tally.scan(k, self._chunks[k], self._wanted)
                view = memoryview(tally.to_bytes())
                while view:
                    view = view[os.write(memfd, view):]
                status = 0
            finally:
                os._exit(status)
        return child, memfd

    def result(self) -> FdScan:
        """Scan the chunks left, wait for the workers and return the merged scan."""
        tally = _Tally()
        for k in self._take() if self._tokens >= 0 else range(len(self._chunks)):
            tally.scan(k, self._chunks[k], self._wanted)
        for child, memfd in self._children:
            try:
                _, status = os.waitpid(child, 0)
                if status == 0:
                    tally.add_bytes(os.pread(memfd, os.fstat(memfd).st_size, 0))
            finally:
                os.close(memfd)
        if self._tokens >= 0:
            os.close(self._tokens)
        done = set(tally.done)
        for k, pids in enumerate(self._chunks):
            if k not in done:               # its worker died: scan it here
                tally.scan(k, pids, self._wanted)
        return FdScan(tally.pairs, list(tally.unreadable), tally.vanished, tally.scanned)


class BpfScan:
    """An fd scan by BPF iterators (``bpf.IterScan``), started by the constructor; the
    same ``result()`` as ``PendingScan``.

    PIDs that ``/proc`` lists but the iterators did not visit (hidden from them, or exited)
    are scanned through ``/proc``, so they count as unreadable or vanished as there. When the
    programs cannot run, ``result()`` does the whole ``/proc`` scan instead.
    """

    def __init__(self, wanted: frozenset[int] | None = None, workers: int = 0,
                 port: int | None = None, records: bool = True) -> None:
        """``port``: read socket records of that local port only (``bpf.IterScan``); the
        owners found are then those of the sockets on it (and of some others). ``records``:
        False reads descriptors only (no ``held_sockets``)."""
        self._wanted = wanted
        self._workers = workers
        self._iter = bpf.take_prefetched(port, records) or bpf.IterScan(port, records)

    def netns_by_pid(self) -> dict[int, int] | None:
        """PID -> network namespace inode of every visible process (``namespaces.discover``
        takes it); None when the iterators cannot run."""
        try:
            return self._iter.tasks().netns
        except OSError:
            return None

    def held_sockets(self, port: int | None = None):
        """The TCP and UDP sockets the descriptor walk read (``sockets.HeldSockets``): all, or
        with ``port`` those on that local port; None when it read descriptors only (an older
        kernel), not those sockets, or could not run."""
        try:
            return self._iter.sockets(port)
        except OSError:
            return None

    def result(self, wanted: frozenset[int] | None = None) -> FdScan:
        """Wait for the iterators and return the scan (of the ``wanted`` inodes only, when
        given here or to the constructor)."""
        if wanted is None:
            wanted = self._wanted
        try:
            tasks = self._iter.tasks()
            pairs = self._iter.result()
        except OSError:
            return PendingScan(wanted, self._workers).result()
        pids = tasks.pids
        hidden = [pid for pid in pids if pid not in tasks.visible]
        rest, unreadable, vanished, scanned = _scan(hidden, wanted)
        # the walk marks the sockets that several descriptors may hold; one that a hidden
        # process holds may be held by a walked one too
        suspects = self._iter.marked()
        if suspects is not None:
            suspects.update(rest[0::2])
        pairs = _only(pairs, wanted)
        pairs.extend(rest)
        return FdScan(pairs, list(unreadable), vanished, scanned + len(pids) - len(hidden),
                      suspects)


def start_scan(wanted: frozenset[int] | None = None, workers: int = 0,
               pids: list[int] | None = None) -> BpfScan | PendingScan:
    """Start an fd scan of every process (or of ``pids``) for the ``wanted`` socket inodes (all
    when None): by BPF iterators when they may run here, else over ``/proc`` with ``workers``
    forked workers. Call ``result()`` on what it returns."""
    if pids is None and bpf.usable():
        return BpfScan(wanted, workers)
    return PendingScan(wanted, workers, pids)


def _only(pairs: array, wanted: frozenset[int] | None) -> array:
    """The ``(inode, owner)`` pairs of ``pairs`` whose inode is in ``wanted`` (all if None)."""
    if wanted is None:
        return pairs
    inodes, owners = pairs[0::2], pairs[1::2]
    kept = array("Q")
    if len(wanted) <= 32:               # a port's few sockets: let array.index find them
        for inode in wanted:
            for i in _positions(inodes, inode):
                kept.extend((inode, owners[i]))
    else:
        for inode, owner in zip(inodes, owners):
            if inode in wanted:
                kept.extend((inode, owner))
    return kept


def default_workers() -> int:
    """Forked scan workers to use beside the caller: one per extra CPU, up to 3; none on a
    single CPU or off Linux."""
    if not sys.platform.startswith("linux"):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(3, (cpus or 1) - 1))
