"""Network namespaces: listeners in named and unnamed namespaces, found, labelled, owned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

import portscope
from portscope import SocketFilter, State
from portscope.owners import fdscan

LISTENER = ("import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")


@pytest.fixture
def named_netns():
    """A fresh ``ip netns`` namespace with a listener started in it; removed afterwards."""
    name = f"ps-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", LISTENER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        port = int(proc.stdout.readline())
        inode = os.stat(f"/run/netns/{name}").st_ino
        yield name, inode, port, proc.pid
    finally:
        if proc:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def unnamed_netns():
    """A listener in an ``unshare --net`` namespace that no bind mount names."""
    proc = subprocess.Popen(["unshare", "--net", "--fork", "sh", "-c",
                             f"ip link set lo up && exec {sys.executable} -c \"{LISTENER}\""],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_named_namespace_listener_found_with_owner_and_name(named_netns):
    name, inode, port, _pid = named_netns
    snap = portscope.take_snapshot(SocketFilter(port_range=(port, port)), netns="all")
    ours = [s for s in snap.sockets if s.netns == inode]
    assert len(ours) == 1 and ours[0].state is State.LISTEN
    assert ours[0].owners and ours[0].owners[0].process.name.startswith("python")
    assert {ns.name for ns in snap.namespaces if ns.inode == inode} == {name}
    # the caller's own namespace does not see it
    host = portscope.take_snapshot(SocketFilter(port_range=(port, port)))
    assert all(s.netns != inode for s in host.sockets)
    by_name = portscope.take_snapshot(SocketFilter(port_range=(port, port)), netns=name)
    assert [s.netns for s in by_name.sockets] == [inode]


def test_unnamed_namespace_found_through_its_process(unnamed_netns):
    port = unnamed_netns
    snap = portscope.take_snapshot(SocketFilter(port_range=(port, port)), netns="all")
    foreign = [s for s in snap.sockets if s.netns != snap.namespaces[0].inode
               and s.state is State.LISTEN]
    assert len(foreign) >= 1
    pid = foreign[0].owners[0].pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == foreign[0].netns
    assert [s.netns for s in portscope.take_snapshot(
        SocketFilter(port_range=(port, port)), netns=str(pid)).sockets] == [foreign[0].netns]


def test_one_fd_scan_serves_every_namespace(named_netns, unnamed_netns, monkeypatch):
    scans = []
    for kind in ("BpfScan", "PendingScan"):
        def counting(*args, real=getattr(fdscan, kind), **kwargs):
            scans.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(fdscan, kind, counting)
    for flt in (SocketFilter(), SocketFilter.listeners()):
        scans.clear()
        snap = portscope.take_snapshot(flt, netns="all")
        assert len(snap.namespaces) >= 3 and len(scans) == 1


def test_cli_labels_namespaces_and_says_when_it_cannot_enter(named_netns, cli):
    name, inode, port, _pid = named_netns
    result = cli(str(port), "--netns", "all", "--json")
    doc = json.loads(result.stdout)
    assert {"inode": inode, "name": name} in doc["namespaces"]
    assert any(s["netns"] == inode for s in doc["sockets"])
    text = cli(str(port), "--netns", "all")
    assert name in text.stdout
    unprivileged = cli(str(port), user="nobody")
    assert "this network namespace only" in unprivileged.stderr
    denied = cli(str(port), "--netns", name, user="nobody")
    assert denied.returncode == 4 and denied.stderr.count("\n") == 1
    assert f"cannot enter network namespace {name} ({inode}): " in denied.stderr
    assert "CAP_SYS_ADMIN" in denied.stderr


def test_psutil_backend_refuses_a_view_of_a_namespace_it_cannot_read(named_netns, cli):
    name, inode, port, _pid = named_netns
    one = cli(str(port), "--netns", name, "--backend", "psutil")
    assert one.returncode == 2 and one.stdout == ""
    assert f"not {name} ({inode}) (--backend netlink or procfs" in one.stderr
    every = cli(str(port), "--netns", "all", "--backend", "psutil")
    assert "other(s) not covered" in every.stderr and every.returncode == 1


def test_unknown_namespace_is_a_usage_error(cli):
    result = cli("--netns", "no-such-netns-xyz")
    assert result.returncode == 2 and "no network namespace" in result.stderr


def test_check_and_free_answer_for_the_namespace_named(named_netns, cli):
    name, inode, port, pid = named_netns
    inside = cli("check", f"127.0.0.1:{port}", "--netns", name, "--json")
    assert inside.returncode == 1, inside.stderr
    doc = json.loads(inside.stdout)
    assert [o["pid"] for b in doc["blockers"] for o in b["owners"]] == [pid]
    assert doc["query"]["netns"] == inode and doc["blockers"][0]["netns"] == inode
    assert cli("check", f"127.0.0.1:{port}", "--netns", "host").returncode in (0, 1)
    picked = cli("free", "--netns", name, "--near", str(port))
    assert picked.returncode == 0 and int(picked.stdout) != port
    assert cli("free", "--netns", "all").returncode == 2


def test_bound_inactive_in_other_namespaces_only_when_one_is_asked_for(named_netns):
    """A listener view of all namespaces walks the shared bind hash in the caller's own only;
    naming the namespace shows its bound-but-inactive sockets too."""
    if tuple(map(int, os.uname().release.split(".")[:2])) < (6, 8):
        pytest.skip("the kernel dumps bound-inactive TCP sockets from 6.8 on")
    name, inode, _port, _pid = named_netns
    code = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); " \
           "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        every = portscope.take_snapshot(SocketFilter.listeners(), netns="all")
        assert not [s for s in every.sockets if s.netns == inode and s.local.port == port]
        one = portscope.take_snapshot(SocketFilter.listeners(), netns=name)
        (sock,) = [s for s in one.sockets if s.local.port == port]
        assert sock.state is State.BOUND_INACTIVE and sock.owners
    finally:
        proc.kill()
        proc.wait()
