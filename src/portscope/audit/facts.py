"""What the audit rules judge, read from the system.

- Executable facts (``ExeInspector``): the running image is read through ``/proc/PID/exe``
  (the open file, so it works after the file was deleted) and hashed once per distinct file
  (device, inode, size, mtime) per run; paths are looked up through ``/proc/PID/root`` so that a
  process in a container is judged in its own mount namespace.
- Kernel views (``kernel_view``): a full TCP/UDP dump from one backend (netlink, procfs).
- Trial binds (``refused_binds``): bind every port of the wildcard addresses and keep those the
  kernel refuses with EADDRINUSE.

Linux only; elsewhere the callers skip these facts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
from collections.abc import Iterable

from .. import backends
from ..owners.fdscan import OwnerIndex, start_scan
from ..owners.process import PROC, read_stat, started_at
from ..errors import BackendError
from ..filters import SocketFilter
from ..types import ProcessInfo, Socket
from .rules import ExeFacts, Refusal

HASH_CHUNK_BYTES = 1 << 20
_DELETED = " (deleted)"
_GONE = (FileNotFoundError, ProcessLookupError)     # the process exited


class ExeInspector:
    """Reads ``ExeFacts`` of processes, hashing each distinct executable file once.

    One instance per audit run: the caches assume files do not change during it.

    Args:
        digests: a hash cache to share across runs (keyed by device, inode, size and mtime, so
            a replaced file is hashed again); a new one by default.
    """

    def __init__(self, digests: dict[tuple[int, int, int, int], str | None] | None = None
                 ) -> None:
        self._digests = {} if digests is None else digests
        self._facts: dict[int, ExeFacts | None] = {}

    def _digest(self, f, st: os.stat_result) -> str | None:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            h = hashlib.sha256()
            for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
                h.update(chunk)
            self._digests[key] = h.hexdigest()
        return self._digests[key]

    def facts(self, process: ProcessInfo) -> ExeFacts | None:
        """Facts about the executable of ``process``.

        Args:
            process: the process as a snapshot saw it (``pid``, ``exe`` link text,
                ``started_at``).
        Returns:
            ``ExeFacts``; None when the link is unknown, or the process has exited or its PID
            now names another process (start time changed). Without the right to read the image
            (another user's process, not root), ``sha256`` is None and ``on_disk`` is
            ``"unknown"``.
        Sources: ``/proc/PID/exe`` (open, fstat, read), ``/proc/PID/root/PATH`` (stat, read),
        ``/proc/PID/stat`` (start time, read after the image).
        """
        pid = process.pid
        if pid in self._facts:
            return self._facts[pid]
        result = None
        if process.exe is not None:
            try:
                result = self._read(pid, process.exe)
                if process.started_at is not None and \
                        started_at(read_stat(pid)[4]) != process.started_at:
                    result = None       # the PID was reused: what was read is another program
            except _GONE:
                result = None
        self._facts[pid] = result
        return result

    def _read(self, pid: int, link: str) -> ExeFacts:
        try:
            with open(f"{PROC}/{pid}/exe", "rb") as f:
                st = os.fstat(f.fileno())
                sha256 = self._digest(f, st)
        except PermissionError:
            deleted = link.endswith(_DELETED)
            return ExeFacts(link.removesuffix(_DELETED) if deleted else link, None, deleted,
                            "unknown")
        deleted = st.st_nlink == 0
        path = link.removesuffix(_DELETED) if deleted else link
        root = f"{PROC}/{pid}/root"
        on_disk_path = root + path
        if not deleted:
            return ExeFacts(path, sha256, False, "same", _world_writable(root, path))
        try:
            with open(on_disk_path, "rb") as f:
                disk_st = os.fstat(f.fileno())
                if not stat.S_ISREG(disk_st.st_mode):
                    return ExeFacts(path, sha256, True, "missing")
                disk_sha256 = self._digest(f, disk_st)
        except (FileNotFoundError, NotADirectoryError):
            return ExeFacts(path, sha256, True, "missing")
        except PermissionError:
            return ExeFacts(path, sha256, True, "unknown")
        on_disk = "same" if disk_sha256 == sha256 else "other"
        return ExeFacts(path, sha256, True, on_disk, _world_writable(root, path))


def _world_writable(root: str, path: str) -> bool:
    """True when any user may replace the file at ``path`` (absolute, inside ``root``): it or
    its directory is world-writable, or an ancestor directory is world-writable without the
    sticky bit (anyone may rename its subdirectories). Unreadable parts count as not writable.
    """
    parts = path.strip("/").split("/")
    for depth in range(len(parts), 0, -1):
        try:
            mode = os.stat(os.path.join(root, *parts[:depth])).st_mode
        except OSError:
            return False
        if mode & stat.S_IWOTH and (depth >= len(parts) - 1 or not mode & stat.S_ISVTX):
            return True
    return False


def kernel_view(name: str, netns: int | None) -> tuple[list[Socket], list[str]]:
    """Every TCP and UDP socket of the caller's network namespace, as backend ``name`` sees it.

    Args:
        name: ``"netlink"`` or ``"procfs"``.
        netns: namespace inode to record in the sockets.
    Returns:
        ``(sockets without owners, warnings)``.
    Raises:
        BackendUnavailable: the backend cannot run here.
        BackendError: the kernel interface failed.
    """
    return backends.load(name).dump(SocketFilter(), netns=netns)


def owners_of_inodes(inodes: Iterable[int]) -> OwnerIndex:
    """The holders of socket ``inodes`` (``OwnerIndex.get(inode)``), from one fd scan
    (``owners.fdscan.start_scan``)."""
    wanted = frozenset(i for i in inodes if i)
    return OwnerIndex(start_scan(wanted=wanted, pids=None if wanted
                                                     else []).result())


def is_initial_netns(netns: int | None) -> bool | None:
    """Whether ``netns`` is the namespace of PID 1 (the host's, or the container's when run
    inside one); None when that cannot be read."""
    try:
        return os.stat(f"{PROC}/1/ns/net").st_ino == netns
    except OSError:
        return None


_PROBES = (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM))
_FAMILIES = (("ipv4", socket.AF_INET, "0.0.0.0"), ("ipv6", socket.AF_INET6, "::"))


def refused_binds(ports: Iterable[Refusal] | None = None) -> tuple[list[Refusal], int]:
    """Try to bind wildcard addresses and report the binds refused with EADDRINUSE.

    Each probe creates a socket, binds ``0.0.0.0:PORT`` (IPv4) or ``[::]:PORT`` with
    IPV6_V6ONLY (IPv6), without SO_REUSEADDR, and closes it at once: for a few microseconds the
    port is taken, so a service starting at that instant could fail to bind. A full sweep is
    4 x 65535 probes (about 4.5 s on a 2020s x86-64 CPU).

    Args:
        ports: the ``(proto, family, port)`` probes to make; None for every port 1-65535 of
            tcp and udp, IPv4 and IPv6.
    Returns:
        ``(refused probes, how many were denied with EACCES)``: ports below
        ``ip_unprivileged_port_start`` cannot be judged without CAP_NET_BIND_SERVICE.
    Raises:
        BackendError: a bind failed for another reason.
    """
    if ports is None:
        ports = [(proto, family, port) for proto, _ in _PROBES for family, _, _ in _FAMILIES
                 for port in range(1, 65536)]
    kinds = dict(_PROBES)
    families = {name: (af, wildcard) for name, af, wildcard in _FAMILIES}
    refused: list[Refusal] = []
    denied = 0
    unsupported: set[str] = set()
    for probe in ports:
        proto, family, port = probe
        if family in unsupported:
            continue
        af, wildcard = families[family]
        try:
            s = socket.socket(af, kinds[proto])
        except OSError as exc:
            if exc.errno == errno.EAFNOSUPPORT:
                unsupported.add(family)          # IPv6 disabled on this host
                continue
            raise BackendError(f"cannot create a {proto} {family} probe socket: {exc}") from None
        try:
            if af == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((wildcard, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                refused.append(probe)
            elif exc.errno == errno.EACCES:
                denied += 1
            else:
                raise BackendError(f"trial bind of {proto} {family} port {port} failed: "
                                   f"{exc}") from None
        finally:
            s.close()
    return refused, denied
