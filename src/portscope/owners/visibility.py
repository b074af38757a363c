"""Why a process's descriptors can be out of sight, and what would show them.

Three obstacles, each with its own remedy: a caller without privilege (another user's
``/proc/PID/fd`` needs root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); ``/proc`` mounted with
``hidepid=`` (other users' processes are unreadable, or with ``invisible``/``2`` not even
listed: their sockets then look ownerless, which is hidden, not vanished); and, for root, a
sandbox or security module (seccomp, AppArmor, SELinux, a user namespace) that denies even it.
"Run as root" is said only when privilege is the obstacle.

Sources: ``/proc/self/mountinfo`` (the super options of the topmost ``/proc`` mount),
``kill(pid, 0)`` (a process that exists but is hidden answers EPERM).
"""

from __future__ import annotations

import os

PROC = "/proc"
PRIVILEGE_HINT = "run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"


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


def obstacle(unreadable: int) -> str:
    """Why owners could not be read, with the remedy, as one phrase: ``"3 process(es) could
    not be read (run as root, ...)"``, the hidepid mount, or a sandbox or LSM for root.

    Args:
        unreadable: how many processes' descriptors were refused (0 when they were hidden).
    """
    hidepid = hidden_from_caller()
    if hidepid is not None:
        return (f"/proc is mounted with hidepid={hidepid}, which hides other users' processes "
                "from this user (run as root, or as a member of the mount's gid= group)")
    if os.geteuid() == 0:
        return (f"{unreadable} process(es) could not be read even as root (a sandbox or LSM "
                "denies it)")
    return f"{unreadable} process(es) could not be read ({PRIVILEGE_HINT})"


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
