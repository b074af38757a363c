"""Network namespaces: find them all, name them, and run work inside one.

Sources: ``/proc/*/ns/net`` (every namespace that has a process, grouped by inode),
``/run/netns/*`` (``ip netns``) and ``/var/run/docker/netns/*`` (named bind mounts), and the
``nsfs`` mounts of ``/proc/self/mountinfo`` (namespaces kept alive by a mount with no process
left). Namespace inodes are reused within minutes: nothing is cached across snapshots.

Entering a namespace is ``setns(fd, CLONE_NEWNET)`` in a worker thread: it changes only that
thread, and a netlink socket created there stays bound to the namespace. The thread then ends,
so no thread of the caller is ever left in a foreign namespace.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import AccessDenied, InvalidInput
from .types import NetNamespace

PROC = "/proc"
NAMED_DIRS = ("/run/netns", "/var/run/docker/netns")
# the calling thread's own: a worker thread that entered a namespace (run_in) is answered for
# that namespace, so that a snapshot taken there is labelled with it
OWN_PATH = f"{PROC}/thread-self/ns/net"
CLONE_NEWNET = 0x40000000
_INIT_USER_NS = 0xEFFFFFFD     # PROC_USER_INIT_INO: the inode of the initial user namespace
ONE_ONLY = ("--netns all: this command answers for one network namespace: give host, a name "
            "or a PID")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NamespaceEntry:
    """A network namespace and a path that enters it.

    Attributes:
        namespace: inode and name (from a named bind mount, when there is one).
        path: a file to ``open()`` and ``setns()`` into (``/run/netns/NAME``,
            ``/proc/PID/ns/net`` or an nsfs mount point).
        pid: a process living in it, when one was seen (for ``/proc/PID/net`` fallbacks).
    """

    namespace: NetNamespace
    path: str
    pid: int | None = None


def own_inode() -> int | None:
    """Inode of the calling thread's network namespace (``/proc/thread-self/ns/net``), None
    if unreadable."""
    try:
        return os.stat(OWN_PATH).st_ino
    except OSError:
        return None


def _stat_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:          # gone, or not ours to see (EACCES on another user's process)
        return None


def _nsfs_mounts() -> list[str]:
    paths = []
    try:
        with open(f"{PROC}/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(" - ", 1)
                if len(fields) == 2 and fields[1].startswith("nsfs "):
                    mount_point = fields[0].split()[4].replace("\\040", " ")
                    paths.append(mount_point)
    except OSError:
        pass                 # no /proc: nothing to add
    return paths


def _netns_by_pid() -> dict[int, int]:
    """PID -> network namespace inode, from each ``/proc/PID/ns/net`` this caller may read."""
    found = {}
    try:
        processes = os.listdir(PROC)
    except OSError:
        processes = []       # no /proc: not Linux
    readlink = os.readlink      # "net:[INODE]": 30 % cheaper than a stat, per process
    for entry in processes:
        if entry.isdigit():
            try:
                found[int(entry)] = int(readlink(f"{PROC}/{entry}/ns/net")[5:-1])
            except OSError:  # gone, or not ours to see (EACCES on another user's process)
                pass
    return found


def discover(netns_by_pid: Mapping[int, int] | None = None) -> list[NamespaceEntry]:
    """Every network namespace this caller can see, the caller's own first.

    Args:
        netns_by_pid: PID -> namespace inode of every process, when known already (from the
            BPF task iterator); else each ``/proc/PID/ns/net`` is read.
    Returns:
        one entry per namespace inode; the caller's own is named ``host``, the others carry
        their bind mount's file name when they have one.
    Privileges: another user's ``/proc/PID/ns/net`` is unreadable without root
    (CAP_SYS_PTRACE), so an unprivileged caller sees only its own processes' namespaces and
    the named ones.
    """
    found: dict[int, NamespaceEntry] = {}
    own = own_inode()
    if own is not None:
        found[own] = NamespaceEntry(NetNamespace(own, "host"), OWN_PATH,
                                    os.getpid())
    named: dict[int, tuple[str, str]] = {}
    for directory in NAMED_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue         # no such runtime here
        for name in names:
            path = os.path.join(directory, name)
            inode = _stat_inode(path)
            if inode is not None and inode not in named:
                named[inode] = (name, path)
    for path in _nsfs_mounts():
        inode = _stat_inode(path)
        if inode is not None and inode not in named:
            named[inode] = (os.path.basename(path), path)
    for pid, inode in (_netns_by_pid() if netns_by_pid is None else netns_by_pid).items():
        if inode not in found:
            found[inode] = NamespaceEntry(NetNamespace(inode), f"{PROC}/{pid}/ns/net", pid)
    for inode, (name, path) in named.items():
        if inode == own:
            continue         # the caller's own stays "host" (Docker mounts it as "default")
        known = found.get(inode)
        pid = known.pid if known else None
        found[inode] = NamespaceEntry(NetNamespace(inode, name), path, pid)
    return list(found.values())


def select(spec: str | None, entries: Sequence[NamespaceEntry] | None = None,
           netns_by_pid: Callable[[], Mapping[int, int] | None] | None = None
           ) -> list[NamespaceEntry]:
    """The namespaces a ``--netns`` value names.

    Args:
        spec: ``"all"``, ``"host"`` (the caller's own), a name (``ip netns`` or Docker's), or a
            PID (that process's namespace); None means ``"host"``.
        entries: from ``discover()`` (discovered here when omitted).
        netns_by_pid: when discovering, called for ``discover``'s argument.
    Raises:
        InvalidInput: no namespace has that name, or no such process.
    """
    if spec in (None, "host"):
        own = own_inode()
        return [NamespaceEntry(NetNamespace(own or 0, "host"), OWN_PATH,
                               os.getpid())]
    if entries is None:
        entries = discover(netns_by_pid() if netns_by_pid is not None else None)
    if spec == "all":
        return list(entries)
    if spec.isascii() and spec.isdigit():
        inode = _stat_inode(f"{PROC}/{spec}/ns/net")
        if inode is None:
            raise InvalidInput(f"--netns {spec}: no such process (or its namespace is not "
                               "readable)")
        for entry in entries:
            if entry.namespace.inode == inode:
                return [entry]
        return [NamespaceEntry(NetNamespace(inode), f"{PROC}/{spec}/ns/net", int(spec))]
    for entry in entries:
        if entry.namespace.name == spec:
            return [entry]
    raise InvalidInput(f"--netns {spec!r}: no network namespace of that name")


def may_enter() -> bool:
    """True when this caller may ``setns()`` into other network namespaces: CAP_SYS_ADMIN in
    the user namespace of PID 1 (root of ``unshare --user --map-root-user`` has it in its own
    user namespace only, which owns none of the others)."""
    try:
        with open(f"{PROC}/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    if not int(line.split()[1], 16) & (1 << 21):    # CAP_SYS_ADMIN
                        return False
                    break
        own = os.stat(f"{PROC}/self/ns/user").st_ino
    except OSError:
        return False         # no /proc: not Linux, no network namespaces to enter
    if own == _INIT_USER_NS:
        return True
    try:                     # a container's own user namespace, which owns its namespaces
        return own == os.stat(f"{PROC}/1/ns/user").st_ino
    except OSError:
        return False


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)               # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes                                     # Python 3.10, 3.11
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def run_in(entries: Sequence[NamespaceEntry], work: Callable[[NamespaceEntry], T]
           ) -> list[T | OSError]:
    """Run ``work(entry)`` inside each namespace, in order, in one short-lived thread.

    The caller's own namespace (``/proc/self/ns/net``) runs in the calling thread.

    Returns:
        per entry, ``work``'s result, or the ``OSError`` that kept the thread out of that
        namespace (EPERM without CAP_SYS_ADMIN, ENOENT when it vanished).
    Raises:
        whatever ``work`` raises (re-raised in the caller).
    """
    own = own_inode()
    results: list[T | OSError | None] = [None] * len(entries)
    foreign = []
    for i, entry in enumerate(entries):
        if entry.namespace.inode == own:
            results[i] = work(entry)
        else:
            foreign.append(i)
    if not foreign:
        return results
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            for i in foreign:
                try:
                    fd = os.open(entries[i].path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        _setns(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:      # gone since discovery, or not permitted
                    results[i] = exc
                    continue
                results[i] = work(entries[i])
        except BaseException as exc:        # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=worker, name="portscope-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return results


def not_entered(ns: NetNamespace, error: OSError, part: str = "") -> str:
    """The one sentence for network namespace ``ns`` that ``error`` kept this process out of
    (setns refused: no CAP_SYS_ADMIN, a seccomp filter such as systemd's
    ``RestrictNamespaces=``), said by every command, as a warning or an access denied:
    ``"cannot enter network namespace NAME (INODE): Operation not permitted"`` (the inode
    alone when it has no name); ``part``: what was to be read in there, when not all of it
    (``"UNIX sockets"``). The name is not escaped here: the lines are where they are written
    (``cli.common.warn``)."""
    reading = f" to read its {part}" if part else ""
    return f"cannot enter network namespace {label(ns)}{reading}: {error.strerror or error}"


def label(ns: NetNamespace) -> str:
    """How a message names namespace ``ns``: ``"NAME (INODE)"``, the inode alone when it has
    no name."""
    return f"{ns.name} ({ns.inode})" if ns.name else str(ns.inode)


def require_entry(entries: Sequence[NamespaceEntry]) -> None:
    """Raise ``AccessDenied`` when foreign namespaces are asked for and cannot be entered: the
    first one named in ``not_entered``'s words, what it takes, and the count of the others
    (``"cannot enter network namespace NAME (INODE): Operation not permitted (needs root:
    CAP_SYS_ADMIN); nor the 2 other(s) asked for"``)."""
    own = own_inode()
    foreign = [e.namespace for e in entries if e.namespace.inode != own]
    if foreign and not may_enter():
        more = f"; nor the {len(foreign) - 1} other(s) asked for" if len(foreign) > 1 else ""
        refused = PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        raise AccessDenied(f"{not_entered(foreign[0], refused)} (needs root: CAP_SYS_ADMIN)"
                           f"{more}")


def netns_flag(spec: str | None) -> str:
    """``" --netns SPEC"`` (shell-quoted) for a command suggested to a user who asked about
    namespace ``spec`` (a ``--netns`` value), so that it acts where the answer was found;
    empty for None and ``"host"`` (the caller's own)."""
    if spec is None or spec == "host":
        return ""
    import shlex
    return f" --netns {shlex.quote(spec)}"


def run_in_one(spec: str | None, work: Callable[[], T]) -> T:
    """``work()`` run inside the one network namespace ``--netns spec`` names (in a thread
    that entered it: sockets it creates and dumps it takes are that namespace's); in the
    caller's own when ``spec`` is None or ``"host"``.

    Raises:
        InvalidInput: ``all``, an unknown name or PID.
        AccessDenied: the namespace cannot be entered (needs CAP_SYS_ADMIN).
    """
    if spec in (None, "host"):
        return work()
    if spec == "all":
        raise InvalidInput(ONE_ONLY)
    entries = select(spec)
    require_entry(entries)
    (result,) = run_in(entries, lambda _entry: work())
    if isinstance(result, OSError):
        raise AccessDenied(not_entered(entries[0].namespace, result))
    return result

