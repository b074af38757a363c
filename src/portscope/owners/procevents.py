"""Which processes forked, exec'd or exited: the kernel's process events connector.

Source: a ``NETLINK_CONNECTOR`` socket joined to ``CN_IDX_PROC`` (``PROC_CN_MCAST_LISTEN``;
needs CAP_NET_ADMIN in the initial user and PID namespace, i.e. root on the host; the kernel
needs ``CONFIG_PROC_EVENTS``). Each ``proc_event`` names the process (thread group) it is
about; thread creations and thread exits are dropped here. Reports the socket buffer could not
hold (ENOBUFS) are counted in ``lost``: a reader then has to look at every process again.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1

PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")           # idx, val, seq, ack, len, flags
_EVENT_HEAD = struct.Struct("=IIQ")          # what, cpu, timestamp_ns
_FOUR = struct.Struct("=iiii")               # fork: parent pid, tgid, child pid, tgid
_TWO = struct.Struct("=ii")                  # exec / exit: pid, tgid
_NLMSG_DONE = 3
_BODY = _NLMSGHDR.size + _CN_MSG.size        # where the proc_event starts
#: receive buffer asked for (as root, beyond rmem_max): room for ~50,000 events between reads
RCVBUF_BYTES = 4 << 20


class ProcEvent(NamedTuple):
    """One process event: ``kind`` is ``"fork"``, ``"exec"`` or ``"exit"``; ``pid`` the
    process (thread group id) it is about (the child for a fork); ``parent`` the forking
    process for a fork, else None."""

    kind: str
    pid: int
    parent: int | None = None


def parse(buf: bytes) -> list[ProcEvent]:
    """The fork, exec and exit events of processes (not threads) in one datagram of the
    connector (``nlmsghdr`` + ``cn_msg`` + ``proc_event`` per message); other events are
    skipped, as is anything too short to hold what it claims."""
    events = []
    offset = 0
    while offset + _BODY + _EVENT_HEAD.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size or offset + length > len(buf):
            break
        if kind == _NLMSG_DONE:
            idx, val = _CN_MSG.unpack_from(buf, offset + _NLMSGHDR.size)[:2]
            at = offset + _BODY + _EVENT_HEAD.size
            if (idx, val) == (CN_IDX_PROC, CN_VAL_PROC):
                what = _EVENT_HEAD.unpack_from(buf, offset + _BODY)[0]
                if what == PROC_EVENT_FORK and at + _FOUR.size <= offset + length:
                    _ppid, parent, child, child_tgid = _FOUR.unpack_from(buf, at)
                    if child == child_tgid:             # a process, not a thread
                        events.append(ProcEvent("fork", child, parent))
                elif what in (PROC_EVENT_EXEC, PROC_EVENT_EXIT) and \
                        at + _TWO.size <= offset + length:
                    pid, tgid = _TWO.unpack_from(buf, at)
                    if what == PROC_EVENT_EXEC:
                        events.append(ProcEvent("exec", tgid))
                    elif pid == tgid:                   # the process, not one of its threads
                        events.append(ProcEvent("exit", tgid))
        offset += (length + 3) & ~3
    return events


class ProcEvents:
    """A subscription to the process events connector; read it with ``drain()``.

    Raises (from the constructor):
        OSError: no connector (EPROTONOSUPPORT), not permitted (EPERM: not root, or not in the
            host's PID namespace).
    """

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             NETLINK_CONNECTOR)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF_BYTES)    # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.bind((0, CN_IDX_PROC))
            op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(message), _NLMSG_DONE, 0, 0,
                                     os.getpid()) + message)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.lost = 0

    def drain(self) -> list[ProcEvent]:
        """Every event that came in since the last call, in order (without waiting). A
        buffer overrun since then counts in ``lost``."""
        events: list[ProcEvent] = []
        while True:
            try:
                buf = self._sock.recv(1 << 16)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost += 1              # the kernel dropped reports: look again at all
                continue
            events.extend(parse(buf))

    def close(self) -> None:
        """Leave the subscription."""
        self._sock.close()
