"""Accepted connections counted without building them (``snapshot.listeners_accepted``, the TUI's
listeners view) equal those of ``portscope PORT`` (``accepted_connections`` over a snapshot of
the port): real listeners, real clients, an SO_REUSEPORT group of two processes, a dual-stack
listener with IPv4-mapped clients, a client left waiting in an accept queue."""

from __future__ import annotations

import os
import socket
import time

import pytest
from netns import netns  # noqa: F401  (the fixture)

from portscope.backends import linux_netlink
from portscope.filters import SocketFilter
from portscope.snapshot import (ACCEPTED_STATES, accepted_connections, listeners_accepted,
                                take_snapshot)
from portscope.types import LISTENER_STATES, Proto

# Three listeners held by a process that accepts on them in threads: an SO_REUSEPORT group
# (its own listener here, one in a forked child that closed the inherited one: the group's
# connections are told apart by holder), a dual-stack [::] listener, and a 127.0.0.1 one that
# accepts a single connection (the next client waits in its accept queue).
ACCEPTING = """
import threading
kept = []                                   # every accepted socket, held until the end
def accept_all(listener, limit=None):
    def run():
        for _ in iter(int, 1) if limit is None else range(limit):
            kept.append(listener.accept()[0])
    threading.Thread(target=run, daemon=True).start()
def reuseport(port=0):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(('127.0.0.1', port))
    s.listen(64)
    return s
group = reuseport()
port = group.getsockname()[1]
child = os.fork()
if child == 0:
    die_with_parent()
    group.close()
    accept_all(reuseport(port))
    while True:
        time.sleep(60)
dual = socket.socket(socket.AF_INET6)
dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
dual.bind(('::', 0))
dual.listen(64)
one = socket.socket()
one.bind(('127.0.0.1', 0))
one.listen(64)
accept_all(group)
accept_all(dual)
accept_all(one, limit=1)
ready(group=port, dual=dual.getsockname()[1], one=one.getsockname()[1], child=child)
"""


def port_view(port: int, netns: str | None = None) -> dict[int, int]:
    """``portscope PORT``'s Accepted: listener inode -> count."""
    snap = take_snapshot(SocketFilter(port_range=(port, port)), netns=netns)
    return {snap.sockets[i].inode: len(conns)
            for i, conns in accepted_connections(snap.sockets).items()}


def counted(netns: str | None = None, backend: str | None = None) -> dict[int, int]:
    """``listeners_accepted``'s counts: listener inode -> count."""
    snap, counts = listeners_accepted(netns, backend=backend)
    assert all(s.state in LISTENER_STATES for s in snap.sockets)
    return {snap.sockets[i].inode: n for i, n in counts.items()}


def settle(ports: dict[str, int], expected: dict[str, int]) -> None:
    """Wait until the holder accepted what it will (port name -> accepted count)."""
    deadline = time.monotonic() + 10
    while True:
        got = {name: sum(port_view(ports[name]).values()) for name in expected}
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return
        time.sleep(0.05)


@pytest.fixture
def accepting(holder):
    """The ACCEPTING holder with clients connected: 12 to the group, 2 IPv4 and 1 IPv6 to the
    dual-stack listener, 2 to the single-accept one (one waits). Yields the holder's info."""
    h = holder(ACCEPTING)
    info = h.info
    clients = [socket.create_connection(("127.0.0.1", info["group"])) for _ in range(12)]
    clients += [socket.create_connection(("127.0.0.1", info["dual"])) for _ in range(2)]
    clients.append(socket.create_connection(("::1", info["dual"])))
    clients += [socket.create_connection(("127.0.0.1", info["one"])) for _ in range(2)]
    try:
        settle(info, {"group": 12, "dual": 3, "one": 1})
        yield info
    finally:
        for c in clients:
            c.close()


