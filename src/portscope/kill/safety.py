"""The rules that refuse a kill before any signal: PID 1, kernel threads, portscope itself and
its ancestors (never overridable); supervised holders (unless forced), hidden holders and
holders this user may not signal."""

from __future__ import annotations

import os

from ..errors import AccessDenied, KillRefused
from ..owners import visibility
from ..owners.process import read_stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .plan import KillPlan, Target

PF_KTHREAD = 0x00200000           # include/linux/sched.h: the task is a kernel thread
CAP_KILL = 5


def ancestors(pid: int | None = None) -> list[int]:
    """The PIDs above ``pid`` (default: this process), parent first, up to PID 1 or the edge
    of the PID namespace (ppid 0). Source: ``/proc/PID/stat``."""
    chain: list[int] = []
    current = os.getpid() if pid is None else pid
    while True:
        try:
            parent = read_stat(current)[2]
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
            flags = read_stat(pid)[3]
        except (FileNotFoundError, ProcessLookupError):
            flags = 0            # gone: nothing will be signalled anyway
    if flags & PF_KTHREAD:
        return f"PID {pid} is a kernel thread"
    if pid == os.getpid():
        return "that is portscope itself"
    if pid in ancestors():
        return f"PID {pid} is an ancestor of portscope (the shell or program running it)"
    return None


def _may_signal(target: Target) -> bool:
    """The kernel's permission rule for kill(2): CAP_KILL, or the sender's real or effective
    uid equals the target's real or saved uid."""
    try:
        # the Name: line is the process's own bytes: surrogateescape, never a decode error
        with open("/proc/self/status", errors="surrogateescape") as f:
            status = f.read()
        caps = int(status.split("\nCapEff:", 1)[1].split()[0], 16)
        with open(f"/proc/{target.pid}/status", errors="surrogateescape") as f:
            theirs = f.read().split("\nUid:", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True              # gone (or no such fields): nothing to deny
    if caps >> CAP_KILL & 1:
        return True
    real, saved = int(theirs[0]), int(theirs[2])
    return bool({os.getuid(), os.geteuid()} & {real, saved})


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
                           f"this user cannot see ({visibility.remedy()})")
    live = [t for t in plan.targets if not t.gone]
    if any(t.pidfd is None for t in live):
        raise AccessDenied("pidfd_open is unavailable here; without it a signal could reach a "
                           "reused PID, so none is sent")
    denied = [t.pid for t in live if not _may_signal(t)]
    if denied:
        raise AccessDenied(f"this user may not signal PID(s) {', '.join(map(str, denied))}: "
                           "run as their user or root")
