"""The CLI's standard streams: a reader that goes away never changes the answer.

``portscope kill 8080 --yes | head -1`` must exit as it would without the pipe. Python raises
``BrokenPipeError`` at the first write after the reader left (or at exit, when the output sat
in a buffer), which would end the command early and lose its exit code. ``guarded()`` wraps
the process's stdout and stderr so that, once their reader is gone, further output is
discarded (the descriptor then points to ``/dev/null``) and the command runs on to its answer.

It also opens ``/dev/null`` on a standard descriptor the caller closed (``portscope >&-``):
otherwise the next socket or file portscope opens would land on descriptor 1 and be written
to as if it were stdout.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


class _DiscardingWhenGone(io.FileIO):
    """A standard descriptor that turns into ``/dev/null`` when its reader has gone (EPIPE)."""

    def write(self, data) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.dup2(devnull, self.fileno(), inheritable=False)
            finally:
                os.close(devnull)
            return memoryview(data).nbytes


def _ensure_open(fd: int) -> None:
    """Open ``/dev/null`` on standard descriptor ``fd`` when the caller closed it."""
    try:
        os.fstat(fd)
    except OSError:
        devnull = os.open(os.devnull, os.O_RDWR)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)


def _guard(stream, fd: int) -> io.TextIOWrapper:
    """A text stream on ``fd`` with ``stream``'s encoding and buffering (none under
    ``python -u`` / PYTHONUNBUFFERED, as there), writing through ``_DiscardingWhenGone``."""
    if stream is not None:
        stream.flush()
    raw = _DiscardingWhenGone(fd, "w", closefd=False)
    unbuffered = isinstance(getattr(stream, "buffer", None), io.RawIOBase)
    return io.TextIOWrapper(
        raw if unbuffered else io.BufferedWriter(raw),
        encoding=getattr(stream, "encoding", None) or "utf-8",
        errors=getattr(stream, "errors", None) or "strict",
        line_buffering=getattr(stream, "line_buffering", fd == 2),
        write_through=getattr(stream, "write_through", False))


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Within the block, ``sys.stdout`` and ``sys.stderr`` discard output once their reader
    has gone, instead of raising ``BrokenPipeError``; on leaving, they are flushed and the
    previous stream objects restored. A stream that is not the process's own (a caller's
    capture, as in tests) is left alone."""
    for fd in (0, 1, 2):
        _ensure_open(fd)
    saved = {}
    for name, fd, original in (("stdout", 1, sys.__stdout__), ("stderr", 2, sys.__stderr__)):
        current = getattr(sys, name)
        if current is original:
            saved[name] = current
            setattr(sys, name, _guard(current, fd))
    try:
        yield
    finally:
        for name, previous in saved.items():
            getattr(sys, name).flush()
            setattr(sys, name, previous)
