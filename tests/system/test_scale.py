"""Many namespaces: what each one costs is only what it holds (sockstat skips empty dumps)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter

import pytest

import portscope
from portscope import Family, Proto, SocketFilter, State, namespaces, sockstat
from portscope.backends import linux_netlink
from portscope.filters import TCP_STATES
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
    # (sockets_used may still count the netlink sockets of `ip link`, freed after RCU grace)
    assert counts.tcp_inuse == 0 and counts.tcp_tw == 0 and counts.sockets_used >= 2
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
    # the dump first: it gives each socket its cookie (the walk reads cookies as they are)
    direct, _ = _inside(netns, lambda: linux_netlink.dump(SocketFilter(), netns=inode))
    every = portscope.take_snapshot(netns="all")
    ours = Counter(map(_key, (s for s in every.sockets if s.netns == inode)))
    assert ours == Counter(map(_key, direct))


# --- the sockets the BPF descriptor walk reads, against the per-namespace dumps ------------

HELD_ONLY = """
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()
    c = socket.create_connection(l.getsockname()); a, _ = l.accept()
    c.send(b'x' * 3000)                                       # unread: a's receive queue
    h = socket.create_connection(l.getsockname()); ha, _ = l.accept()
    h.shutdown(socket.SHUT_WR)                     # held in FIN_WAIT2, ha in CLOSE_WAIT
    l6 = socket.socket(socket.AF_INET6)
    l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    l6.bind(('::1', 0)); l6.listen(7)
    c6 = socket.create_connection(l6.getsockname()[:2]); a6, _ = l6.accept()
    d = socket.socket(socket.AF_INET6); d.bind(('::', 0))     # bound only, dual stack
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(('127.0.0.1', 0))
    for _ in range(3):
        u4.sendto(b'z' * 100, u4.getsockname())                # unread datagrams
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind(('::1', 0))
    u6.connect(u6.getsockname())
    shared = socket.socket(); shared.bind(('127.0.0.1', 0)); shared.listen()
    twin = os.dup(shared.fileno())                             # two descriptors, one socket
    ready(listener=l.getsockname()[1])
"""
NOT_HELD = """
    pending = socket.create_connection(('127.0.0.1', {port}))   # never accepted
    t = socket.create_connection(('127.0.0.1', {port}))
    ready()
"""


def _fields(s):
    """Every field of a socket, its owners as (pid, fd) pairs."""
    return (*_key(s), frozenset((o.pid, o.fd) for o in s.owners), s.owner_unknown)


def _both_paths(monkeypatch, inode):
    """The namespace's sockets by the per-namespace dumps (/proc scan), then by the walk."""
    from portscope.owners import bpf
    if not bpf.usable():
        pytest.skip("BPF iterators cannot run here")
    monkeypatch.setenv(bpf.ENV, "proc")
    dumped = portscope.take_snapshot(netns="all")    # first: the dumps give cookies out
    monkeypatch.delenv(bpf.ENV)
    walked = portscope.take_snapshot(netns="all")
    return ([s for s in dumped.sockets if s.netns == inode],
            [s for s in walked.sockets if s.netns == inode])


def _settled_walk(netns, port=None, unseen=0):
    """A BPF walk (of ``port`` only, when given) once the namespace holds no socket beyond
    what the walk finds there and the ``unseen`` the test put out of its sight: the netlink
    sockets of `ip link` are freed after an RCU grace period (up to 10 s). A connection in
    the accept queue counts as one unseen (sockstat counts every socket the kernel made)."""
    from portscope.owners import fdscan
    inode = _entry(netns).namespace.inode
    deadline = time.monotonic() + 10
    while True:
        held = fdscan.BpfScan(port=port).held_sockets(port)
        assert held is not None and held.port == port
        used = _inside(netns, sockstat.read).sockets_used
        if used - held.everything[inode] <= unseen or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def _plan(netns, unseen=0):
    """What snapshot._dump_beside decides for the namespace: (dump requests, taken)."""
    from portscope import snapshot
    held = _settled_walk(netns, unseen=unseen)
    (result,) = snapshot._dump_beside(linux_netlink, held, [_entry(netns)], SocketFilter())
    parts, taken, _flt, _warnings = result
    return [(proto, part.flt.states) for part, _beside in parts
            for proto, _chunks, _intr in part.replies], taken


