"""Why a process's descriptors can be out of sight, and what would show them.

Three obstacles, each with its own remedy: a caller without privilege (another user's
``/proc/PID/fd`` needs root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); ``/proc`` mounted with
``hidepid=`` (other users' processes are unreadable, or with ``invisible``/``2`` not even
listed: their sockets then look ownerless, which is hidden, not vanished); and, for root, a
sandbox or security module (seccomp, AppArmor, SELinux, a user namespace) that denies even it.
"Run as root" is said only when privilege is the obstacle.

Sources: ``/proc/self/mountinfo`` (the super options of the topmost ``/proc`` mount),
``kill(pid, 0)`` (a process that exists but is hidden answers EPERM), ``/proc/PID/stat`` (the
name of a process whose descriptors root may not read).
"""

from __future__ import annotations

import os
from collections.abc import Collection

# the one place for escaping process text (stdlib only): a name read here goes into a
# warning line that reaches a terminal as is
from ..render.escape import safe
from .process import read_stat

PROC = "/proc"
PRIVILEGE_HINT = "run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
#: how many processes a message names (the others are counted)
NAMED_PIDS = 3


def proc_hidepid(mountinfo: str = f"{PROC}/self/mountinfo") -> tuple[str, int | None] | None:
    """The ``hidepid=`` value of the ``/proc`` mount and its ``gid=`` (None without one),
    or None when ``/proc`` does not hide processes (no such option, ``0`` or ``off``).

    Reads the super options (after `` - proc proc ``) of the last ``/proc`` line of
    ``mountinfo``: the topmost mount is the one path lookups see.
    """
    found = None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields, sep, rest = line.partition(" - ")
                parts = fields.split()
                if not sep or len(parts) < 5 or parts[4] != PROC:
                    continue
                options = rest.split()
                found = options[2].split(",") if len(options) >= 3 else []
    except OSError:
        return None          # no /proc: nothing is hidden by it
    if found is None:
        return None
    values = dict(option.partition("=")[::2] for option in found)
    hidepid = values.get("hidepid")
    if hidepid in (None, "", "0", "off"):
        return None
    gid = values.get("gid")
    return hidepid, int(gid) if gid and gid.isdigit() else None


def hidden_from_caller() -> str | None:
    """The ``hidepid=`` value when ``/proc`` hides other users' processes from this caller
    (root and members of the mount's ``gid=`` group see through it), else None."""
    mount = proc_hidepid()
    if mount is None or os.geteuid() == 0:
        return None
    hidepid, gid = mount
    if gid is not None and (gid == os.getegid() or gid in os.getgroups()):
        return None
    return hidepid


def obstacle(unreadable: Collection[int]) -> str:
    """Why owners could not be read, with the remedy, as one phrase: ``"3 process(es) could
    not be read (run as root, ...)"``, the hidepid mount, or for root a sandbox or LSM, naming
    the processes (``named_pids``: few, and not expected to be out of root's sight).

    Args:
        unreadable: the PIDs whose descriptors were refused (empty when they were hidden).
    """
    hidepid = hidden_from_caller()
    if hidepid is not None:
        return (f"/proc is mounted with hidepid={hidepid}, which hides other users' processes "
                "from this user (run as root, or as a member of the mount's gid= group)")
    if os.geteuid() == 0:
        return (f"{len(unreadable)} process(es) could not be read even as root (a sandbox or "
                "LSM denies it)" + (f": {named_pids(unreadable)}" if unreadable else ""))
    return f"{len(unreadable)} process(es) could not be read ({PRIVILEGE_HINT})"


def named_pids(pids: Collection[int], limit: int = NAMED_PIDS) -> str:
    """The first ``limit`` of ``pids`` (lowest first) with their names, then how many more:
    ``"pid 1 (process_api), pid 7 (agent) and 2 more"``. A name is the process's ``comm``
    (``/proc/PID/stat``, readable where its descriptors are not), escaped for a terminal
    (``render.escape.safe``); a process whose name cannot be read (gone) is named by PID."""
    ordered = sorted(pids)
    names = []
    for pid in ordered[:limit]:
        try:
            names.append(f"pid {pid} ({safe(read_stat(pid)[0])})")
        except (OSError, ValueError, IndexError):   # gone, or a stat line cut short
            names.append(f"pid {pid}")
    more = len(ordered) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def remedy() -> str:
    """What would show a hidden holder, for this caller: run as root (or join the hidepid
    group), or, for root, the sandbox or LSM to relax."""
    hidepid = hidden_from_caller()
    if hidepid is not None:
        return (f"/proc is mounted with hidepid={hidepid}: run as root, or as a member of the "
                "mount's gid= group, to see it")
    if os.geteuid() == 0:
        return "even root may not read it: a sandbox or LSM denies it"
    return "run as root to see it"


def process_exists(pid: int) -> bool | None:
    """True when process ``pid`` exists (visible or not: ``kill(pid, 0)`` says EPERM for one
    this caller may not signal, hidden or not), False when there is none, None when unknown."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return None
    return True
