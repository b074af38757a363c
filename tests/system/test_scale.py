"""Many namespaces: what each one costs is only what it holds (sockstat skips empty dumps)."""

from __future__ import annotations

import os
from collections import Counter
import time

import pytest

import portscope
from portscope import Family, Proto, SocketFilter, State, namespaces, sockstat
from portscope.backends import linux_netlink
from portscope.types import NetNamespace

from netns import netns  # noqa: F401  (the fixture)

EVERY_KIND = """
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()
    c = socket.create_connection(l.getsockname()); a, _ = l.accept()
    t = socket.create_connection(l.getsockname()); ta, _ = l.accept()
    t.close(); ta.close()                        # t closed first: TIME_WAIT on its side
    b = socket.socket(); b.bind(('127.0.0.1', 0))             # bound only: BOUND_INACTIVE
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(('127.0.0.1', 0))
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind(('::1', 0))
    ready(listener=l.getsockname()[1], bound=b.getsockname()[1], udp6=u6.getsockname()[1])
"""


def _entry(ns) -> namespaces.NamespaceEntry:
    path = f"/run/netns/{ns.name}"
    return namespaces.NamespaceEntry(NetNamespace(os.stat(path).st_ino, ns.name), path)


def _inside(ns, work):
    (result,) = namespaces.run_in([_entry(ns)], lambda e: work())
    assert not isinstance(result, OSError), result
    return result


def _key(s):
    """Every field the kernel gives (all but owners and container)."""
    return (*s[:11], s.cookie)


def test_an_empty_namespace_counts_nothing_and_is_not_dumped(netns):
    deadline = time.monotonic() + 10
    while (counts := _inside(netns, sockstat.read)).sockets_used and time.monotonic() < deadline:
        time.sleep(0.05)         # the netlink sockets of `ip link` are freed after an RCU grace
    assert counts == sockstat.SocketCounts(0, 0, 0, {Family.IPV4: 0, Family.IPV6: 0})
    raw, warnings = _inside(netns, lambda: linux_netlink.collect(SocketFilter(),
                                                                 counts=sockstat.read()))
    assert raw.replies == [] and warnings == []


def test_counts_name_each_kind_of_socket(netns):
    netns.holder("""
        b = socket.socket(); b.bind(('127.0.0.1', 0))
        u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind(('::1', 0))
        ready()
    """)
    counts = _inside(netns, sockstat.read)
    # the bound-only TCP socket is in no count but "used": only a BOUND_INACTIVE dump needs it
    assert counts.tcp_inuse == 0 and counts.tcp_tw == 0 and counts.sockets_used == 2
    assert counts.udp_inuse == {Family.IPV4: 0, Family.IPV6: 1}
    assert counts.may_hold_tcp(bound_inactive=True) and not counts.may_hold_tcp(False)
    assert counts.may_hold_udp(Family.IPV6) and not counts.may_hold_udp(Family.IPV4)
    assert counts.may_hold_unix()


@pytest.mark.parametrize("flt", [SocketFilter(), SocketFilter.listeners(),
                                 SocketFilter(states=frozenset({State.TIME_WAIT})),
                                 SocketFilter(protos=frozenset({Proto.UDP}))],
                         ids=["all", "listeners", "time-wait", "udp"])
def test_skipping_by_counts_loses_no_socket(netns, flt):
    info = netns.holder(EVERY_KIND).info
    counts = _inside(netns, sockstat.read)
    assert counts.tcp_inuse == 3 and counts.tcp_tw >= 1     # l, c, a; t
    full, _ = _inside(netns, lambda: linux_netlink.dump(flt))
    skipping, _ = _inside(netns, lambda: linux_netlink.dump(flt, counts=sockstat.read()))
    assert Counter(map(_key, skipping)) == Counter(map(_key, full)) and full
    if flt == SocketFilter():
        states = {s.state for s in full}
        assert {State.LISTEN, State.ESTABLISHED, State.TIME_WAIT, State.BOUND_INACTIVE,
                State.UNCONN} <= states
        assert {s.local.port for s in full if s.family is Family.IPV6} == {info["udp6"]}


def test_snapshot_of_many_namespaces_skips_empty_ones_and_keeps_the_rest(netns):
    info = netns.holder(EVERY_KIND).info
    inode = _entry(netns).namespace.inode
    port = info["bound"]
    alone = portscope.take_snapshot(SocketFilter(port_range=(port, port)), netns=netns.name)
    assert [(s.state, s.netns) for s in alone.sockets] == [(State.BOUND_INACTIVE, inode)]
    every = portscope.take_snapshot(netns="all")
    ours = Counter(map(_key, (s for s in every.sockets if s.netns == inode)))
    direct, _ = _inside(netns, lambda: linux_netlink.dump(SocketFilter(), netns=inode))
    assert ours == Counter(map(_key, direct))
