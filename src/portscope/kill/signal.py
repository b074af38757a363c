"""``terminate``: re-verify each holder's identity, signal it through its pidfd, wait for it to
exit or let go of its sockets; SIGKILL survivors only when forced."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import AccessDenied, PidReused, ProcessGone
from ..owners.process import read_stat
from .plan import KillPlan, Target
from .safety import refuse

#: signals ``terminate`` accepts, by name
SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "HUP": signal.SIGHUP,
           "QUIT": signal.SIGQUIT, "KILL": signal.SIGKILL}
PF_EXITING = 0x00000004           # include/linux/sched.h: the task is exiting
POLL_INTERVAL_S = 0.05


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
        _comm, state, _ppid, flags, _start = read_stat(pid)
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
        comm, _state, _ppid, _flags, ticks = read_stat(target.pid)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"PID {target.pid} exited") from None
    if ticks != target.start_ticks:
        raise PidReused(f"PID {target.pid} ({target.process.name}) exited; the PID now "
                        f"belongs to {comm}")
    if not holds_any(target.pid, target.inodes):
        raise ProcessGone(f"PID {target.pid} no longer holds its socket(s)")


def _send(target: Target, sig: int) -> None:
    """Signal ``target`` through its pidfd; a stopped process also gets SIGCONT so that it can
    act on the signal.

    Raises:
        ProcessLookupError: it exited.
    """
    signal.pidfd_send_signal(target.pidfd, sig)
    try:
        state = read_stat(target.pid)[1]
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
