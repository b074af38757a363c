"""Run a command on a real pseudo-terminal of a given size and collect what it drew.

``run_on_terminal(argv, columns=60, term="dumb")`` starts ``argv`` with stdout and stderr on the
slave side of a new pty whose window is ``columns`` wide (TIOCSWINSZ), ``TERM`` and
``COLUMNS`` set as asked, and returns ``(exit code, output text)``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def run_on_terminal(argv: list[str], *, columns: int = 80, term: str | None = None,
                    env_columns: bool = True, timeout_s: float = 60) -> tuple[int, str]:
    """Run ``argv`` on a ``columns``-wide pty; ``term`` sets TERM (None: leave it unset),
    ``env_columns`` also sets COLUMNS. Returns (exit code, everything written)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("TERM", "COLUMNS", "LINES")}
    if term is not None:
        env["TERM"] = term
    if env_columns:
        env["COLUMNS"] = str(columns)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                env=env)
    except BaseException:
        os.close(slave)
        os.close(master)
        raise
    # The slave side stays open here until the command ended and its output was read: once
    # every writer closed it, a read of the master fails (EIO) and may come before the last
    # of the output reached the master (the pty hands it over in a kernel worker).
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        ended_at = None
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                chunks.append(os.read(master, 65536))
                continue
            if ended_at is not None and time.monotonic() - ended_at > 0.2:
                break                       # ended, and nothing came for 0.2 s since
            if ended_at is None and proc.poll() is not None:
                ended_at = time.monotonic()
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{argv} ran over {timeout_s} s")
    finally:
        os.close(slave)
        os.close(master)
        code = proc.wait(timeout=timeout_s)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
