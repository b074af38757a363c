"""take_snapshot(): sockets from a backend joined with their owners from one fd scan."""

from __future__ import annotations

import os
import socket as _socket
from collections.abc import Sequence
from datetime import datetime, timezone

from . import backends, ownership
from .filters import SocketFilter, address_covers
from .types import (LISTENER_STATES, NetNamespace, Owner, OwnerUnknown, ProcessInfo, Proto,
                    Snapshot, Socket, State)

PRIVILEGE_HINT = "run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"


def take_snapshot(flt: SocketFilter | None = None, *, backend: str | None = None,
                  owners: bool = True, workers: int | None = None) -> Snapshot:
    """Take a snapshot of the caller's network namespace: sockets and every process holding them.

    Args:
        flt: which sockets (default: every TCP and UDP socket of IPv4 and IPv6).
        backend: ``"netlink"`` (Linux default), ``"procfs"`` (``/proc/net/{tcp,tcp6,udp,udp6}``)
            or ``"psutil"`` (other systems; one owner per socket).
        owners: False skips the ``/proc/*/fd`` scan (sockets then have no owners and
            ``owner_unknown`` None).
        workers: forked fd-scan workers (default: one per CPU, up to 2).
    Returns:
        a ``Snapshot``; ``complete`` is False when some processes' descriptors could not be read,
        and those sockets carry ``owner_unknown="permission"``.
    Raises:
        ValueError: unknown backend.
        BackendUnavailable: the backend cannot run here.
        BackendError: the kernel interface failed.
    Privileges: sockets are visible to every user; owners only for processes whose
    ``/proc/PID/fd`` the caller may read (root, or the same user for dumpable processes).
    """
    flt = flt or SocketFilter()
    taken_at = datetime.now(timezone.utc)
    name = backend or backends.default_backend()
    module = backends.load(name)
    netns = ownership.current_netns()
    scan_owners = owners and not module.PROVIDES_OWNERS
    if workers is None:
        workers = ownership.default_workers()
    # A listener or single-port dump is cheap (under 1 ms to a few tens of ms): dump first and
    # scan only for its inodes. A full dump is not: scan in forked workers meanwhile.
    cheap = flt.single_port is not None or (flt.states is not None
                                              and flt.states <= LISTENER_STATES)
    pending = None
    if scan_owners and not cheap:
        pending = ownership.PendingScan(workers=workers)
    sockets, warnings = module.dump(flt, netns=netns)
    unreadable = 0
    if scan_owners:
        if pending is None:
            wanted = frozenset(s.inode for s in sockets if s.inode)
            pending = ownership.PendingScan(wanted=wanted, workers=workers if wanted else 0,
                                            pids=None if wanted else [])
        scan = pending.result()
        unreadable = len(set(scan.unreadable))
        sockets = _join(sockets, scan)
    if flt.needs_owners:
        sockets = [s for s in sockets if flt.match_owners(s)]
    missing = sum(1 for s in sockets if s.owner_unknown is OwnerUnknown.PERMISSION)
    if missing:
        who = "even as root (a sandbox or LSM denies it)" if os.geteuid() == 0 \
            else f"({PRIVILEGE_HINT})"
        warnings.append(f"{missing} socket(s) have no visible owner: {unreadable} process(es) "
                        f"could not be read {who}")
    return Snapshot(sockets=tuple(sockets), taken_at=taken_at, hostname=_socket.gethostname(),
                    backend=name, complete=not missing, warnings=tuple(warnings),
                    namespaces=(NetNamespace(netns),) if netns is not None else (),
                    unreadable_pids=unreadable)


def _join(sockets: list[Socket], scan: ownership.FdScan) -> list[Socket]:
    """Attach every holder to each socket, or the reason none is visible."""
    holders = scan.holders
    infos: dict[int, ProcessInfo | None] = {}
    for inode in {s.inode for s in sockets} & holders.keys():
        for pid, _fd in holders[inode]:
            if pid not in infos:
                infos[pid] = ownership.process_info(pid)
    no_owner = OwnerUnknown.PERMISSION if scan.unreadable else OwnerUnknown.VANISHED
    kernel = OwnerUnknown.KERNEL
    new = tuple.__new__
    get = holders.get
    out = []
    append = out.append
    for s in sockets:
        held = get(s.inode) if s.inode else None
        found: tuple[Owner, ...] = ()
        if held:
            found = tuple(new(Owner, (pid, fd, infos[pid])) for pid, fd in held
                          if infos[pid] is not None)
        if found:
            append(new(Socket, (*s[:11], found, None, s[13])))
        else:
            append(new(Socket, (*s[:11], (), kernel if not s.inode else no_owner, s[13])))
    return out


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


def accepted_connections(sockets: Sequence[Socket]) -> dict[int, list[Socket]]:
    """Pair each TCP listener with the connections ``accept()`` returned from it.

    An accepted socket has the listener's local port and an address the listener covers
    (a wildcard listener covers every address of its family; ``::`` without v6only covers
    IPv4 too). When several listeners cover it (an SO_REUSEPORT group), the one sharing a
    holder PID wins, else the first.

    Args:
        sockets: sockets of one snapshot and one network namespace.
    Returns:
        index of each listener in ``sockets`` -> its connected sockets (every listener has an
        entry, possibly empty).
    """
    listening = [i for i, s in enumerate(sockets)
                 if s.proto is Proto.TCP and s.state is State.LISTEN]
    result: dict[int, list[Socket]] = {i: [] for i in listening}
    by_port: dict[tuple[int | None, int | None], list[int]] = {}
    for i in listening:
        by_port.setdefault((sockets[i].netns, sockets[i].local.port), []).append(i)
    for s in sockets:
        if s.proto is not Proto.TCP or s.remote is None:
            continue
        candidates = [i for i in by_port.get((s.netns, s.local.port), ())
                      if address_covers(sockets[i], s.local.address)]
        if not candidates:
            continue
        pids = {o.pid for o in s.owners}
        shared = [i for i in candidates if pids & {o.pid for o in sockets[i].owners}]
        result[(shared or candidates)[0]].append(s)
    return result
