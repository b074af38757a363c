"""A netlink dump received ahead, by a forked child, while this process does other work.

The CLI starts the unix_diag dump of its own network namespace first thing
(``prefetch_unix``), when its arguments ask for a UNIX listing (``-x``): the kernel's part of
the dump (about 40 ms at 50,000 sockets, inside ``recv``) then runs in another process while
Python imports the command, and ``linux_netlink.collect_unix`` takes the dump (``take``) and
decodes each part of the reply as it arrives. In one process on an idle 2-CPU machine, at
50,252 sockets: dump and decoding 115 ms in-process, 80 ms received ahead (started at the
same time, decoded as it arrived). In the CLI the gain is smaller (about 20 ms of 560): the
other CPU is shared with the BPF descriptor walk, also started at the CLI's start, and the
holders' details read by a forked child.

A process, not a thread: a thread back from ``recv`` waits for the GIL, up to the switch
interval (5 ms), while the main thread runs Python. Measured at 100,000 UNIX sockets (294
datagrams) beside a main thread running Python: 235 ms for a thread's dump (171 ms with a
0.2 ms switch interval), 105 ms for a child's; 97 ms for a thread beside an idle main thread.

The child sends the request and reads the reply with ``_netlink_io.receive`` (every message
checked; the request sent again while the kernel flags the reply interrupted,
``MAX_DUMP_ATTEMPTS`` times at most), and hands each datagram over once checked: its bytes
appended to a memfd, then a record on a pipe (``_RECORD``, two signed 32-bit integers):

    ``(n > 0, 0)``        n more bytes of the reply in the memfd: one datagram
    ``(0, flags)``        the end of a reply: ``_INTERRUPTED`` (the kernel flagged it),
                          ``_LAST`` (no other reply follows)
    ``(_FAILED, n)``      the dump failed: n bytes of message follow on the pipe
                          (``_UNAVAILABLE``: ``BackendUnavailable``)

Linux only (memfd, netlink); anything that keeps the child from starting leaves no prefetch.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable, Iterator

from ..errors import BackendError, BackendUnavailable
from . import _netlink_io as nlio
from . import _netlink_wire as w

_RECORD = struct.Struct("=ii")
_INTERRUPTED, _LAST = 1, 2
_FAILED, _UNAVAILABLE = -1, -2
_PIPE_READ = 1 << 16


class DumpAhead:
    """A dump being received by a forked child.

    Args:
        request: the netlink dump request to send (``_netlink_wire``).
        min_length: the least length of a socket message (``_netlink_io.receive``).
    Raises:
        OSError: no memfd, pipe or fork here.

    Attributes:
        request: the request sent.
        netns: the inode of the network namespace dumped (the calling thread's at the
            start; the child is forked from it), None when unknown.
    """

    def __init__(self, request: bytes, min_length: int) -> None:
        self.request = request
        self._mem = os.memfd_create("portscope-dump", os.MFD_CLOEXEC)
        try:
            self._pipe, write = os.pipe2(os.O_CLOEXEC)
        except OSError:
            os.close(self._mem)
            raise
        try:
            self._pid = os.fork()
        except OSError:
            for fd in (self._mem, self._pipe, write):
                os.close(fd)
            raise
        if self._pid == 0:
            _child(request, min_length, self._mem, write)
        os.close(write)
        self._buffer = b""
        self._offset = 0
        self._open = True
        try:        # namespaces.own_inode(), without importing namespaces yet (25 ms)
            self.netns: int | None = os.stat("/proc/thread-self/ns/net").st_ino
        except OSError:
            self.netns = None

    def check_start(self) -> None:
        """Wait for the reply's first record: raise a failure the child met before any
        datagram (no unix_diag in this kernel, no netlink) as ``collect_unix`` would.

        Raises:
            BackendUnavailable, BackendError: as the child met them.
        """
        while len(self._buffer) < _RECORD.size:
            self._read()
        if _RECORD.unpack_from(self._buffer)[0] < 0:
            self._next()

    def reply(self) -> Reply:
        """The next reply (one per request sent), to be iterated before the next one."""
        return Reply(self._next)

    def close(self) -> None:
        """Close the pipe and memfd, end the child if it still runs and reap it."""
        if not self._open:
            return
        self._open = False
        os.close(self._pipe)
        os.close(self._mem)
        if os.waitpid(self._pid, os.WNOHANG)[0] == 0:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)

    def _read(self) -> None:
        """Read the pipe once (waiting for the child)."""
        more = os.read(self._pipe, _PIPE_READ)
        if not more:
            self.close()
            raise BackendError("netlink sock_diag: the process receiving the dump ended "
                               "before its end")
        self._buffer += more

    def _next(self) -> bytes | int:
        """Every datagram that arrived since the last call, as one run of bytes (waiting
        for one when none did), or the flags of the reply's end.

        Raises:
            BackendUnavailable, BackendError: the child's failure, or the child ended.
        """
        while True:
            buffer, at, size = self._buffer, 0, 0
            while at + _RECORD.size <= len(buffer):
                length, value = _RECORD.unpack_from(buffer, at)
                if length <= 0:
                    break
                size += length
                at += _RECORD.size
            if size:
                self._buffer = buffer[at:]
                data = os.pread(self._mem, size, self._offset)
                if len(data) != size:
                    self.close()
                    raise BackendError("netlink sock_diag: the dump received ahead is short")
                self._offset += size
                return data
            if len(buffer) >= _RECORD.size:
                length, value = _RECORD.unpack_from(buffer)
                if length == 0:
                    self._buffer = buffer[_RECORD.size:]
                    return value
                if len(buffer) >= _RECORD.size + value:
                    message = buffer[_RECORD.size:_RECORD.size + value].decode(
                        "utf-8", "replace")
                    self.close()
                    raise (BackendUnavailable if length == _UNAVAILABLE else
                           BackendError)(message)
            self._read()


class Reply:
    """One reply of a ``DumpAhead``: iterate it once for its datagrams as they arrive
    (several at once concatenated: a reply's messages keep their 4-byte alignment across
    datagrams); then ``chunks`` holds what was iterated, ``interrupted`` tells whether the
    kernel flagged it (NLM_F_DUMP_INTR), and ``last`` whether no other reply follows.
    """

    def __init__(self, next_part: Callable[[], bytes | int]) -> None:
        self._next = next_part
        self.chunks: list[bytes] = []
        self.interrupted = False
        self.last = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            part = self._next()
            if isinstance(part, int):
                self.interrupted = bool(part & _INTERRUPTED)
                self.last = bool(part & _LAST)
                return
            self.chunks.append(part)
            yield part


def _child(request: bytes, min_length: int, mem: int, pipe: int):
    """The child's work (never returns): the dump, handed over as the module says."""
    status = 1
    try:
        try:
            def hand(chunk: bytes) -> None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(mem, view):]
                os.write(pipe, _RECORD.pack(len(chunk), 0))

            sock = nlio.open_diag_socket()
            for attempt in range(1, nlio.MAX_DUMP_ATTEMPTS + 1):
                held: list[bytes] = []
                _, interrupted = nlio.receive(_checked(nlio.request_chunks(sock, request), held,
                                                       hand), min_length)
                hand(held.pop())
                last = not interrupted or attempt == nlio.MAX_DUMP_ATTEMPTS
                os.write(pipe, _RECORD.pack(0, (_INTERRUPTED if interrupted else 0)
                                            | (_LAST if last else 0)))
                if last:
                    break
            status = 0
        except BackendError as exc:
            message = str(exc).encode("utf-8", "replace")[:1024]
            os.write(pipe, _RECORD.pack(_UNAVAILABLE if isinstance(exc, BackendUnavailable)
                                        else _FAILED, len(message)) + message)
    except BaseException:  # noqa: BLE001 - the parent left (a closed pipe) or ^C: just end
        pass
    finally:
        os._exit(status)


