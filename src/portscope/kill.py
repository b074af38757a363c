"""free_port() / terminate(): stop every process holding a port, safely, then prove it is free.

A kill is a transaction:

1. **Plan** (``plan_kill``): every socket whose **local** port matches (listeners and bound
   sockets; connected ones only when asked; never a client whose *remote* port matches), every
   process holding each of them (fork sharing, SO_REUSEPORT groups, IPv4 and IPv6). A pidfd is
   opened for each holder right after the scan and its start time compared with the scan's.
2. **Refuse** before any signal: PID <= 1, kernel threads (``PF_KTHREAD``), portscope itself
   and its ancestors (``KillRefused``, never overridable); holders a supervisor would restart
   (a systemd unit with ``Restart=``, a container, docker-proxy, supervisord, pm2), unless
   forced, with the command that stops them for good; holders this user cannot see or signal
   (``AccessDenied``).
3. **Signal** (``terminate``): re-verify each holder's identity (pid + start time in clock ticks
   from ``/proc/PID/stat`` + still holds one of its sockets' inodes), then signal through the
   pidfd, so a PID reused since the scan is never hit. A stopped holder also gets SIGCONT.
   Wait up to ``timeout_s`` for each to exit or let go of its sockets; survivors are reported,
   and get SIGKILL only with ``force``.
4. **Verify** (``verify_port``): ``check_bind`` on the port. Sockets the kernel keeps after the
   processes are gone (TIME_WAIT, FIN_WAIT2: up to 60 s) are reported as such, never as freed.

Without pidfd (not Linux >= 5.3, or blocked by seccomp) no signal is sent (``AccessDenied``):
a plain ``kill(pid)`` could hit a reused PID.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import ownership
from .bindcheck import BindDiagnosis, check_bind
from .containers import FORWARDERS
from .errors import AccessDenied, KillRefused, PidReused, ProcessGone
from .filters import SocketFilter
from .snapshot import take_snapshot
from .types import (KERNEL_HELD_STATES, Container, OwnerUnknown, ProcessInfo, Proto, Snapshot,
                    Socket, State)

#: signals ``terminate`` accepts, by name
SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP,
           "QUIT": signal.SIGQUIT, "KILL": signal.SIGKILL}
PF_KTHREAD = 0x00200000           # include/linux/sched.h: the task is a kernel thread
PF_EXITING = 0x00000004           # include/linux/sched.h: the task is exiting
CAP_KILL = 5
POLL_INTERVAL_S = 0.05
#: systemd's system unit search path (systemd.unit(5)), highest priority first
SYSTEM_UNIT_PATH = (
    "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
    "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached",
    "/run/systemd/system", "/run/systemd/system.attached", "/run/systemd/generator",
    "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
    "/run/systemd/generator.late")
_TCP_BOUND = frozenset({State.LISTEN, State.BOUND_INACTIVE})


@dataclass(frozen=True, slots=True)
class Respawner:
    """What would start a holder again after it dies.

    Attributes:
        kind: ``"systemd"``, ``"container"``, a container runtime's forwarder (``"docker-proxy"``,
            ``"conmon"``, ``"dockerd"``, ``"rootlessport"``), ``"supervisord"``, ``"pm2"``.
        name: the unit, container id, or program name, when known.
        command: the command that stops it for good.
        detail: one sentence, for people.
    """

    kind: str
    name: str | None
    command: str
    detail: str


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one target.

    ``result`` is one of: ``"exited"`` (gone after a signal), ``"released"`` (alive, but no
    longer holds its sockets), ``"survived"`` (still holds them after ``timeout_s``),
    ``"gone"`` (exited before it was signalled), ``"pid-reused"`` (the PID names another
    process now: not signalled), ``"not-signalled"`` (already let go of its sockets).
    ``signals``: the signals sent, by name.
    """

    pid: int
    name: str | None
    result: str
    signals: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PortCheck:
    """The port after the kill.

    Attributes:
        freed: every protocol's check is bindable.
        checks: one ``BindDiagnosis`` per protocol checked.
        kernel_held: blocking sockets with no process (TIME_WAIT, FIN_WAIT2...).
        still_held: blocking sockets with a process, or a holder this caller cannot see.
        reuseaddr_bindable: when only kernel-held sockets block TCP: whether a server with
            SO_REUSEADDR could bind now (it can only if the old listener had it too); else None.
    """

    freed: bool
    checks: tuple[BindDiagnosis, ...]
    kernel_held: tuple[Socket, ...]
    still_held: tuple[Socket, ...]
    reuseaddr_bindable: bool | None


