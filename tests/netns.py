"""Private network namespaces for system tests, cleaned up even when a test fails.

``NetNS()`` creates a namespace with ``ip netns add`` and brings ``lo`` up. In it:
``holder(code)`` starts a socket holder (tests/holders.py; the snippet enters the namespace
with setns() first, then optionally drops to another user), ``portscope(*args)`` runs the CLI,
``python(code)`` runs a snippet to completion, ``sysctl(name, value)`` sets a per-namespace
sysctl. ``close()`` stops every holder it started (each by its own process group) and deletes
the namespace. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from holders import Holder, start_holder

_COUNTER = itertools.count()
NOBODY = (65534, 65534)


def can_use_netns() -> bool:
    """True when this process may create network namespaces (root with ``ip`` available)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


class NetNS:
    """A private network namespace named ``pstest-<pid>-<n>``, followed by ``suffix``."""

    def __init__(self, suffix: str = "") -> None:
        self.name = f"pstest-{os.getpid()}-{next(_COUNTER)}{suffix}"
        self.holders: list[Holder] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True,
                           capture_output=True)
        except subprocess.CalledProcessError:
            self.close()
            raise

    def prefix(self, user: str | None = None) -> list[str]:
        """The argv prefix running a command in the namespace, as ``user`` if given."""
        cmd = ["ip", "netns", "exec", self.name]
        if user:
            cmd += [shutil.which("setpriv"), f"--reuid={user}", "--regid=nogroup",
                    "--clear-groups"]
        return cmd

    def run(self, *cmd: str, user: str | None = None, input_text: str | None = None,
            timeout_s: float = 60) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the namespace to completion."""
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run([*self.prefix(user), *cmd], capture_output=True, text=True,
                              input=input_text, timeout=timeout_s, env=env)

    def portscope(self, *args: str, user: str | None = None, input_text: str | None = None,
                  timeout_s: float = 60) -> subprocess.CompletedProcess:
        """``python -m portscope ARGS`` in the namespace."""
        return self.run(sys.executable, "-m", "portscope", *args, user=user,
                        input_text=input_text, timeout_s=timeout_s)

    def portscope_json(self, *args: str, user: str | None = None) -> tuple[int, dict]:
        """Run with ``--json``; return ``(exit code, document)``."""
        result = self.portscope(*args, "--json", user=user)
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def python(self, code: str, user: str | None = None,
               pidns: bool = False) -> subprocess.CompletedProcess:
        """Run a Python snippet in the namespace to completion; with ``pidns``, also in a new
        PID namespace with its own /proc (an owner scan then reads only its processes)."""
        isolate = ["unshare", "--pid", "--fork", "--mount-proc"] if pidns else []
        return self.run(*isolate, sys.executable, "-c", textwrap.dedent(code), user=user)

    def sysctl(self, name: str, value: str) -> None:
        """Set ``net.*`` sysctl ``name`` (dotted) inside the namespace only."""
        path = "/proc/sys/" + name.replace(".", "/")
        self.run("sh", "-c", f"echo '{value}' > {path}").check_returncode()

    def holder(self, code: str, *, user: tuple[int, int] | None = None) -> Holder:
        """Start a holder (see tests/holders.py) inside the namespace; as ``user`` = (uid,
        gid) after entering it. Stopped by ``close()``."""
        enter = (f"_nsfd = os.open({'/run/netns/' + self.name!r}, os.O_RDONLY)\n"
                 "assert _libc.setns(_nsfd, 0x40000000) == 0   # CLONE_NEWNET\n"
                 "os.close(_nsfd)\n")
        if user:   # then dumpable again, as a process started as that user would be
            enter += (f"os.setgroups([]); os.setgid({user[1]}); os.setuid({user[0]})\n"
                      "_libc.prctl(4, 1)   # PR_SET_DUMPABLE\n")
        holder = start_holder(enter + textwrap.dedent(code))
        self.holders.append(holder)
        return holder

    def close(self) -> None:
        """Stop the holders and everything they forked (each holder's own process group, even
        when the holder itself already exited), then delete the namespace."""
        for holder in self.holders:
            try:
                os.killpg(holder.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass             # the whole group is gone already
            holder.stop()
        self.holders.clear()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def netns():
    """A fresh ``NetNS``, closed after the test whatever happens."""
    if not can_use_netns():
        pytest.skip("needs root and ip(8) to create network namespaces")
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.close()
