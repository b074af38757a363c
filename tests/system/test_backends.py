"""The three socket backends against one set of real sockets: they must agree.

One holder process (tests/holders.py) opens TCP listeners and connections on 127.0.0.1 and
[::1], a [::] dual-stack listener (v6only 0) and an IPv6-only one (v6only 1), bound and
connected UDP sockets, a TCP socket that is only bound (BOUND_INACTIVE), a listener shared with
a forked child; beside them, a TIME_WAIT left by closing the active side of a loopback
connection, made again right before each set of dumps (``Fixture.with_time_wait``: one lasts
60 s, and a slow run may take longer than that from the first dump to the last). Each
backend's dump is then compared on exactly those sockets (the host may hold many others).
Last, psutil's per-process fallback runs in a child that dropped to nobody.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import time
from dataclasses import replace

import psutil
import pytest
from holders import start_holder

import portscope
from portscope import Family, OwnerUnknown, Proto, SocketFilter, State
from portscope.backends import linux_netlink, linux_procfs, psutil_backend

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/net"), reason="Linux only")

HOLDER = """
    out = []
    def add(s, state, remote=True):
        out.append(dict(
            proto="tcp" if s.type == socket.SOCK_STREAM else "udp",
            family="ipv4" if s.family == socket.AF_INET else "ipv6",
            local=list(s.getsockname()[:2]), remote=list(s.getpeername()[:2]) if remote else None,
            state=state, fd=s.fileno()))
    def tcp(family, address, v6only=None):
        s = socket.socket(family)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        s.bind((address, 0))
        return s
    def udp(family, address):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((address, 0))
        return s
    def pair(listener, address):
        client = socket.create_connection((address, listener.getsockname()[1]))
        accepted, _ = listener.accept()
        add(client, "ESTABLISHED"); add(accepted, "ESTABLISHED")
        return client, accepted

    shared = tcp(socket.AF_INET, "127.0.0.1"); shared.listen()
    kid = fork_sleeper()                       # forked first: it inherits this listener only
    l4 = tcp(socket.AF_INET, "127.0.0.1"); l4.listen()
    l6 = tcp(socket.AF_INET6, "::1"); l6.listen()
    dual = tcp(socket.AF_INET6, "::", 0); dual.listen()
    only6 = tcp(socket.AF_INET6, "::", 1); only6.listen()
    for s in (l4, l6, dual, only6):
        add(s, "LISTEN", remote=False)
    idle = tcp(socket.AF_INET, "127.0.0.1")
    add(idle, "BOUND_INACTIVE", remote=False)
    u4 = udp(socket.AF_INET, "127.0.0.1"); u6 = udp(socket.AF_INET6, "::1")
    add(u4, "UNCONN", remote=False); add(u6, "UNCONN", remote=False)
    uc = udp(socket.AF_INET, "127.0.0.1"); uc.connect(u4.getsockname())
    add(uc, "ESTABLISHED")
    conns = [pair(l4, "127.0.0.1"), pair(l6, "::1"), pair(dual, "127.0.0.1")]  # last: mapped
    ready(kid=kid, shared=shared.getsockname()[1], shared_fd=shared.fileno(), sockets=out)
"""


def key(sock) -> tuple:
    """What every backend must agree on: (proto, family, local, remote, state)."""
    return (sock.proto, sock.family, tuple(sock.local),
            None if sock.remote is None else tuple(sock.remote), sock.state)


class Fixture:
    """The holder's sockets, and a TIME_WAIT when made ``with_time_wait``: ``expected`` keys
    -> (fd in the holder, holder PIDs); the TIME_WAIT has neither (None, no PID)."""

    def __init__(self, info: dict, pid: int, time_wait: tuple | None = None) -> None:
        self.info, self.pid, self.kid = info, pid, info["kid"]
        self.expected: dict[tuple, tuple[int | None, frozenset[int]]] = {}
        for s in info["sockets"]:
            k = (s["proto"], s["family"], tuple(s["local"]),
                 tuple(s["remote"]) if s["remote"] else None, s["state"])
            self.expected[k] = (s["fd"], frozenset({pid}))
        shared = ("tcp", "ipv4", ("127.0.0.1", info["shared"]), None, "LISTEN")
        self.expected[shared] = (info["shared_fd"], frozenset({pid, self.kid}))
        if time_wait is not None:
            self.expected[time_wait] = (None, frozenset())
        self.tuples = {k[0:1] + k[2:4] for k in self.expected}

    def with_time_wait(self) -> Fixture:
        """This fixture with a TIME_WAIT made now (``make_time_wait``): a dump taken next
        finds it, however long the run has taken so far."""
        return Fixture(self.info, self.pid, make_time_wait())

    def mine(self, sockets) -> dict[tuple, object]:
        """The sockets of this fixture, by key (others with the same endpoints are kept too:
        they would be a disagreement)."""
        return {key(s): s for s in sockets if (s.proto, tuple(s.local),
                None if s.remote is None else tuple(s.remote)) in self.tuples}

    def keys(self, state_not: str | None = None) -> set[tuple]:
        return {k for k in self.expected if k[4] != state_not}


def make_time_wait() -> tuple:
    """A TIME_WAIT on 127.0.0.1, made now: the client closes first (the active close), then
    the server. Returns its key once the kernel shows it (it lasts 60 s, TCP_TIMEWAIT_LEN)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        tw = ("tcp", "ipv4", client.getsockname(), client.getpeername(), "TIME_WAIT")
        client.close()
        assert server.recv(1) == b""
        server.close()
    _wait_for_time_wait(tw)
    return tw


