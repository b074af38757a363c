"""The change stream's pure diff: views built from hand-made sockets, no system access."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from portscope.history.diff import (Event, EventKind, Item, Key, Source, diff, diff_views,
                                    socket_key, view)
from portscope.types import (Endpoint, Family, Owner, ProcessInfo, Proto, Snapshot, Socket,
                             State)

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=1)
NS = 4026531833


def proc(pid, exe="/usr/bin/python3", started=T0, name=None):
    return ProcessInfo(pid=pid, name=name or exe.rsplit("/", 1)[-1], exe=exe, user="root",
                       uid=0, started_at=started)


def sock(port, inode, *owners, address="127.0.0.1", state=State.LISTEN, proto=Proto.TCP,
         remote=None):
    family = Family.IPV6 if ":" in address else Family.IPV4
    return Socket(proto, family, Endpoint(address, port), remote, state, inode, 0, NS,
                  owners=tuple(Owner(p.pid, 3 + i, p) for i, p in enumerate(owners)))


def snap(*sockets, at=T0):
    return Snapshot(tuple(sockets), at, "h", "netlink")


def kinds(events):
    return [(e.kind, e.key.port) for e in events]


def test_nothing_changed_no_events():
    a = proc(10)
    assert diff(snap(sock(3000, 7, a)), snap(sock(3000, 7, a), at=T1)) == []


def test_opened_and_closed_are_timed_between_the_polls():
    a, b = proc(10), proc(11)
    events = diff(snap(sock(3000, 7, a)), snap(sock(4000, 8, b), at=T1))
    assert kinds(events) == [(EventKind.CLOSED, 3000), (EventKind.OPENED, 4000)]
    closed, opened = events
    assert (closed.after, closed.at, closed.source) == (T0, T1, Source.POLL)
    assert closed.item.owners == (a,)         # the owner as last seen: it may be gone now
    assert opened.item.owners == (b,)
    assert opened.key == Key(NS, Proto.TCP, "127.0.0.1", 4000, 8)


def test_same_port_new_inode_is_close_then_open():
    # a restarted server: the port is the same, the socket is not
    a, b = proc(10), proc(20)
    events = diff(snap(sock(3000, 7, a)), snap(sock(3000, 9, b), at=T1))
    assert [(e.kind, e.key.inode) for e in events] == [(EventKind.CLOSED, 7),
                                                        (EventKind.OPENED, 9)]


def test_fork_and_exit_are_owners_changed():
    parent, child = proc(10), proc(11)
    events = diff(snap(sock(3000, 7, parent)), snap(sock(3000, 7, parent, child), at=T1))
    assert kinds(events) == [(EventKind.OWNERS_CHANGED, 3000)]
    assert events[0].added == (child,) and events[0].removed == ()
    events = diff(snap(sock(3000, 7, parent, child)), snap(sock(3000, 7, child), at=T1))
    assert events[0].removed == (parent,) and events[0].added == ()


def test_exec_is_owners_changed_but_cmdline_change_is_not():
    before = proc(10, exe="/bin/sh")
    after = proc(10, exe="/usr/bin/python3")
    events = diff(snap(sock(3000, 7, before)), snap(sock(3000, 7, after), at=T1))
    assert kinds(events) == [(EventKind.OWNERS_CHANGED, 3000)]
    retitled = ProcessInfo(**{**{f: getattr(before, f) for f in before.__slots__},
                              "cmdline": ("postgres: idle",)})
    assert diff(snap(sock(3000, 7, before)), snap(sock(3000, 7, retitled), at=T1)) == []


def test_pid_reuse_is_owners_changed():
    old, new = proc(10), proc(10, started=T0 + timedelta(hours=1))
    events = diff(snap(sock(3000, 7, old)), snap(sock(3000, 7, new), at=T1))
    assert events[0].added == (new,) and events[0].removed == (old,)


def test_bound_then_listen_is_state_changed():
    a = proc(10)
    events = diff(snap(sock(3000, 7, a, state=State.BOUND_INACTIVE)),
                  snap(sock(3000, 7, a), at=T1))
    assert kinds(events) == [(EventKind.STATE_CHANGED, 3000)]
    assert events[0].old_state is State.BOUND_INACTIVE and events[0].item.state is State.LISTEN


def test_default_scope_is_listeners():
    a = proc(10)
    conn = sock(3000, 12, a, state=State.ESTABLISHED, remote=Endpoint("127.0.0.1", 50000))
    udp = sock(53, 13, a, state=State.UNCONN, proto=Proto.UDP)
    assert set(view([sock(3000, 7, a), conn, udp])) == {
        Key(NS, Proto.TCP, "127.0.0.1", 3000, 7), Key(NS, Proto.UDP, "127.0.0.1", 53, 13)}


def test_connections_aggregate_per_listener_and_remote_address():
    a = proc(10)
    listener = sock(3000, 7, a, address="0.0.0.0")
    accepted = [sock(3000, 100 + i, a, state=State.ESTABLISHED,
                     remote=Endpoint("10.0.0.1" if i < 3 else "10.0.0.2", 50000 + i))
                for i in range(5)]
    outgoing = [sock(40000 + i, 200 + i, a, state=State.ESTABLISHED,
                     remote=Endpoint("192.0.2.1", 443)) for i in range(2)]
    kernel_held = sock(3000, 0, state=State.TIME_WAIT, remote=Endpoint("10.0.0.3", 1))
    got = view([listener, *accepted, *outgoing, kernel_held], connections=True)
    assert got[Key(NS, Proto.TCP, "0.0.0.0", 3000, 0, "10.0.0.1")].connections == 3
    assert got[Key(NS, Proto.TCP, "0.0.0.0", 3000, 0, "10.0.0.2")].connections == 2
    out = got[Key(NS, Proto.TCP, "127.0.0.1", None, 0, "192.0.2.1", 443)]
    assert out.connections == 2 and out.owners == (a,)
    assert len(got) == 4


def test_connection_group_count_change_is_no_event_but_last_close_is():
    a = proc(10)
    listener = sock(3000, 7, a)

    def conns(n):
        return [sock(3000, 100 + i, a, state=State.ESTABLISHED,
                     remote=Endpoint("127.0.0.2", 50000 + i)) for i in range(n)]

    first = view([listener, *conns(3)], connections=True)
    assert diff_views(first, view([listener, *conns(1)], connections=True),
                      after=T0, at=T1) == []
    events = diff_views(first, view([listener], connections=True), after=T0, at=T1)
    assert [(e.kind, e.key.remote_address, e.item.connections) for e in events] == [
        (EventKind.CLOSED, "127.0.0.2", 3)]


def test_exact_source_has_no_after():
    a = proc(10)
    cur = view([sock(3000, 7, a)])
    (event,) = diff_views({}, cur, after=None, at=T1, source=Source.TRACEPOINT)
    assert event == Event(EventKind.OPENED, socket_key(sock(3000, 7, a)),
                          Item(Family.IPV4, State.LISTEN, (a,), 0), T1, None, Source.TRACEPOINT)


def test_owners_listed_once_per_process():
    a = proc(10)
    s = Socket(Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 3000), None, State.LISTEN, 7, 0,
               NS, owners=(Owner(10, 3, a), Owner(10, 4, a)))
    assert view([s])[socket_key(s)].owners == (a,)


def test_an_exiting_holder_whose_exe_cannot_be_read_is_no_change():
    alive = proc(10)
    exiting = ProcessInfo(pid=10, name=alive.name, exe=None, started_at=T0)
    assert diff(snap(sock(3000, 7, alive)), snap(sock(3000, 7, exiting), at=T1)) == []