@dataclass(frozen=True, slots=True)
class KillResult:
    """``free_port``'s answer: the plan, each target's ``Outcome`` and the ``PortCheck``."""

    plan: KillPlan
    outcomes: tuple[Outcome, ...]
    check: PortCheck = field(repr=False)

    @property
    def freed(self) -> bool:
        """True only when the port really binds now."""
        return self.check.freed


# ---------------------------------------------------------------------------------------------
# Safety rules

def ancestors(pid: int | None = None) -> list[int]:
    """The PIDs above ``pid`` (default: this process), parent first, up to PID 1 or the edge
    of the PID namespace (ppid 0). Source: ``/proc/PID/stat``."""
    chain: list[int] = []
    current = os.getpid() if pid is None else pid
    while True:
        try:
            parent = ownership.read_stat(current)[2]
        except (FileNotFoundError, ProcessLookupError):
            break                # the chain ends where a process is gone
        if parent <= 0 or parent in chain:
            break
        chain.append(parent)
        if parent == 1:
            break
        current = parent
    return chain


def safety_refusal(pid: int, flags: int | None = None) -> str | None:
    """Why ``pid`` must never be signalled, or None.

    Refused: PID <= 0 (a process group or every process), PID 1 (init), kernel threads
    (``PF_KTHREAD`` in ``flags``, the ``/proc/PID/stat`` flags, read when not given),
    portscope itself and its ancestors.
    """
    if pid <= 0:
        return f"PID {pid} would signal a whole process group or every process"
    if pid == 1:
        return "PID 1 is init: its death takes the system (or container) down"
    if flags is None:
        try:
            flags = ownership.read_stat(pid)[3]
        except (FileNotFoundError, ProcessLookupError):
            flags = 0            # gone: nothing will be signalled anyway
    if flags & PF_KTHREAD:
        return f"PID {pid} is a kernel thread"
    if pid == os.getpid():
        return "that is portscope itself"
    if pid in ancestors():
        return f"PID {pid} is an ancestor of portscope (the shell or program running it)"
    return None


# ---------------------------------------------------------------------------------------------
# Supervisors

def _read_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def unit_restart(unit: str, search_path: Sequence[str] = SYSTEM_UNIT_PATH) -> str:
    """The ``Restart=`` setting of a systemd unit: its unit file (or template) in
    ``search_path`` and the drop-ins ``UNIT.d/*.conf``, later settings winning.

    Returns:
        the value (``"no"`` when unset or no file is found).
    """
    names = [unit]
    prefix, at, rest = unit.partition("@")
    if at:
        names.insert(0, f"{prefix}@{rest[rest.rfind('.'):]}")          # foo@.service
    files: list[Path] = []
    for name in names:
        found = next((Path(d) / name for d in search_path if (Path(d) / name).is_file()), None)
        if found is not None:
            files.append(found)
        dropins: dict[str, Path] = {}
        for d in reversed(search_path):        # a higher-priority directory wins a name
            folder = Path(d) / f"{name}.d"
            if folder.is_dir():
                dropins.update((p.name, p) for p in folder.glob("*.conf"))
        files.extend(dropins[n] for n in sorted(dropins))
    value = "no"
    for path in files:
        section = ""
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif section == "[Service]" and line.startswith("Restart="):
                value = line.split("=", 1)[1].strip() or "no"
    return value


def _own_container() -> str | None:
    own = ownership.process_info(os.getpid())
    return own.container if own else None


def _stop_container(container: Container) -> str:
    """The command that stops ``container`` with its runtime (docker when unknown)."""
    name = container.name or container.id[:12]
    runtime = container.runtime if container.runtime in ("docker", "podman") else "docker"
    return f"{runtime} stop {name}"