def test_walked_sockets_equal_the_dumps_field_by_field(netns, monkeypatch):
    info = netns.holder(HELD_ONLY).info
    inode = _entry(netns).namespace.inode
    requests, taken = _plan(netns)
    assert requests == [] and len(taken) == 4        # every socket held: no dump at all
    dumped, walked = _both_paths(monkeypatch, inode)
    assert len(dumped) == 12 and all(s.owners for s in dumped)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    by_port = {s.local.port: s for s in walked if s.state is State.LISTEN}
    assert by_port[info["listener"]].owners[0].pid == info["pid"]
    assert any(s.rx_queue_bytes == 3000 for s in walked)
    assert any(s.proto is Proto.UDP and s.rx_queue_bytes for s in walked)
    assert {s.v6only for s in walked if s.family is Family.IPV6 and s.state in
            (State.LISTEN, State.BOUND_INACTIVE)} == {True, False}


def test_what_no_descriptor_holds_is_dumped(netns, monkeypatch):
    info = netns.holder(HELD_ONLY).info
    netns.holder(NOT_HELD.format(port=info["listener"]))
    inode = _entry(netns).namespace.inode
    requests, _taken = _plan(netns, unseen=2)      # two children in the accept queue
    # a connection in the accept queue has no descriptor: the counts differ, TCP is dumped
    assert [proto for proto, _states in requests] == [Proto.TCP]
    dumped, walked = _both_paths(monkeypatch, inode)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    assert sum(1 for s in walked if not s.owners) == 2      # accept queue, nothing else


def test_time_wait_alone_is_dumped_beside_the_walk(netns, monkeypatch):
    netns.holder(HELD_ONLY.replace("ready(listener=l.getsockname()[1])", """
    t = socket.create_connection(l.getsockname()); ta, _ = l.accept()
    t.close(); ta.close()
    ready()"""))
    inode = _entry(netns).namespace.inode
    requests, _taken = _plan(netns)
    assert requests == [(Proto.TCP, frozenset({State.TIME_WAIT, State.FIN_WAIT2}))]
    dumped, walked = _both_paths(monkeypatch, inode)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    assert [s.state for s in walked if not s.owners] == [State.TIME_WAIT]
    assert [s.state for s in walked if s.owners and s.state is State.FIN_WAIT2] \
        == [State.FIN_WAIT2]                     # dumped beside the walk too, kept once


def test_a_listener_no_process_holds_is_found_by_a_listen_dump(netns, monkeypatch):
    netns.holder(HELD_ONLY.replace("ready(listener=l.getsockname()[1])", """
    # a listener whose only descriptor is in flight in a UNIX socket's queue: hashed, in no
    # process's table (as a listener of a process the walk cannot see)
    x, y = socket.socketpair()
    f = socket.socket(); f.bind(('127.0.0.1', 0)); f.listen()
    socket.send_fds(x, [b'x'], [f.fileno()]); flying = f.getsockname()[1]; f.close()
    ready(flying=flying)"""))
    inode = _entry(netns).namespace.inode
    requests, taken = _plan(netns, unseen=1)
    # and, one socket of the namespace being out of the walk's sight, its bound-only ones
    assert requests == [(Proto.TCP, frozenset({State.LISTEN})),
                        (Proto.TCP, frozenset({State.BOUND_INACTIVE}))] and len(taken) == 4
    dumped, walked = _both_paths(monkeypatch, inode)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    assert [s.state for s in walked if not s.owners] == [State.LISTEN]


# --- a port lookup: the walk reads that port's sockets and counts the others ---------------

def _port_paths(monkeypatch, inode, port):
    """The namespace's sockets on ``port`` by the per-namespace dumps (/proc scan), then by
    the walk limited to the port."""
    from portscope.owners import bpf
    if not bpf.usable():
        pytest.skip("BPF iterators cannot run here")
    flt = SocketFilter(port_range=(port, port))
    monkeypatch.setenv(bpf.ENV, "proc")
    dumped = portscope.take_snapshot(flt, netns="all")    # first: the dumps give cookies out
    monkeypatch.delenv(bpf.ENV)
    walked = portscope.take_snapshot(flt, netns="all")
    return ([s for s in dumped.sockets if s.netns == inode],
            [s for s in walked.sockets if s.netns == inode])