def _checked(datagrams: Iterator[bytes], held: list[bytes], hand: Callable[[bytes], None]
             ) -> Iterator[bytes]:
    """``datagrams``, each handed over once ``receive`` has checked it, that is when it asks
    for the next; the last is left in ``held`` (the caller hands it once ``receive``
    returned)."""
    for chunk in datagrams:
        if held:
            hand(held.pop())
        held.append(chunk)
        yield chunk


_prefetched: DumpAhead | None = None


def prefetch_unix() -> None:
    """Start the unix_diag dump of the caller's network namespace (``linux_netlink``'s
    request) in a child, for the next ``take``; nothing when the child cannot be started."""
    global _prefetched
    drop()
    try:
        _prefetched = DumpAhead(w.unix_diag_req(w.UNIX_SHOW), w.UNIX_ATTRS_OFFSET)
    except (OSError, AttributeError):        # AttributeError: no os.memfd_create here
        _prefetched = None


def take(request: bytes, netns: int | None) -> DumpAhead | None:
    """The dump ``prefetch_unix`` started, once, when it is of ``request`` in the namespace
    ``netns``; else None (a dump of something else is dropped)."""
    global _prefetched
    dump, _prefetched = _prefetched, None
    if dump is not None and (dump.request != request or netns is None
                             or dump.netns != netns):
        dump.close()
        return None
    return dump


def drop() -> None:
    """End a prefetched dump nobody took (the CLI calls this when its command ends)."""
    global _prefetched
    dump, _prefetched = _prefetched, None
    if dump is not None:
        dump.close()
