"""The holders' process details, from ``/proc/PID/{stat,status,exe,cmdline,cgroup}`` (the
cgroup path is parsed by ``containers.cgroups.parse_cgroup``)."""

from __future__ import annotations

import os
import pwd
from datetime import datetime, timezone
from functools import lru_cache

from ..containers.cgroups import parse_cgroup
from ..types import ProcessInfo

PROC = "/proc"


@lru_cache(maxsize=1)
def _clock() -> tuple[float, int]:
    boot = 0.0
    with open(f"{PROC}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                boot = float(line.split()[1])
                break
    return boot, os.sysconf("SC_CLK_TCK")


@lru_cache(maxsize=512)
def user_name(uid: int) -> str:
    """The name of ``uid`` from the password database, or the number as text."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_stat(pid: int) -> tuple[str, str, int, int, int]:
    """``(comm, state, ppid, flags, starttime in clock ticks since boot)`` from
    ``/proc/PID/stat``.

    Raises:
        FileNotFoundError, ProcessLookupError: the process is gone.
    """
    with open(f"{PROC}/{pid}/stat", "rb") as f:
        data = f.read()
    # comm may contain spaces and parentheses: it ends at the last ')'
    head, _, rest = data.rpartition(b")")
    comm = head.partition(b"(")[2].decode("utf-8", "surrogateescape")
    fields = rest.split()
    return comm, fields[0].decode(), int(fields[1]), int(fields[6]), int(fields[19])


def started_at(starttime_ticks: int) -> datetime:
    """Convert a ``/proc/PID/stat`` start time (clock ticks since boot) to aware UTC."""
    boot, hz = _clock()
    return datetime.fromtimestamp(boot + starttime_ticks / hz, tz=timezone.utc)


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def process_info(pid: int) -> ProcessInfo | None:
    """Details of process ``pid`` from ``/proc``; None when it has exited.

    Fields the caller may not read (exe of another user's process) are None.
    """
    try:
        comm, _state, ppid, _flags, start = read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        exe = os.readlink(f"{PROC}/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        exe = None
    cmdline_text = _read_text(f"{PROC}/{pid}/cmdline")
    cmdline = tuple(cmdline_text.rstrip("\0").split("\0")) if cmdline_text else None
    uid = None
    status = _read_text(f"{PROC}/{pid}/status")
    if status:
        at = status.find("\nUid:")
        if at >= 0:
            uid = int(status[at + 5:].split(None, 1)[0])
    unit, container = parse_cgroup(_read_text(f"{PROC}/{pid}/cgroup") or "")
    return ProcessInfo(pid=pid, ppid=ppid, name=comm, exe=exe, cmdline=cmdline,
                       user=None if uid is None else user_name(uid), uid=uid,
                       started_at=started_at(start), unit=unit,
                       container=None if container is None else container.id)


class InfoReader:
    """``process_info`` of ``pids`` read by a forked child on another CPU while the caller goes
    on (a large listing: the caller decodes the dumps meanwhile, and each process that then
    writes a share of the listing would otherwise read every holder again: about 30 ms per
    500 processes). The child pickles its result into a memfd and exits.
    """

    def __init__(self, pids: list[int]) -> None:
        self._fd = os.memfd_create("portscope-infos", os.MFD_CLOEXEC)
        self._child = os.fork()
        if self._child == 0:
            status = 1
            try:
                import pickle
                data = memoryview(pickle.dumps({pid: process_info(pid) for pid in pids}))
                while data:
                    data = data[os.write(self._fd, data):]
                status = 0
            finally:
                os._exit(status)

    def result(self) -> dict[int, ProcessInfo | None]:
        """Wait for the child: PID -> ``ProcessInfo`` (None: exited); empty when the child
        failed (the caller then reads what it needs itself)."""
        import pickle
        try:
            _, status = os.waitpid(self._child, 0)
            size = os.fstat(self._fd).st_size
            return pickle.loads(os.pread(self._fd, size, 0)) if status == 0 and size else {}
        finally:
            os.close(self._fd)
