"""``portscope tui`` as a user starts it: without Textual, without a terminal, on a real
pseudo-terminal (q quits; the terminal is restored, also after a crash)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import termios
import time

import pytest

from conftest import run_cli


def test_without_textual_it_says_how_to_install_it():
    code = ("import sys; sys.modules['textual'] = None; from portscope.cli import main; "
            "sys.exit(main(['tui']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr == ("portscope: error: portscope tui needs Textual: "
                             "pip install 'portscope[tui]'\n")
    assert result.stdout == ""


def test_without_a_terminal_it_refuses_in_one_line():
    result = run_cli("tui")
    assert result.returncode == 3 and result.stderr.count("\n") == 1
    assert "needs a terminal" in result.stderr


@pytest.mark.parametrize("value", ["0", "0.1", "61", "1e3", "+1", " 1", "nan"])
def test_bad_interval_is_a_usage_error(value):
    result = run_cli("tui", "--interval", value)
    assert result.returncode == 2 and "invalid interval" in result.stderr
    assert "Traceback" not in result.stderr


def _run_on_pty(argv, keys: bytes, timeout_s: float = 60.0) -> tuple[int, bytes, list, list]:
    """Run ``argv`` on a new pseudo-terminal (80x24), type ``keys`` once it drew its first
    screen; return (exit code, everything it wrote, termios before, termios after)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    import fcntl
    import struct
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    before = termios.tcgetattr(slave)
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    output = b""
    sent = False
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    output += os.read(master, 65536)
                except OSError:
                    break
            if not sent and b"Listeners" in output:
                time.sleep(0.5)
                os.write(master, keys)
                sent = True
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        after = termios.tcgetattr(slave)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    return code, output, before, after


def test_q_quits_cleanly_and_restores_the_terminal():
    code, output, before, after = _run_on_pty(
        [sys.executable, "-m", "portscope", "tui", "--netns", "host"], b"q")
    assert code == 0, output[-2000:]
    assert b"\x1b[?1049h" in output and output.rfind(b"\x1b[?1049l") > output.rfind(
        b"\x1b[?1049h"), "the alternate screen was left"
    assert before == after, "the terminal modes were not restored"


CRASH = """
import sys
from portscope.tui.app import PortscopeApp
from portscope.tui.source import LiveSource

class Broken(LiveSource):
    def capture(self, view):
        if getattr(self, "served", False):
            raise ZeroDivisionError("a bug in a scan")
        self.served = True
        return super().capture(view)

app = PortscopeApp(Broken("host"))
app.run()
sys.exit(app.return_code)
"""


def test_a_crash_restores_the_terminal():
    code, output, before, after = _run_on_pty([sys.executable, "-c", CRASH], b"r")
    assert code == 1
    assert b"ZeroDivisionError" in output
    assert output.rfind(b"\x1b[?1049l") > output.rfind(b"\x1b[?1049h")
    assert before == after
