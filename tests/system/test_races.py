"""Races: processes and sockets that come and go while a snapshot is taken (RC1-RC3, RC12)."""

from __future__ import annotations

import os

import pytest

import portscope
from portscope import SocketFilter, State


@pytest.mark.usefixtures("fd_scan")
def test_snapshots_under_fork_churn_never_fail_or_misattribute(holder):
    h = holder("""
        import random
        if os.fork() == 0:                   # the churner, forked before the listener exists
            die_with_parent()
            while True:                      # 20 short-lived children at a time, 30 sockets each
                kids = []
                for _ in range(20):
                    pid = os.fork()
                    if pid == 0:
                        socks = [socket.socket() for _ in range(30)]
                        for s in socks: s.bind(("127.0.0.1", 0))
                        time.sleep(random.random() / 50)
                        os._exit(0)
                    kids.append(pid)
                for pid in kids: os.waitpid(pid, 0)
        keep = socket.socket(); keep.bind(("127.0.0.1", 0)); keep.listen()
        ready(port=keep.getsockname()[1])
    """)
    for _ in range(30):
        snap = portscope.take_snapshot(SocketFilter(states=frozenset({State.LISTEN,
                                                                      State.BOUND_INACTIVE})))
        for sock in snap.sockets:
            for owner in sock.owners:
                # re-verify: a living owner still holds that inode (or exited meanwhile)
                try:
                    links = {os.readlink(f"/proc/{owner.pid}/fd/{owner.fd}")}
                except (FileNotFoundError, ProcessLookupError):
                    continue
                assert links == {f"socket:[{sock.inode}]"}
        listening = [s for s in snap.sockets if s.local.port == h.info["port"]]
        assert [o.pid for s in listening for o in s.owners] == [h.pid]