def _wait_for_time_wait(tw: tuple, timeout_s: float = 10.0) -> None:
    """Wait until the client side of ``tw`` is in TIME_WAIT and the server side has gone
    (LAST_ACK -> closed), asking the kernel for those two ports only."""
    tcp = frozenset({Proto.TCP})
    deadline = time.monotonic() + timeout_s
    while True:
        client, _ = linux_netlink.dump(SocketFilter(protos=tcp, port_range=(tw[2][1],) * 2))
        server, _ = linux_netlink.dump(SocketFilter(protos=tcp, port_range=(tw[3][1],) * 2))
        if tw in {key(s) for s in client} and not server:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"no TIME_WAIT after {timeout_s} s: {client + server}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fx():
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    holder = start_holder(HOLDER)
    try:
        yield Fixture(holder.info, holder.pid)
    finally:
        holder.stop()


@pytest.fixture(scope="module")
def dumps_fx(fx):
    """``fx`` with the TIME_WAIT that ``dumps`` find (made when they are taken)."""
    return fx.with_time_wait()


@pytest.fixture(scope="module")
def dumps(dumps_fx):
    """Each backend's full dump, restricted to the fixture's sockets."""
    return {module.NAME: dumps_fx.mine(module.dump()[0])
            for module in (linux_netlink, linux_procfs, psutil_backend)}


@pytest.fixture(scope="module")
def snapshots_fx(fx):
    """``fx`` with the TIME_WAIT that ``snapshots`` find (made when they are taken)."""
    return fx.with_time_wait()


@pytest.fixture(scope="module")
def snapshots(snapshots_fx):
    """A full snapshot through each backend, restricted to the fixture's sockets."""
    return {name: snapshots_fx.mine(portscope.take_snapshot(backend=name).sockets)
            for name in ("netlink", "procfs", "psutil")}


def test_netlink_sees_the_whole_fixture(dumps_fx, dumps):
    assert set(dumps["netlink"]) == dumps_fx.keys()


def test_procfs_and_psutil_agree_with_netlink_but_bound_inactive(dumps_fx, dumps):
    assert set(dumps["procfs"]) == dumps_fx.keys(state_not="BOUND_INACTIVE")
    assert set(dumps["psutil"]) == dumps_fx.keys(state_not="BOUND_INACTIVE")


def test_bound_inactive_is_in_netlink_only(dumps_fx, dumps):
    (idle,) = [k for k in dumps_fx.expected if k[4] == "BOUND_INACTIVE"]
    assert dumps["netlink"][idle].inode != 0
    assert not [k for k in dumps["procfs"] if k[2] == idle[2]]
    assert not [k for k in dumps["psutil"] if k[2] == idle[2]]


def test_procfs_gives_netlinks_inode_uid_and_queues(dumps):
    for k, sock in dumps["procfs"].items():
        nl = dumps["netlink"][k]
        assert (sock.inode, sock.uid, sock.rx_queue_bytes) == (nl.inode, nl.uid, nl.rx_queue_bytes)
        if sock.state != State.LISTEN:      # netlink gives a listener's backlog limit there
            assert sock.tx_queue_bytes == nl.tx_queue_bytes
        assert sock.cookie is None and sock.owners == () and sock.owner_unknown is None


def test_v6only_known_to_netlink_not_procfs(dumps):
    wildcards = [k for k in dumps["netlink"] if k[2][0] == "::" and k[4] == "LISTEN"]
    assert sorted(dumps["netlink"][k].v6only for k in wildcards) == [False, True]
    assert {dumps["procfs"][k].v6only for k in wildcards} == {None}
    assert {dumps["procfs"][k].v6only for k in dumps["procfs"] if k[1] == "ipv4"} == {None}


