"""Run a command on a real pseudo-terminal of a given size and collect what it drew.

``run_on_terminal(argv, columns=60, term="dumb")`` starts ``argv`` with stdout and stderr on the
slave side of a new pty whose window is ``columns`` wide (TIOCSWINSZ), ``TERM`` and
``COLUMNS`` set as asked, and returns ``(exit code, output text)``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios


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
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:                   # EIO: every writer closed the slave side
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=timeout_s)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
