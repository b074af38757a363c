"""Shared fixtures: real socket holders, cleaned up even when a test fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from holders import start_holder  # noqa: E402


@pytest.fixture(params=["bpf", "proc"])
def fd_scan(request, monkeypatch):
    """Run a test twice: with the BPF iterators (as root) and with the /proc/*/fd scan
    (``PORTSCOPE_FDSCAN=proc``, inherited by CLI runs)."""
    from portscope.owners import bpf
    if request.param == "proc":
        monkeypatch.setenv(bpf.ENV, "proc")
    elif not bpf.usable():
        pytest.skip("BPF iterators cannot run here (not root, no BTF, or a PID namespace)")
    return request.param


@pytest.fixture
def holder():
    """``holder(code, **kw)`` starts a socket holder (see tests/holders.py), stopped at teardown."""
    started = []

    def start(code: str, **kwargs):
        h = start_holder(code, **kwargs)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def run_cli(*args: str, user: str | None = None, input_text: str | None = None,
            timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m portscope ARGS`` as a real process (optionally as ``user`` via setpriv)."""
    cmd = [sys.executable, "-m", "portscope", *args]
    if user:
        cmd = [shutil.which("setpriv"), f"--reuid={user}", "--regid=nogroup", "--clear-groups",
               *cmd]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, input=input_text,
                          timeout=timeout_s, env=env)


@pytest.fixture
def cli():
    """The ``run_cli`` helper."""
    return run_cli
