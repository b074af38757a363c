"""explain's words for synthetic sockets: scope, holders, groups (no real sockets needed)."""

from __future__ import annotations

from datetime import datetime, timezone

from portscope.explain import explain_port, owners_text, scope_text
from portscope.ports import HostPortRanges
from portscope.types import (Endpoint, Family, Owner, OwnerUnknown, ProcessInfo, Proto,
                             Snapshot, Socket, State)

RANGES = HostPortRanges((32768, 60999), (), 1024)


def sock(address, port=8080, *, v6only=None, state=State.LISTEN, owners=(), inode=1,
         remote=None, unknown=None, proto=Proto.TCP):
    family = Family.IPV6 if ":" in address else Family.IPV4
    return Socket(proto, family, Endpoint(address, port), remote, state, inode, 0,
                  v6only=v6only, owners=owners, owner_unknown=unknown)


def owner(pid, ppid=1, name="srv"):
    return Owner(pid, 3, ProcessInfo(pid=pid, ppid=ppid, name=name, user="root"))


def test_scopes():
    assert scope_text(sock("0.0.0.0")).startswith("all interfaces, IPv4 only")
    assert scope_text(sock("::", v6only=False)).startswith("all interfaces, IPv6 and IPv4")
    assert scope_text(sock("::", v6only=True)).startswith("all interfaces, IPv6 only")
    assert scope_text(sock("127.0.0.1")).startswith("loopback only, IPv4")
    assert scope_text(sock("::1", v6only=True)).startswith("loopback only, IPv6")
    assert scope_text(sock("192.0.2.7")) == "one address, IPv4: reachable only through 192.0.2.7"
    assert scope_text(sock("fe80::1%eth0")) == "one link-local IPv6 address on interface eth0"
    assert "IPv4-mapped" in scope_text(sock("::ffff:10.0.0.1", v6only=False))


def test_holders():
    forked = sock("127.0.0.1", owners=(owner(10), owner(11, 10), owner(12, 10)))
    assert "10" in owners_text(forked) and "2 forked child(ren) (pid 11, 12)" in \
        owners_text(forked)
    passed = sock("127.0.0.1", owners=(owner(10), owner(20)))
    assert "SCM_RIGHTS" in owners_text(passed)
    assert "hidden" in owners_text(sock("127.0.0.1", unknown=OwnerUnknown.PERMISSION))
    assert "kernel" in owners_text(sock("127.0.0.1", unknown=OwnerUnknown.KERNEL))


def test_group_and_families_are_told_apart():
    snapshot = Snapshot(sockets=(
        sock("0.0.0.0", owners=(owner(10),), inode=1),
        sock("::", v6only=True, owners=(owner(10),), inode=2),
        sock("127.0.0.1", 9000, owners=(owner(30),), inode=3),
        sock("127.0.0.1", 9000, owners=(owner(31),), inode=4),
    ), taken_at=datetime.now(timezone.utc), hostname="h", backend="test")
    per_family = explain_port(snapshot, 8080, ranges=RANGES, name_of=lambda p, q: None)
    assert [s.title for s in per_family.sections] == [
        "TCP listener 0.0.0.0:8080", "TCP listener [::]:8080", "In short"]
    assert "no service name is assigned" in per_family.summary
    group = explain_port(snapshot, 9000, ranges=RANGES, name_of=lambda p, q: "svc")
    assert group.sections[0].title == "TCP listener 127.0.0.1:9000 (2 sockets)"
    assert "SO_REUSEPORT group" in group.sections[0].lines[1]
    assert "svc/tcp" in group.summary
    nothing = explain_port(snapshot, 7, ranges=RANGES, name_of=lambda p, q: None)
    assert not nothing.found and "CAP_NET_BIND_SERVICE" in nothing.summary
