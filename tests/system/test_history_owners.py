"""The owners the change stream keeps between polls (``history/tracker.py``) against real
processes: forks, execs and exits seen through the process events connector without a full
owner scan, new sockets resolved on their own, and always what a full snapshot says."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from portscope.filters import SocketFilter
from portscope.history.sources import Feed
from portscope.history.tracker import OwnerTracker
from portscope.snapshot import take_snapshot
from portscope.types import Proto

from .test_history import listen

# Two listeners: ``keep`` inheritable across exec, ``drop`` close-on-exec (Python's default).
HOLDER = textwrap.dedent("""\
    import os, socket, sys, time
    def listener(inheritable):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.set_inheritable(inheritable)
        return s
    keep, drop = listener(True), listener(False)
    print(os.fstat(keep.fileno()).st_ino, os.fstat(drop.fileno()).st_ino,
          keep.getsockname()[1], flush=True)
    for line in sys.stdin:
        if line.strip() == "fork":
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
        elif line.strip() == "exec":
            os.execv(sys.executable, [sys.executable, "-c",
                     "import sys; print('exec', flush=True); sys.stdin.readline()"])
""")


class Holder:
    """A process holding ``keep`` and ``drop`` (socket inodes) on loopback; ``send`` a
    command (fork, exec) and read its answer line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self.keep, self.drop, self.port = map(int, self.proc.stdout.readline().split())
        self.children: list[int] = []

    def send(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def fork(self) -> int:
        child = int(self.send("fork"))
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in self.children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder():
    h = Holder()
    yield h
    h.close()


@pytest.fixture
def tracker():
    t = OwnerTracker(rescan_s=3600)
    if not t.uses_events:
        t.close()
        pytest.skip("the process events connector needs root in the host's PID namespace")
    yield t
    t.close()


def pids(tracker: OwnerTracker, inode: int) -> list[int]:
    return [o.pid for o in tracker.get(inode)]


def snapshot_pids(inode: int) -> list[int]:
    """The holders of ``inode`` by a full snapshot (an owner scan of every process); none
    when the socket is gone."""
    return sorted({o.pid for s in take_snapshot(SocketFilter.listeners()).sockets
                   if s.inode == inode for o in s.owners})


def until(check, timeout_s: float = 10.0) -> bool:
    """``check()`` until it is true (the kernel's reports are read when they come)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_fork_adds_the_child_and_an_exit_removes_it_without_a_full_scan(tracker, holder):
    tracker.update({holder.keep, holder.drop})
    assert tracker.full_scans == 1
    assert pids(tracker, holder.keep) == pids(tracker, holder.drop) == [holder.pid]
    child = holder.fork()
    assert tracker.update(None) == {holder.keep, holder.drop}   # reported before the pid came
    assert pids(tracker, holder.keep) == sorted([holder.pid, child])
    assert pids(tracker, holder.drop) == sorted([holder.pid, child])
    assert snapshot_pids(holder.keep) == pids(tracker, holder.keep)
    os.kill(child, signal.SIGKILL)
    changed: set[int] = set()

    def exited() -> bool:
        changed.update(tracker.update(None))
        return pids(tracker, holder.keep) == [holder.pid]

    assert until(exited) and changed == {holder.keep, holder.drop}
    assert pids(tracker, holder.drop) == [holder.pid]
    assert tracker.full_scans == 1
    assert tracker.update(None) == set()        # nothing changed since


def test_exec_drops_the_close_on_exec_listener_and_renames_the_holder(tracker, holder):
    tracker.update({holder.keep, holder.drop})
    (before,) = tracker.get(holder.keep)
    assert holder.send("exec") == "exec"
    assert tracker.update(None) == {holder.keep, holder.drop}
    assert tracker.get(holder.drop) == ()
    (after,) = tracker.get(holder.keep)
    assert after.pid == before.pid and after.process.cmdline != before.process.cmdline
    assert after.process.cmdline[-1].endswith("sys.stdin.readline()")
    assert snapshot_pids(holder.drop) == []            # closed with its last descriptor
    assert snapshot_pids(holder.keep) == [after.pid]
    assert tracker.full_scans == 1


def test_new_sockets_get_their_owners_from_the_named_pid_or_a_walk(tracker):
    tracker.update(set())
    assert tracker.full_scans == 1
    named, unnamed = Holder(), Holder()
    try:
        assert tracker.update({named.keep, named.drop}, pids=[named.pid]) == \
            {named.keep, named.drop}
        assert pids(tracker, named.keep) == pids(tracker, named.drop) == [named.pid]
        assert tracker.update({named.keep, named.drop, unnamed.keep, unnamed.drop}) == \
            {unnamed.keep, unnamed.drop}
        assert pids(tracker, unnamed.keep) == [unnamed.pid] == snapshot_pids(unnamed.keep)
        (owner,) = tracker.get(unnamed.drop)
        assert owner.process.exe == os.path.realpath(sys.executable)
        assert tracker.update({named.keep}) == {named.drop, unnamed.keep, unnamed.drop}
        assert tracker.get(unnamed.keep) == ()
        assert tracker.full_scans == 1
    finally:
        named.close()
        unnamed.close()


PREFORK = textwrap.dedent("""\
    import os, socket, sys, time
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    child = os.fork()
    if child == 0:
        time.sleep(120)
        os._exit(0)
    print(os.fstat(s.fileno()).st_ino, child, flush=True)
    sys.stdin.readline()
    os.kill(child, 9)
""")


@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_a_new_socket_of_a_preforked_server_has_parent_and_child(tracker, named):
    tracker.update(set())
    proc = subprocess.Popen([sys.executable, "-c", PREFORK], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        inode, child = map(int, proc.stdout.readline().split())
        tracker.update({inode}, pids=[proc.pid] if named else [])
        assert pids(tracker, inode) == sorted([proc.pid, child]) == snapshot_pids(inode)
        assert tracker.full_scans == 1
    finally:
        proc.stdin.close()
        proc.wait()


def test_without_the_connector_every_update_is_a_full_scan(holder):
    tracker = OwnerTracker(events=False)
    tracker.update({holder.keep})
    child = holder.fork()
    assert tracker.update(None) == {holder.keep}
    assert pids(tracker, holder.keep) == sorted([holder.pid, child])
    assert tracker.full_scans == 2


def test_a_quiet_poll_returns_the_same_view_and_a_change_a_new_one(holder):
    feed = Feed(SocketFilter(port_range=(holder.port, holder.port)), exact=False)
    try:
        feed.snapshot_view()                # the first also looks for BOUND_INACTIVE
        first, _, _ = feed.snapshot_view()
        assert feed.snapshot_view()[0] is first
        child = holder.fork()
        second, _, _ = feed.snapshot_view()
        assert second is not first
        (item,) = second.values()
        assert sorted(p.pid for p in item.owners) == sorted([holder.pid, child])
    finally:
        feed.close()


def two_free_ports() -> int:
    """A port ``p`` with ``p + 1`` free too, below the ephemeral range (there, a loaded host's
    connections hold every other port): a range only this test's sockets use."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 30000)
        try:
            listen(port).close()
            listen(port + 1).close()
            return port
        except OSError:
            continue
    pytest.skip("no two adjacent free ports")


def test_a_poll_for_reported_ports_dumps_only_those_and_the_next_poll_all():
    port = two_free_ports()
    feed = Feed(SocketFilter(port_range=(port, port + 1)), exact=False)
    other = None
    try:
        feed.snapshot_view()
        assert feed.snapshot_view()[0] == {}
        other = subprocess.Popen(       # not reported: the port poll does not dump its port
            [sys.executable, "-c", "import socket, sys; s = socket.socket(); "
             f"s.bind(('127.0.0.1', {port})); s.listen(); print(1, flush=True); "
             "sys.stdin.readline()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        other.stdout.readline()
        reported = listen(port + 1)
        hinted, _, _ = feed.snapshot_view({os.getpid()}, {(Proto.TCP, port + 1)})
        assert [k.port for k in hinted] == [port + 1]
        assert [p.pid for p in hinted[next(iter(hinted))].owners] == [os.getpid()]
        whole, _, _ = feed.snapshot_view()
        assert sorted(k.port for k in whole) == [port, port + 1]
        assert {p.pid for item in whole.values() for p in item.owners} == \
            {os.getpid(), other.pid}
        reported.close()
    finally:
        if other is not None:
            other.kill()
            other.wait()
        feed.close()


def test_a_change_in_one_reply_keeps_the_items_of_the_others(holder):
    feed = Feed(SocketFilter(port_range=(holder.port, holder.port)), exact=False)
    udp = socket.socket(type=socket.SOCK_DGRAM)
    try:
        feed.snapshot_view()
        before, _, _ = feed.snapshot_view()
        (tcp,) = before
        udp.bind(("127.0.0.1", holder.port))
        after, _, _ = feed.snapshot_view()
        assert after[tcp] is before[tcp]            # the TCP reply was not decoded again
        assert [k.proto for k in after if k != tcp] == [Proto.UDP]
    finally:
        udp.close()
        feed.close()