def test_ipv4_mapped_address_text(dumps):
    mapped = [k for k in dumps["netlink"] if k[2][0] == "::ffff:127.0.0.1"]
    assert len(mapped) == 1 and mapped[0][1] == "ipv6"
    assert mapped[0] in dumps["procfs"] and mapped[0] in dumps["psutil"]


def test_snapshot_owners_agree_between_netlink_and_procfs(snapshots_fx, snapshots):
    for name in ("netlink", "procfs"):
        got = snapshots[name]
        for k, (_fd, holders) in snapshots_fx.expected.items():
            if name == "procfs" and k[4] == "BOUND_INACTIVE":
                continue
            assert {o.pid for o in got[k].owners} == holders, (name, k)
            if not holders:
                assert got[k].owner_unknown is OwnerUnknown.KERNEL
    assert {k: {(o.pid, o.fd) for o in s.owners} for k, s in snapshots["procfs"].items()} == \
        {k: {(o.pid, o.fd) for o in s.owners} for k, s in snapshots["netlink"].items()
         if k[4] != "BOUND_INACTIVE"}


def test_psutil_gives_every_real_holder(snapshots_fx, snapshots):
    assert set(snapshots["psutil"]) == snapshots_fx.keys(state_not="BOUND_INACTIVE")
    for k, sock in snapshots["psutil"].items():
        fd, holders = snapshots_fx.expected[k]
        if not holders:
            assert sock.owners == () and sock.owner_unknown is OwnerUnknown.KERNEL
            continue
        assert {o.pid for o in sock.owners} == holders, k
        assert {o.fd for o in sock.owners} == {fd}, k
        owner = sock.owners[0]
        info = owner.process
        assert info.pid == owner.pid and info.uid == os.getuid() == sock.uid
        assert info.ppid in (os.getpid(), snapshots_fx.pid)
        assert info.started_at is not None and info.started_at.utcoffset().total_seconds() == 0
        assert info.cmdline and info.name and info.user
        assert sock.inode == 0 and sock.owner_unknown is None


def test_filters_are_honoured_at_the_source(fx):
    listener = next(k for k in fx.expected if k[:2] == ("tcp", "ipv4") and k[4] == "LISTEN"
                    and fx.expected[k][1] == {fx.pid})
    port = listener[2][1]
    flt = SocketFilter(protos=frozenset({Proto.TCP}), families=frozenset({Family.IPV4}),
                       states=frozenset({State.LISTEN}), port_range=(port, port))
    for module in (linux_netlink, linux_procfs, psutil_backend):
        sockets, _ = module.dump(flt)
        assert [key(s) for s in sockets] == [listener], module.NAME
    v6 = next(k for k in fx.expected if k[:2] == ("udp", "ipv6"))
    flt = SocketFilter(protos=frozenset({Proto.UDP}), address="::1",
                       port_range=(v6[2][1], v6[2][1]))
    for module in (linux_netlink, linux_procfs, psutil_backend):
        assert [key(s) for s in module.dump(flt)[0]] == [v6], module.NAME


def test_psutil_snapshot_applies_owner_predicates(fx):
    port = next(k for k in fx.expected if k[4] == "UNCONN")[2][1]
    flt = SocketFilter(protos=frozenset({Proto.UDP}), port_range=(port, port))
    mine = portscope.take_snapshot(replace(flt, pids=frozenset({fx.pid})), backend="psutil")
    assert [o.pid for s in mine.sockets for o in s.owners] == [fx.pid]
    other = portscope.take_snapshot(replace(flt, pids=frozenset({1})), backend="psutil")
    assert other.sockets == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_psutil_falls_back_to_each_process_when_refused():
    """As on macOS without root: the system-wide call raises AccessDenied, so each process is
    asked; an unprivileged caller sees its own sockets and is told how many processes refused.
    Runs in a forked child that drops to nobody (psutil's call is replaced, not the kernel's)."""
    nobody = 65534
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            ctypes.CDLL(None).prctl(4, 1)          # PR_SET_DUMPABLE: keep /proc/self/fd ours
            own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            own.bind(("127.0.0.1", 0))
            port = own.getsockname()[1]

            def refused(kind="inet"):
                raise psutil.AccessDenied()

            psutil.net_connections = refused
            sockets, warnings = psutil_backend.dump(
                SocketFilter(protos=frozenset({Proto.UDP}), port_range=(port, port)))
            result = {"port": port, "warnings": warnings,
                      "sockets": [[s.local.port, s.state, [o.pid for o in s.owners]]
                                  for s in sockets]}
            os.write(write_end, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result = json.loads(data)
    assert result["sockets"] == [[result["port"], "UNCONN", [pid]]]
    (warning,) = result["warnings"]
    skipped = re.match(r"psutil could not list the sockets of (\d+) process\(es\)", warning)
    assert skipped and int(skipped[1]) > 0, "root's processes refuse nobody"