def find_respawner(process: ProcessInfo, port: int,
                   unit_path: Sequence[str] = SYSTEM_UNIT_PATH,
                   container: Container | None = None) -> Respawner | None:
    """What would restart ``process`` after it dies, or None.

    Sources: the systemd unit from ``/proc/PID/cgroup`` and its ``Restart=`` (see
    ``unit_restart``; a matching ``.socket`` unit restarts it on the next connection);
    the container id from the cgroup, named by ``container`` (the sockets' ``Socket.container``)
    when known; a forwarder that holds the port for ``container`` (docker-proxy, conmon,
    dockerd, rootlessport), or ``docker-proxy`` by name; supervisord and pm2 by the variables
    they set for their children (``SUPERVISOR_PROCESS_NAME``, ``pm_id``) in
    ``/proc/PID/environ`` (readable by root and the same user).
    """
    unit = process.unit
    if unit and unit.endswith(".service"):
        restart = unit_restart(unit, unit_path)
        socket_unit = unit[:-len(".service")] + ".socket"
        activated = any((Path(d) / socket_unit).is_file() for d in unit_path)
        if restart != "no" or activated:
            stop = f"systemctl stop {socket_unit} {unit}" if activated else \
                f"systemctl stop {unit}"
            why = f"Restart={restart}" if restart != "no" else f"socket activation by {socket_unit}"
            return Respawner("systemd", unit, stop,
                             f"systemd would start {unit} again ({why})")
    if container is not None and process.name in FORWARDERS and process.container is None:
        name = container.name or container.id[:12]
        return Respawner(process.name, name, _stop_container(container),
                         f"{process.name} publishes the port for container {name}: stop the "
                         f"container, not its {process.name}")
    if process.name == "docker-proxy":
        return Respawner("docker-proxy", None,
                         f"docker stop $(docker ps -q --filter publish={port})",
                         "docker-proxy publishes the port for a container: stop the container, "
                         "not its proxy")
    if process.container and process.container != _own_container():
        known = container if container is not None and container.id == process.container \
            else Container(process.container)
        name = known.name or known.id[:12]
        return Respawner("container", name, _stop_container(known),
                         f"the holder runs in container {name}; its runtime may restart it")
    env = _read_environ(process.pid)
    if "SUPERVISOR_PROCESS_NAME" in env:
        name = env["SUPERVISOR_PROCESS_NAME"]
        group = env.get("SUPERVISOR_GROUP_NAME", name)
        full = name if group == name else f"{group}:{name}"
        return Respawner("supervisord", full, f"supervisorctl stop {full}",
                         f"supervisord runs it as program {full} and may restart it")
    if "pm_id" in env:
        pm_id = env["pm_id"]
        return Respawner("pm2", env.get("name") or pm_id, f"pm2 stop {pm_id}",
                         f"pm2 runs it as app {env.get('name') or pm_id} and restarts it")
    return None


# ---------------------------------------------------------------------------------------------
# Plan

def _in_scope(sock: Socket, port: int, include_connected: bool) -> bool:
    if sock.local.port != port:
        return False
    if sock.proto is Proto.UDP:
        return True
    return sock.state in _TCP_BOUND or (include_connected and sock.remote is not None)


