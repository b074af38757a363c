"""``plan_kill``: every socket on a port, every process holding one, each with a pidfd opened
right after the scan, its safety refusal and its respawner."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import namespaces
from ..errors import AccessDenied, InvalidInput
from ..filters import SocketFilter
from ..owners.process import read_stat, started_at
from ..snapshot import at_address, take_snapshot
from ..types import (KERNEL_HELD_STATES, OwnerUnknown, ProcessInfo, Proto, Snapshot, Socket,
                     State)
from .safety import safety_refusal
from .supervisors import SYSTEM_UNIT_PATH, Respawner, find_respawner

_TCP_BOUND = frozenset({State.LISTEN, State.BOUND_INACTIVE})


@dataclass(slots=True)
class Target:
    """One process to signal.

    Attributes:
        pid: the process id.
        process: its details at scan time.
        start_ticks: start time in clock ticks since boot (``/proc/PID/stat`` field 22).
        sockets: the planned sockets it holds.
        pidfd: a pidfd opened right after the scan (None: gone, or no pidfd support).
        refusal: why it must not be signalled at all (PID 1, kernel thread, self, ancestor).
        respawner: what would restart it.
        gone: set when it exited, or its PID was reused, before the plan was made.
    """

    pid: int
    process: ProcessInfo
    start_ticks: int | None
    sockets: tuple[Socket, ...]
    pidfd: int | None = None
    refusal: str | None = None
    respawner: Respawner | None = None
    gone: str | None = None

    @property
    def inodes(self) -> frozenset[int]:
        """The inodes of its planned sockets."""
        return frozenset(s.inode for s in self.sockets)


@dataclass(slots=True)
class KillPlan:
    """What ``terminate`` would do. Holds pidfds: close it (or use it as a context manager).

    Attributes:
        port: the local port.
        address: the local address asked for (None: every address).
        protos: the protocols in scope.
        targets: the processes to signal, in PID order.
        sockets: every socket in scope with a visible holder.
        hidden: sockets in scope whose holders this caller cannot see.
        kernel_held: sockets on the port held by the kernel alone (TIME_WAIT...).
        unplanned: connected sockets on the port held by processes outside the plan (they
            keep blocking the port; ``include_connected`` plans them too).
        snapshot: the scan the plan comes from.
        netns: the network namespace planned in (a ``--netns`` value; None: the caller's).
    """

    port: int
    address: str | None
    protos: frozenset[Proto]
    targets: list[Target]
    sockets: tuple[Socket, ...]
    hidden: tuple[Socket, ...]
    kernel_held: tuple[Socket, ...]
    unplanned: tuple[Socket, ...]
    snapshot: Snapshot
    netns: str | None = None

    @property
    def refusals(self) -> list[Target]:
        """Targets that a safety rule forbids signalling."""
        return [t for t in self.targets if t.refusal]

    @property
    def supervised(self) -> list[Target]:
        """Targets a supervisor would restart."""
        return [t for t in self.targets if t.respawner and not t.refusal]

    def close(self) -> None:
        """Close the pidfds."""
        for target in self.targets:
            if target.pidfd is not None:
                os.close(target.pidfd)
                target.pidfd = None

    def __enter__(self) -> "KillPlan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_scope(sock: Socket, port: int, include_connected: bool) -> bool:
    if sock.local.port != port:
        return False
    if sock.proto is Proto.UDP:
        return True
    return sock.state in _TCP_BOUND or (include_connected and sock.remote is not None)


def plan_kill(port: int, address: str | None = None, *,
              protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP),
              include_connected: bool = False,
              unit_path: Sequence[str] = SYSTEM_UNIT_PATH,
              netns: str | None = None) -> KillPlan:
    """Scan port ``port`` and plan to stop every process holding a socket on it.

    Args:
        port: the local port, 1-65535 (a client whose remote port matches is never planned).
        address: only sockets bound to this address or to a wildcard covering it.
        protos: ``"tcp"`` and/or ``"udp"``.
        include_connected: also holders of connected TCP sockets whose local port matches
            (accepted connections passed to other processes); by default listeners and bound
            sockets (TCP LISTEN and BOUND_INACTIVE, every UDP socket).
        unit_path: where systemd units are looked up.
        netns: the one network namespace whose sockets are planned: ``"host"`` or None (the
            caller's own), a name (``ip netns``, Docker) or a PID living in it; holders of
            the port in other namespaces are never planned.
    Returns:
        a ``KillPlan`` with an open pidfd per live holder (close it).
    Raises:
        ValueError: port out of range, unknown protocol.
        InvalidInput: malformed address; ``netns`` is ``"all"`` or names no namespace.
        AccessDenied: ``netns`` names another namespace and the caller may not enter it
            (no CAP_SYS_ADMIN, or setns refused by a sandbox): nothing is planned, never an
            empty plan for a namespace that was not read.
        BackendError: the scan failed.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, not {port!r}")
    chosen = frozenset(Proto(p) for p in protos)
    if not chosen or not chosen <= {Proto.TCP, Proto.UDP}:
        raise ValueError(f"protos must be tcp and/or udp, not {sorted(chosen)}")
    if netns == "all":
        raise InvalidInput(namespaces.ONE_ONLY)
    snapshot = take_snapshot(SocketFilter(protos=chosen, port_range=(port, port)),
                             netns=netns, must_enter=True)
    on_port = at_address([s for s in snapshot.sockets if s.local.port == port], address)
    in_scope = [s for s in on_port if _in_scope(s, port, include_connected)]
    kernel_held = tuple(s for s in on_port if not s.owners and s.state in KERNEL_HELD_STATES)
    return _plan(port, address, chosen, snapshot, on_port, in_scope, kernel_held, unit_path,
                 netns)


def unix_in_scope(sock: Socket, include_connected: bool) -> bool:
    """True for the sockets ``kill PATH`` stops: a listener, a datagram server (no peer of
    its own: others send to it), or with ``include_connected`` every socket bound there."""
    return (include_connected or sock.state is State.LISTEN or sock.unix is not None
            and sock.unix.type == "dgram" and sock.unix.peer_inode is None)


def plan_kill_unix(target: str, *, include_connected: bool = False,
                   unit_path: Sequence[str] = SYSTEM_UNIT_PATH,
                   netns: str | None = None) -> KillPlan:
    """Plan to stop every process holding a UNIX socket bound to ``target``: a socket file
    (matched by its inode, in every network namespace the caller may enter) or ``@name``.

    Args:
        target: from ``unixsock.parse_target``.
        include_connected: also holders of the accepted connections bound to it (by
            default the listeners and datagram servers).
        unit_path: where systemd units are looked up.
        netns: look in this one network namespace only (a ``--netns`` value; an abstract
            ``@name`` is per namespace); None: every namespace the caller may enter.
    Returns:
        a ``KillPlan`` (``port`` 0, ``address`` the target, ``protos`` {unix}) with an open
        pidfd per live holder (close it).
    Raises:
        AccessDenied: a namespace looked in could not be entered (see ``_unix_lookup``).
    """
    snapshot = _unix_lookup(target, netns)
    in_scope = [s for s in snapshot.sockets if unix_in_scope(s, include_connected)]
    return _plan(0, target, frozenset({Proto.UNIX}), snapshot, snapshot.sockets, in_scope, (),
                 unit_path, netns)


def _unix_lookup(target: str, netns: str | None) -> Snapshot:
    """The UNIX sockets bound to ``target`` (``unixsock.lookup``) in ``netns`` (one), else in
    every namespace the caller may enter (all of them with CAP_SYS_ADMIN).

    Raises:
        AccessDenied: one of those namespaces could not be entered (setns refused, as by a
            seccomp filter): its holders are unknown, so neither "no process holds it" nor
            "freed" can be said.
    """
    from .. import unixsock
    if netns == "all":
        raise InvalidInput(namespaces.ONE_ONLY)
    if netns is not None:
        return unixsock.lookup(target, netns=netns, must_enter=True)[0]
    if not namespaces.may_enter():
        return unixsock.lookup(target, netns="host", must_enter=True)[0]
    try:
        return unixsock.lookup(target, netns="all", must_enter=True)[0]
    except AccessDenied as exc:
        raise AccessDenied(f"{exc} (--netns host: look in this namespace only)") from None


def _plan(port: int, address: str | None, protos: frozenset[Proto], snapshot: Snapshot,
          on_target: Sequence[Socket], in_scope: Sequence[Socket],
          kernel_held: tuple[Socket, ...], unit_path: Sequence[str],
          netns: str | None = None) -> KillPlan:
    """The plan for the sockets ``in_scope`` (of ``on_target``, every socket on the port or
    name, in network namespace ``netns``): a ``Target`` per holding process, in PID order,
    with its pidfd; the hidden ones; sockets on the target held by processes outside the
    plan."""
    hidden = tuple(s for s in in_scope if not s.owners
                   and s.owner_unknown is OwnerUnknown.PERMISSION)
    owned = tuple(s for s in in_scope if s.owners)
    by_pid: dict[int, list[Socket]] = {}
    processes: dict[int, ProcessInfo] = {}
    for sock in owned:
        for owner in sock.owners:
            by_pid.setdefault(owner.pid, []).append(sock)
            processes.setdefault(owner.pid, owner.process)
    freed = address if Proto.UNIX in protos else port     # a UNIX socket has no port
    targets = [_target(pid, processes[pid], tuple(by_pid[pid]), freed, unit_path)
               for pid in sorted(by_pid)]
    unplanned = tuple(s for s in on_target if s not in in_scope and s.owners
                      and not {o.pid for o in s.owners} <= set(by_pid))
    return KillPlan(port=port, address=address, protos=protos, targets=targets,
                    sockets=owned, hidden=hidden, kernel_held=kernel_held,
                    unplanned=unplanned, snapshot=snapshot, netns=netns)


def _target(pid: int, process: ProcessInfo, sockets: tuple[Socket, ...], freed: int | str,
            unit_path: Sequence[str]) -> Target:
    """Open the pidfd and check it names the scanned process (same start time); ``freed``:
    the port or UNIX socket (path, ``@name``) the kill frees, for ``find_respawner``."""
    target = Target(pid=pid, process=process, start_ticks=None, sockets=sockets)
    try:
        target.pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        target.gone = "exited before the plan was made"
        return target
    except (AttributeError, OSError):
        target.pidfd = None      # no pidfd here: terminate() will refuse to signal
    try:
        _comm, _state, _ppid, flags, ticks = read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        target.gone = "exited before the plan was made"
        return target
    target.start_ticks = ticks
    if process.started_at is not None and started_at(ticks) != process.started_at:
        target.gone = "its PID was reused by another process before the plan was made"
        return target
    target.refusal = safety_refusal(pid, flags)
    container = next((s.container for s in sockets if s.container is not None), None)
    target.respawner = find_respawner(process, freed, unit_path, container)
    return target


def plan_protos(plan: KillPlan) -> frozenset[Proto]:
    """The protocols to verify after ``plan``: those with a socket on the port, else all of
    the plan's."""
    present = {s.proto for s in (*plan.sockets, *plan.kernel_held, *plan.hidden)}
    return frozenset(present) or plan.protos


def verify_unix(target: str, include_connected: bool = False,
                netns: str | None = None) -> tuple[Socket, ...]:
    """The sockets still bound to ``target`` that ``kill`` was to stop (empty: freed), looked
    for where ``plan_kill_unix`` looked (``netns``).

    Raises:
        AccessDenied: as ``plan_kill_unix``.
    """
    return tuple(s for s in _unix_lookup(target, netns).sockets
                 if unix_in_scope(s, include_connected))
