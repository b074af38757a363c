"""A reader that goes away never changes the answer (DESIGN.md section 5).

Every command runs as a real process in a private network namespace, its stdout a real pipe:
read to the end (the reference), closed before portscope writes (``portscope | true``), or
closed after the first line (``portscope | head -1``). The exit code must be the same in each
case, and stderr must not carry Python's complaints about the broken pipe. Each case runs
with Python's stdout buffered and unbuffered (``PYTHONUNBUFFERED``): the pipe breaks at exit
in the one, at the first write in the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netns import netns  # noqa: F401  (the fixture)

NOISE = ("Exception ignored", "BrokenPipe", "Traceback", "internal error")

HOLD = """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)       # survives portscope kill without --force
l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
ready()
"""

# (arguments, the exit code a full read gets)
COMMANDS = [
    ([], 0),
    (["8080"], 0),
    (["9"], 1),                                    # nothing there: a warning, no stdout
    (["list", "-a"], 0),
    (["list", "-l", "--csv"], 0),
    (["--json"], 0),
    (["explain", "8080"], 0),
    (["check", "127.0.0.1:8080"], 1),
    (["check", "127.0.0.1:8080", "--json"], 1),
    (["services", "443"], 0),
    (["services", "60000"], 1),
    (["audit", "--fail-on", "medium"], 1),          # 0.0.0.0:5353 is exposed
    (["audit", "--sarif", "--fail-on", "medium"], 1),
    (["kill", "8080", "--yes", "--timeout", "0.3"], 1),
    (["kill", "8080", "--dry-run"], 0),
]


def run(ns, args, *, stdout_mode: str, unbuffered: bool) -> tuple[int, str, str]:
    """Run ``portscope ARGS`` in ``ns`` with stdout a pipe that is read to the end
    (``"read"``), closed before it starts (``"closed"``) or after one line (``"head"``).
    Returns (exit code, what was read, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    cmd = [*ns.prefix(), sys.executable, "-m", "portscope", *args]
    read_end, write_end = os.pipe()
    if stdout_mode == "closed":
        os.close(read_end)
    proc = subprocess.Popen(cmd, stdout=write_end, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.DEVNULL)
    os.close(write_end)
    got = b""
    if stdout_mode != "closed":
        with os.fdopen(read_end, "rb") as reader:
            got = reader.readline() if stdout_mode == "head" else reader.read()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, got.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("stdout_mode", ["closed", "head"])
def test_exit_code_does_not_depend_on_the_reader(netns, stdout_mode, unbuffered):
    netns.holder(HOLD)
    for args, expected in COMMANDS:
        code, _, err = run(netns, args, stdout_mode="read", unbuffered=unbuffered)
        assert code == expected, (args, err)
        code, _, err = run(netns, args, stdout_mode=stdout_mode, unbuffered=unbuffered)
        assert code == expected, (args, stdout_mode, err)
        assert not any(word in err for word in NOISE), (args, err)


def test_kill_through_head_still_acts_and_reports(netns):
    """``portscope kill PORT --yes | head -1``: the plan's first line is read, the holders
    are still signalled, and the exit code says the port is still held."""
    h = netns.holder(HOLD)
    code, first, err = run(netns, ["kill", "8080", "--yes", "--timeout", "0.3"],
                           stdout_mode="head", unbuffered=False)
    assert first.startswith("port 8080:"), first
    assert code == 1 and not any(word in err for word in NOISE), err
    status = open(f"/proc/{h.pid}/status").read()
    sigign = int(next(line for line in status.splitlines()
                      if line.startswith("SigIgn:")).split()[1], 16)
    assert sigign & (1 << 14), "the holder still ignores SIGTERM (it was signalled, survived)"


@pytest.mark.parametrize("fd", [1, 2])
def test_closed_descriptor_is_not_reused(netns, fd):
    """Started with stdout or stderr closed (``portscope >&-``): same answer, no crash, and
    no socket or file portscope opens lands on the closed descriptor."""
    netns.holder(HOLD)
    cmd = [*netns.prefix(), "sh", "-c", f'exec "$@" {fd}>&-', "sh",
           sys.executable, "-m", "portscope", "check", "127.0.0.1:8080"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert not any(word in result.stderr for word in NOISE), result.stderr


@pytest.mark.parametrize("unbuffered", [False, True])
def test_the_command_ends_at_once_with_its_output_whole(netns, tmp_path, unbuffered):
    """``portscope`` ends with ``os._exit`` once it has answered (``cli.run``): what sat in
    the stdout buffer still reaches a regular file whole, the exit code is main's, and the
    listing it kept to the end (``common.keep``) is not lost."""
    netns.holder(HOLD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    path = tmp_path / "listing.json"
    with open(path, "w") as out:
        done = subprocess.run([*netns.prefix(), sys.executable, "-m", "portscope", "list",
                               "-a", "--json"], stdout=out, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(path.read_text())
    assert {(s["proto"], s["local"]["port"], s["state"]) for s in doc["sockets"]} >= {
        ("tcp", 8080, "LISTEN"), ("tcp", 8080, "ESTABLISHED"), ("udp", 5353, "UNCONN")}
    missing = subprocess.run([*netns.prefix(), sys.executable, "-m", "portscope", "9"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 1 and "no socket on local port 9" in missing.stderr


def test_keep_keeps_only_when_the_process_ends_at_once():
    """``common.keep`` holds nothing for a caller of ``cli.main`` in its own process."""
    from portscope.cli import common
    assert common._kept is None
    common.keep(object())
    assert common._kept is None
