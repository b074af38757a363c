"""Real socket holders for tests: child processes that open sockets, report them, then wait.

``start_holder(code)`` runs a Python snippet in a new process. The snippet builds sockets and
calls ``ready(**info)``, which prints one JSON line and then blocks until the test ends; every
process the snippet forks dies with it (PR_SET_PDEATHSIG). ``Holder.stop()`` ends the process
group it created, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

PRELUDE = textwrap.dedent("""\
    import ctypes, json, os, signal, socket, sys, time
    _libc = ctypes.CDLL(None, use_errno=True)
    def die_with_parent():
        _libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    def fork_sleeper():
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            while True:
                time.sleep(60)
        return pid
    def ready(**info):
        info.setdefault("pid", os.getpid())
        print(json.dumps(info), flush=True)
        sys.stdin.read()                         # until the test closes our stdin
        os._exit(0)
""")


@dataclass
class Holder:
    """A running holder process and the JSON it reported."""

    proc: subprocess.Popen
    info: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """End the holder and everything it forked (its own process group)."""
        try:                          # the group outlives its leader: end it either way
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()


def start_holder(code: str, *, preexec_user: tuple[int, int] | None = None,
                 timeout_s: float = 10.0) -> Holder:
    """Start ``code`` (after PRELUDE) in a new session and wait for its ``ready()`` line.

    Raises:
        RuntimeError: the snippet exited or printed nothing within ``timeout_s`` seconds.
    """
    def drop():
        if preexec_user:
            os.setgid(preexec_user[1])
            os.setuid(preexec_user[0])

    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=drop if preexec_user else None)
    holder = Holder(proc)
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            holder.stop()
            raise RuntimeError("holder did not become ready")
    line = proc.stdout.readline()
    if not line:
        holder.stop()
        raise RuntimeError(f"holder exited with {proc.wait()}")
    holder.info = json.loads(line)
    return holder