def _port_plan(netns, port, unseen=0):
    """What snapshot._dump_beside decides for the namespace on a lookup of ``port``."""
    from portscope import snapshot
    held = _settled_walk(netns, port, unseen)
    (result,) = snapshot._dump_beside(linux_netlink, held, [_entry(netns)],
                                      SocketFilter(port_range=(port, port)))
    parts, _taken, _flt, _warnings = result
    return held, [(proto, part.flt.states) for part, _beside in parts
                  for proto, _chunks, _intr in part.replies]


def test_a_port_walk_records_that_port_and_counts_the_rest(netns, monkeypatch):
    info = netns.holder(HELD_ONLY).info
    inode = _entry(netns).namespace.inode
    port = info["listener"]
    held, requests = _port_plan(netns, port)
    assert requests == []                       # every socket on the port held: no dump
    from portscope.owners import bpf, fdscan
    from portscope.owners.sockets import RECORD

    def census(walk):
        return {k: v for k, v in walk.census.items() if k & 0xFFFFFFFF == inode}

    deadline = time.monotonic() + 5
    while True:      # h leaves FIN_WAIT1 when its FIN is acknowledged (a delayed ACK)
        every = fdscan.BpfScan().held_sockets()
        if census(every) == census(held) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
        held = fdscan.BpfScan(port=port).held_sockets(port)
    # the counts of the sockets it wrote no record of make the same census as every record
    assert census(held) == census(every)
    assert held.everything[inode] == every.everything[inode] >= 12
    assert held.listening(inode) == every.listening(inode) == 3
    # records: the port's sockets, and the one socket that two descriptors hold (its first
    # words only: counted once by its inode); a socket that one descriptor holds is counted
    ours = [RECORD.unpack_from(held.records, at)
            for at in range(0, len(held.records), RECORD.size)]
    marks = held.records[bpf.SHARED_BYTE::RECORD.size]
    ours = [(r, marks[k]) for k, r in enumerate(ours) if r[2] == inode]
    assert sorted(r[6] == port for r, _mark in ours) == [False, False, True, True, True]
    assert len({r[0] for r, _mark in ours if r[6] != port}) == 1
    assert [mark for r, mark in ours if r[6] != port] == [1, 1]     # marked shared
    dumped, walked = _port_paths(monkeypatch, inode, port)
    assert len(dumped) == 3 and all(s.owners for s in dumped)      # l, a, ha
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))


NOT_HELD_ON_THE_PORT = {
    "time-wait": """
    t = socket.create_connection(l.getsockname()); ta, _ = l.accept()
    ta.close(); t.recv(1); t.close()               # ta, on the port, goes to TIME_WAIT
    ready(port=l.getsockname()[1])""",
    "accept-queue": """
    pending = socket.create_connection(l.getsockname())        # never accepted
    ready(port=l.getsockname()[1])""",
    "in-flight": """
    x, y = socket.socketpair()
    f = socket.socket(); f.bind(('127.0.0.1', 0)); f.listen()
    socket.send_fds(x, [b'x'], [f.fileno()]); flying = f.getsockname()[1]; f.close()
    ready(port=flying)""",
}


@pytest.mark.parametrize("case", list(NOT_HELD_ON_THE_PORT))
def test_a_port_walk_dumps_what_no_descriptor_holds_on_the_port(netns, monkeypatch, case):
    """TIME_WAIT on the port (the server closed first), a connection not yet accepted, a
    listener that no process holds (its only descriptor in flight in a UNIX socket's
    queue): each has its namespace dumped for the port, and nothing else is."""
    port = netns.holder(HELD_ONLY.replace("ready(listener=l.getsockname()[1])",
                                          NOT_HELD_ON_THE_PORT[case])).info["port"]
    inode = _entry(netns).namespace.inode
    _held, requests = _port_plan(netns, port, unseen=case != "time-wait")
    expected, unowned = {
        "time-wait": ([frozenset({State.TIME_WAIT, State.FIN_WAIT2})], ["TIME_WAIT"]),
        # the counts differ: the port is dumped whole
        "accept-queue": ([TCP_STATES], ["ESTABLISHED"]),
        # found by a LISTEN dump; a socket out of the walk's sight: bound-only ones too
        "in-flight": ([frozenset({State.LISTEN}), frozenset({State.BOUND_INACTIVE})],
                      ["LISTEN"]),
    }[case]
    assert [states for proto, states in requests if proto is Proto.TCP] == expected
    assert [proto for proto, _states in requests] == [Proto.TCP] * len(expected)
    dumped, walked = _port_paths(monkeypatch, inode, port)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    assert sorted(s.state.value for s in walked if not s.owners) == unowned