def plan_kill(port: int, address: str | None = None, *,
              protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP),
              include_connected: bool = False,
              unit_path: Sequence[str] = SYSTEM_UNIT_PATH) -> KillPlan:
    """Scan port ``port`` and plan to stop every process holding a socket on it.

    Args:
        port: the local port, 1-65535 (a client whose remote port matches is never planned).
        address: only sockets bound to this address or to a wildcard covering it.
        protos: ``"tcp"`` and/or ``"udp"``.
        include_connected: also holders of connected TCP sockets whose local port matches
            (accepted connections passed to other processes); by default listeners and bound
            sockets (TCP LISTEN and BOUND_INACTIVE, every UDP socket).
        unit_path: where systemd units are looked up.
    Returns:
        a ``KillPlan`` with an open pidfd per live holder (close it).
    Raises:
        ValueError: port out of range, unknown protocol.
        InvalidInput: malformed address.
        BackendError: the scan failed.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, not {port!r}")
    chosen = frozenset(Proto(p) for p in protos)
    if not chosen or not chosen <= {Proto.TCP, Proto.UDP}:
        raise ValueError(f"protos must be tcp and/or udp, not {sorted(chosen)}")
    snapshot = take_snapshot(SocketFilter(protos=chosen, port_range=(port, port),
                                          address=address))
    on_port = [s for s in snapshot.sockets if s.local.port == port]
    in_scope = [s for s in on_port if _in_scope(s, port, include_connected)]
    hidden = tuple(s for s in in_scope if not s.owners
                   and s.owner_unknown is OwnerUnknown.PERMISSION)
    kernel_held = tuple(s for s in on_port if not s.owners and s.state in KERNEL_HELD_STATES)
    owned = tuple(s for s in in_scope if s.owners)
    by_pid: dict[int, list[Socket]] = {}
    processes: dict[int, ProcessInfo] = {}
    for sock in owned:
        for owner in sock.owners:
            by_pid.setdefault(owner.pid, []).append(sock)
            processes.setdefault(owner.pid, owner.process)
    targets = [_target(pid, processes[pid], tuple(by_pid[pid]), port, unit_path)
               for pid in sorted(by_pid)]
    planned = set(by_pid)
    unplanned = tuple(s for s in on_port if s not in in_scope and s.owners
                      and not {o.pid for o in s.owners} <= planned)
    return KillPlan(port=port, address=address, protos=chosen, targets=targets, sockets=owned,
                    hidden=hidden, kernel_held=kernel_held, unplanned=unplanned,
                    snapshot=snapshot)


def _target(pid: int, process: ProcessInfo, sockets: tuple[Socket, ...], port: int,
            unit_path: Sequence[str]) -> Target:
    """Open the pidfd and check it names the scanned process (same start time)."""
    target = Target(pid=pid, process=process, start_ticks=None, sockets=sockets)
    try:
        target.pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        target.gone = "exited before the plan was made"
        return target
    except (AttributeError, OSError):
        target.pidfd = None      # no pidfd here: terminate() will refuse to signal
    try:
        _comm, _state, _ppid, flags, ticks = ownership.read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        target.gone = "exited before the plan was made"
        return target
    target.start_ticks = ticks
    if process.started_at is not None and ownership.started_at(ticks) != process.started_at:
        target.gone = "its PID was reused by another process before the plan was made"
        return target
    target.refusal = safety_refusal(pid, flags)
    container = next((s.container for s in sockets if s.container is not None), None)
    target.respawner = find_respawner(process, port, unit_path, container)
    return target


# ---------------------------------------------------------------------------------------------
# Signal

def holds_any(pid: int, inodes: Iterable[int]) -> bool:
    """True when process ``pid`` has a descriptor on one of the socket ``inodes``
    (``/proc/PID/fd``). False when it is gone.

    Raises:
        AccessDenied: its descriptors cannot be read.
    """
    wanted = {f"socket:[{i}]" for i in inodes}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        raise AccessDenied(f"cannot read /proc/{pid}/fd") from None
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in wanted:
                return True
        except (FileNotFoundError, ProcessLookupError):
            continue             # closed since listdir
        except PermissionError:
            # an exiting process's /proc entries turn root-owned once its memory is gone
            if _exiting(pid):
                return False
            raise AccessDenied(f"cannot read /proc/{pid}/fd") from None
    return False


def _exiting(pid: int) -> bool:
    """True when ``pid`` is gone, a zombie or exiting (``/proc/PID/stat``: state Z, X or x,
    or the PF_EXITING flag)."""
    try:
        _comm, state, _ppid, flags, _start = ownership.read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X", "x") or bool(flags & PF_EXITING)


def verify_identity(target: Target) -> None:
    """Check that ``target.pid`` still is the scanned process and still holds its sockets.

    Raises:
        PidReused: the start time differs (the PID names another process now).
        ProcessGone: the process exited, or no longer holds any of its planned sockets.
    """
    try:
        comm, _state, _ppid, _flags, ticks = ownership.read_stat(target.pid)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"PID {target.pid} exited") from None
    if ticks != target.start_ticks:
        raise PidReused(f"PID {target.pid} ({target.process.name}) exited; the PID now "
                        f"belongs to {comm}")
    if not holds_any(target.pid, target.inodes):
        raise ProcessGone(f"PID {target.pid} no longer holds its socket(s)")


def _may_signal(target: Target) -> bool:
    """The kernel's permission rule for kill(2): CAP_KILL, or the sender's real or effective
    uid equals the target's real or saved uid."""
    try:
        with open("/proc/self/status") as f:
            status = f.read()
        caps = int(status.split("\nCapEff:", 1)[1].split()[0], 16)
        with open(f"/proc/{target.pid}/status") as f:
            theirs = f.read().split("\nUid:", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True              # gone (or no such fields): nothing to deny
    if caps >> CAP_KILL & 1:
        return True
    real, saved = int(theirs[0]), int(theirs[2])
    return bool({os.getuid(), os.geteuid()} & {real, saved})


def _send(target: Target, sig: int) -> None:
    """Signal ``target`` through its pidfd; a stopped process also gets SIGCONT so that it can
    act on the signal.

    Raises:
        ProcessLookupError: it exited.
    """
    signal.pidfd_send_signal(target.pidfd, sig)
    try:
        state = ownership.read_stat(target.pid)[1]
    except (FileNotFoundError, ProcessLookupError):
        return
    if state in ("T", "t") and sig not in (signal.SIGKILL, signal.SIGCONT):
        signal.pidfd_send_signal(target.pidfd, signal.SIGCONT)


def _wait(targets: Sequence[Target], timeout_s: float) -> set[int]:
    """Wait until each target exited (its pidfd polls readable) or let go of its sockets, at
    most ``timeout_s`` seconds. Returns the PIDs that did."""
    done: set[int] = set()
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    for target in targets:
        poller.register(target.pidfd, select.POLLIN)
    while True:
        for fd, _event in poller.poll(0):
            for target in targets:
                if target.pidfd == fd and target.pid not in done:
                    done.add(target.pid)
                    poller.unregister(fd)
        for target in targets:
            if target.pid not in done and not _holds_quietly(target):
                done.add(target.pid)
                poller.unregister(target.pidfd)
        remaining = deadline - time.monotonic()
        if len(done) == len(targets) or remaining <= 0:
            return done
        poller.poll(int(min(POLL_INTERVAL_S, remaining) * 1000))


def _holds_quietly(target: Target) -> bool:
    try:
        return holds_any(target.pid, target.inodes)
    except AccessDenied:
        return True              # cannot tell: wait for it to exit


def refuse(plan: KillPlan, *, force: bool = False) -> None:
    """Raise when ``plan`` may not be carried out; return when it may.

    Raises:
        KillRefused: a holder is refused by a safety rule (PID 1, kernel thread, portscope,
            an ancestor), or, without ``force``, a supervisor would restart it (the message
            names the command that stops it for good).
        AccessDenied: some holders are hidden from this caller, may not be signalled by it,
            or pidfd is unavailable.
    """
    if plan.refusals:
        raise KillRefused("; ".join(f"PID {t.pid} ({t.process.name}): {t.refusal}"
                                    for t in plan.refusals))
    if plan.supervised and not force:
        raise KillRefused("; ".join(f"PID {t.pid} ({t.process.name}): {t.respawner.detail}, "
                                    f"so a kill is futile: run `{t.respawner.command}` "
                                    "(or force it)" for t in plan.supervised))
    if plan.hidden:
        raise AccessDenied(f"{len(plan.hidden)} socket(s) on port {plan.port} have holders "
                           "this user cannot see: run as root")
    live = [t for t in plan.targets if not t.gone]
    if any(t.pidfd is None for t in live):
        raise AccessDenied("pidfd_open is unavailable here; without it a signal could reach a "
                           "reused PID, so none is sent")
    denied = [t.pid for t in live if not _may_signal(t)]
    if denied:
        raise AccessDenied(f"this user may not signal PID(s) {', '.join(map(str, denied))}: "
                           "run as their user or root")


def terminate(plan: KillPlan, *, sig: int = signal.SIGTERM, timeout_s: float = 5.0,
              force: bool = False) -> tuple[Outcome, ...]:
    """Carry out ``plan``: verify, signal, wait; SIGKILL survivors only with ``force``.

    Args:
        plan: from ``plan_kill`` (its pidfds are used, not closed).
        sig: one of ``SIGNALS``' values.
        timeout_s: seconds to wait after each round of signals.
        force: also signal holders a supervisor would restart, and send SIGKILL to the
            holders still alive after ``timeout_s``.
    Returns:
        one ``Outcome`` per target.
    Raises:
        KillRefused, AccessDenied: see ``refuse``; nothing has been signalled.
        ValueError: ``sig`` not allowed, ``timeout_s`` not positive.
    """
    if sig not in SIGNALS.values():
        raise ValueError(f"signal {sig!r} is not one of {', '.join(SIGNALS)}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s!r}")
    refuse(plan, force=force)
    live = [t for t in plan.targets if not t.gone]
    name = signal.Signals(sig).name
    outcomes: dict[int, Outcome] = {t.pid: Outcome(t.pid, t.process.name, "gone", (), t.gone)
                                    for t in plan.targets if t.gone}
    signalled = _signal_all(live, sig, outcomes)
    done = _wait(signalled, timeout_s)
    survivors = [t for t in signalled if t.pid not in done]
    sent = {t.pid: (name,) for t in signalled}
    if force and survivors and sig != signal.SIGKILL:
        killed = _signal_all(survivors, signal.SIGKILL, outcomes)
        for t in killed:
            sent[t.pid] += ("SIGKILL",)
        done |= _wait(killed, timeout_s)
        survivors = [t for t in killed if t.pid not in done]
    for target in signalled:
        if target.pid in outcomes:
            continue
        if target.pid in [s.pid for s in survivors]:
            outcomes[target.pid] = Outcome(target.pid, target.process.name, "survived",
                                           sent[target.pid], f"still holds its socket(s) "
                                           f"after {timeout_s:g} s")
        else:       # a SIGKILLed process closes its descriptors before its pidfd says so
            alive = _alive(target) and not _exiting(target.pid)
            outcomes[target.pid] = Outcome(target.pid, target.process.name,
                                           "released" if alive else "exited", sent[target.pid],
                                           "alive, but let go of its socket(s)" if alive else "")
    return tuple(outcomes[t.pid] for t in plan.targets)


def _alive(target: Target) -> bool:
    """False once the process has exited (its pidfd polls readable, zombie or reaped)."""
    poller = select.poll()
    poller.register(target.pidfd, select.POLLIN)
    return not poller.poll(0)


def _signal_all(targets: Sequence[Target], sig: int, outcomes: dict[int, Outcome]
                ) -> list[Target]:
    """Verify and signal each target; record those that cannot be; return the signalled."""
    signalled = []
    for target in targets:
        try:
            verify_identity(target)
            _send(target, sig)
        except PidReused as exc:
            outcomes[target.pid] = Outcome(target.pid, target.process.name, "pid-reused", (),
                                           str(exc))
            continue
        except ProcessGone as exc:
            result = "gone" if not _alive(target) else "not-signalled"
            outcomes[target.pid] = Outcome(target.pid, target.process.name, result, (), str(exc))
            continue
        except ProcessLookupError:
            outcomes[target.pid] = Outcome(target.pid, target.process.name, "gone", (),
                                           "exited just before the signal")
            continue
        except AccessDenied as exc:  # its descriptors became unreadable: identity unproven
            outcomes[target.pid] = Outcome(target.pid, target.process.name, "not-signalled",
                                           (), f"identity not verified: {exc}")
            continue
        signalled.append(target)
    return signalled


# ---------------------------------------------------------------------------------------------
# Verify

def verify_port(port: int, address: str | None = None,
                protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP)) -> PortCheck:
    """Is ``port`` free now? ``check_bind`` for each protocol (with a trial bind).

    Returns:
        a ``PortCheck``: blockers split into kernel-held ones (TIME_WAIT, FIN_WAIT2: no
        process, up to 60 s) and those still held by a process.
    """
    checks = tuple(check_bind(port, address, proto=p) for p in
                   sorted({Proto(p) for p in protos}))
    blockers = [s for c in checks for s in c.blockers]
    kernel = tuple(s for s in blockers if not s.owners and s.state in KERNEL_HELD_STATES)
    still = tuple(s for s in blockers if s not in kernel)
    reuseaddr = None
    tcp = [c for c in checks if c.proto is Proto.TCP and not c.bindable]
    if tcp and not still and kernel:
        reuseaddr = check_bind(port, address, proto=Proto.TCP, reuseaddr=True).bindable
    return PortCheck(all(c.bindable for c in checks), checks, kernel, still, reuseaddr)


def free_port(port: int, address: str | None = None, *,
              protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP),
              include_connected: bool = False, sig: int = signal.SIGTERM,
              timeout_s: float = 5.0, force: bool = False) -> KillResult:
    """Plan, signal and verify in one call, without asking anyone (see the module docstring).

    Returns:
        a ``KillResult``; ``freed`` is True only when the port binds now.
    Raises:
        as ``plan_kill`` and ``terminate`` (nothing is signalled when they refuse).
    """
    with plan_kill(port, address, protos=protos, include_connected=include_connected) as plan:
        outcomes = terminate(plan, sig=sig, timeout_s=timeout_s, force=force)
        return KillResult(plan, outcomes, verify_port(port, address, plan_protos(plan)))


def plan_protos(plan: KillPlan) -> frozenset[Proto]:
    """The protocols to verify after ``plan``: those with a socket on the port, else all of
    the plan's."""
    present = {s.proto for s in (*plan.sockets, *plan.kernel_held, *plan.hidden)}
    return frozenset(present) or plan.protos
