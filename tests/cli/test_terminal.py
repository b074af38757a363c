"""Nothing is dropped on a narrow or dumb terminal: every column and every holder's PID is
drawn, whatever TERM and the window width say (the lines run on; the terminal wraps them)."""

from __future__ import annotations

import sys

import pytest

from netns import netns  # noqa: F401  (the fixture)
from terminal import run_on_terminal

TRIO = """
l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
kids = [fork_sleeper(), fork_sleeper()]
ready(kids=kids)
"""


@pytest.mark.parametrize("term,columns", [("dumb", 80), ("dumb", 60), ("xterm", 60),
                                          ("xterm", 40), ("unknown", 60)])
@pytest.mark.parametrize("args,headers", [
    (["--netns", "host"], ["Proto", "Local Address:Port", "State", "PID", "Process", "User"]),
    (["8080", "--netns", "host"],
     ["Proto", "State", "Peer Address:Port", "PID", "Process", "User", "Accepted"]),
    (["list", "-l", "--netns", "host"], ["Recv-Q", "Send-Q", "PID", "Process", "User"]),
])
def test_every_column_and_pid_is_drawn(netns, term, columns, args, headers):
    h = netns.holder(TRIO)
    pids = [h.pid, *h.info["kids"]]
    code, text = run_on_terminal([*netns.prefix(), sys.executable, "-m", "portscope", *args],
                                 columns=columns, term=term)
    assert code == 0, text
    assert all(header in text for header in headers), (headers, text)
    row = next(line for line in text.splitlines() if "127.0.0.1:8080" in line)
    assert ",".join(map(str, pids)) in row, text
    assert "python" in row and "root" in row, text