@contextlib.contextmanager
def _callers_sockets(unaccepted: bool = True):
    """In the caller's own namespace, on one port: a listener, an accepted connection, a
    TIME_WAIT socket (the server closed first), a connection not yet accepted (when
    ``unaccepted``), and a held socket in FIN_WAIT2 (its peer never closes). Yields the
    port."""
    with contextlib.ExitStack() as stack:
        l = stack.enter_context(socket.socket())
        l.bind(("127.0.0.1", 0))
        l.listen()
        port = l.getsockname()[1]
        c = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        a = stack.enter_context(l.accept()[0])
        t = socket.create_connection(("127.0.0.1", port))
        ta, _ = l.accept()
        ta.close()
        t.recv(1)
        t.close()                                  # ta, on the port: TIME_WAIT
        if unaccepted:
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        h = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        stack.enter_context(l.accept()[0])
        h.shutdown(socket.SHUT_WR)                 # FIN_WAIT2 once its FIN is acknowledged
        assert c and a
        _settle(port)
        yield port


_PASSING = frozenset({State.FIN_WAIT1, State.CLOSING, State.LAST_ACK, State.SYN_SENT,
                      State.SYN_RECV})


def _settle(port: int, timeout_s: float = 10.0) -> None:
    """Wait until no TCP socket on ``port`` is in a state it leaves by itself within
    moments (a FIN not yet acknowledged, say), so that two snapshots taken one after the
    other see the same states."""
    deadline = time.monotonic() + timeout_s
    while True:
        passing = [s for s in linux_netlink.dump(SocketFilter(protos=frozenset({Proto.TCP})))[0]
                   if s.state in _PASSING and port in (
                       s.local.port, s.remote.port if s.remote else None)]
        if not passing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"sockets on port {port} still changing after {timeout_s} s: {passing}")
        time.sleep(0.02)


def test_a_port_lookup_reads_the_callers_namespace_by_its_dump(monkeypatch):
    """The caller's own namespace is dumped for the port beside the walk (its TIME_WAIT and
    unaccepted sockets included), the others come from the walk: the same sockets."""
    own = namespaces.own_inode()
    with _callers_sockets() as port:
        dumped, walked = _port_paths(monkeypatch, own, port)
    assert Counter(map(_fields, walked)) == Counter(map(_fields, dumped))
    assert sorted(s.state.value for s in walked) \
        == ["CLOSE_WAIT", "ESTABLISHED", "ESTABLISHED", "LISTEN", "TIME_WAIT"]
    assert {s.owners[0].pid for s in walked if s.owners} == {os.getpid()}


def test_a_full_listing_takes_the_callers_time_wait_from_the_dump_beside_the_walk(
        monkeypatch):
    """A full listing dumps the caller's own namespace for TIME_WAIT and the like while the
    walk runs; a held socket that dump returns too (FIN_WAIT2) is kept once. (With a
    connection not yet accepted there, the counts would differ: it would be dumped whole.)"""
    from portscope.owners import bpf
    if not bpf.usable():
        pytest.skip("BPF iterators cannot run here")
    own = namespaces.own_inode()
    with _callers_sockets(unaccepted=False) as port:
        def ours(snapshot):
            return Counter(_fields(s) for s in snapshot.sockets if s.netns == own and (
                s.local.port == port or (s.remote is not None and s.remote.port == port)))
        monkeypatch.setenv(bpf.ENV, "proc")
        dumped = ours(portscope.take_snapshot(netns="all"))    # first: cookies given out
        monkeypatch.delenv(bpf.ENV)
        walked = ours(portscope.take_snapshot(netns="all"))
    assert walked == dumped
    states = Counter(key[4].value for key in walked.elements())
    assert states["TIME_WAIT"] == 1 and states["FIN_WAIT2"] == 1 and states["LISTEN"] == 1