def test_counts_equal_portscope_port(accepting):
    info = accepting
    counts = counted()
    for name in ("group", "dual", "one"):
        expected = port_view(info[name])
        assert {inode: counts[inode] for inode in expected} == expected, name
    group = port_view(info["group"])
    assert len(group) == 2 and sum(group.values()) == 12     # one listener per process
    snap = take_snapshot(SocketFilter(port_range=(info["group"], info["group"])))
    for i, conns in accepted_connections(snap.sockets).items():   # each its own holder's
        holders = {o.pid for o in snap.sockets[i].owners}
        assert all({o.pid for o in c.owners} == holders for c in conns)
    assert sorted(port_view(info["dual"]).values()) == [3]   # IPv4-mapped ones on [::]
    assert sorted(port_view(info["one"]).values()) == [1]    # the waiting one is not


def test_counts_through_procfs_equal_portscope_port(accepting):
    """Another backend than netlink counts from a snapshot of the connections."""
    counts = counted(backend="procfs")
    for name in ("group", "dual", "one"):
        expected = port_view(accepting[name])
        assert {inode: counts[inode] for inode in expected} == expected, name


def test_counts_in_another_namespace(netns):
    h = netns.holder("""
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)
        clients = [socket.create_connection(s.getsockname()) for _ in range(3)]
        accepted = [s.accept()[0] for _ in range(2)]
        ready(port=s.getsockname()[1])
        """)
    port = h.info["port"]
    inode = os.stat(f"/run/netns/{netns.name}").st_ino
    snap = take_snapshot(SocketFilter(port_range=(port, port)), netns="all")
    ours = [s for s in snap.sockets if s.netns == inode]
    expected = {ours[i].inode: len(c) for i, c in accepted_connections(ours).items()}
    assert list(expected.values()) == [2]
    for spec in ("all", netns.name):
        counts = counted(netns=spec)
        assert {i: counts[i] for i in expected} == expected, spec


def test_held_connections_take_exactly_the_ports_asked_for():
    """More scattered ports than the kernel filter's ranges (merged ones take ports not asked
    for, dropped again): the result equals a full dump's held connections on those ports."""
    listeners = []
    for _ in range(2 * linux_netlink.MAX_PORT_RANGES + 10):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        listeners.append(s)
    clients = [socket.create_connection(s.getsockname()) for s in listeners]
    accepted = [s.accept()[0] for s in listeners[::3]]
    try:
        ports = sorted(s.getsockname()[1] for s in listeners)
        asked = set(ports[::2])
        assert len(linux_netlink.port_ranges(asked)) == linux_netlink.MAX_PORT_RANGES
        found, _warnings = linux_netlink.held_connections(asked, ACCEPTED_STATES)
        dumped, _ = linux_netlink.dump(SocketFilter(protos=frozenset({Proto.TCP}),
                                                    states=ACCEPTED_STATES))
        expected: dict[tuple[int, str], list[int]] = {}
        for s in dumped:
            if s.inode and s.local.port in asked:
                expected.setdefault((s.local.port, s.local.address), []).append(s.inode)
        assert {k: sorted(v) for k, v in found.items()} == \
            {k: sorted(v) for k, v in expected.items()}
        mine = {a.getsockname()[1] for a in accepted} & asked
        assert mine and {port for port, _ in found} == mine
    finally:
        for s in (*accepted, *clients, *listeners):
            s.close()


def test_port_ranges():
    assert linux_netlink.port_ranges([]) == []
    assert linux_netlink.port_ranges([80, 81, 82, 443, 8080]) == [(80, 82), (443, 443),
                                                                   (8080, 8080)]
    # the smallest gaps are closed first
    assert linux_netlink.port_ranges([1, 3, 100, 200, 1000], limit=3) == [
        (1, 100), (200, 200), (1000, 1000)]
    assert linux_netlink.port_ranges(range(1, 65536, 2), limit=64)[0][0] == 1
    assert len(linux_netlink.port_ranges(range(1, 65536, 2), limit=64)) == 64
    assert linux_netlink.port_ranges([5, 5, 5]) == [(5, 5)]
