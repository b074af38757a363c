"""/proc/net/unix parsing and UNIX socket names on fixture text and bytes (no kernel)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portscope import State
from portscope.backends import unix_name
from portscope.backends.linux_procfs import parse_unix

UNIX = b"""Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/demo.sock
0000000000000000: 00000003 00000000 00000000 0001 03 4243 /run/demo.sock
0000000000000000: 00000002 00000000 00000000 0001 02 4244
0000000000000000: 00000002 00000000 00000000 0002 01 4245 @abstract@name
0000000000000000: 00000002 00000000 00010000 0005 01 4246 /with space.sock
not a row
"""


def test_rows_decode():
    sockets, bad = parse_unix(UNIX, netns=7)
    assert bad == 1
    got = [(s.unix.type.value, s.state, s.inode, s.local.address, s.netns) for s in sockets]
    assert got == [("stream", State.LISTEN, 4242, "/run/demo.sock", 7),
                   ("stream", State.ESTABLISHED, 4243, "/run/demo.sock", 7),
                   ("stream", State.ESTABLISHED, 4244, "", 7),       # not accepted yet
                   ("dgram", State.UNCONN, 4245, "@abstract@name", 7),
                   ("seqpacket", State.LISTEN, 4246, "/with space.sock", 7)]
    assert all(s.unix.peer_inode is None and s.unix.vfs_inode is None for s in sockets)


def test_names():
    assert unix_name(b"") == ""
    assert unix_name(b"/run/x.sock\0") == "/run/x.sock"
    assert unix_name(b"\0name\0tail") == "@name\\x00tail"
    assert unix_name(b"/tmp/\xff\x1b.sock\0") == "/tmp/\\xff\x1b.sock"   # escaped on display


@given(st.binary(max_size=600))
def test_any_text_parses_without_error(data):
    sockets, bad = parse_unix(data)
    assert bad >= 0 and all(s.inode >= 0 for s in sockets)


@given(st.binary(max_size=108))
def test_any_name_is_text(raw):
    assert isinstance(unix_name(raw), str)


def _sock(address, uid, state=State.LISTEN):
    from portscope import Endpoint, Family, Owner, ProcessInfo, Proto, Socket, UnixInfo, UnixType
    owner = Owner(7, 3, ProcessInfo(pid=7, name="srv", exe="/usr/bin/srv", uid=uid,
                                    user="root" if uid == 0 else "u"))
    return Socket(Proto.UNIX, Family.UNIX, Endpoint(address, None), None, state, 9, uid,
                  owners=(owner,), unix=UnixInfo(UnixType.STREAM, 1, 2))


def test_audit_rules_for_unix_sockets():
    from portscope.audit import rules
    assert rules.unix_world_writable(_sock("/run/d.sock", 0), "/run/d.sock", 0o666).rule == \
        "unix-world-writable"
    assert rules.unix_world_writable(_sock("/run/d.sock", 0), "/run/d.sock", 0o660) is None
    assert rules.unix_world_writable(_sock("/run/d.sock", 1000), "/run/d.sock", 0o666) is None
    found = rules.unix_abstract_host(_sock("@shim", 0), host_netns=True)
    assert (found.rule, found.address, found.pid, found.port) == \
        ("unix-abstract-host", "@shim", 7, None)
    assert rules.unix_abstract_host(_sock("@shim", 0), host_netns=False) is None
    assert rules.unix_abstract_host(_sock("/run/x.sock", 0), host_netns=True) is None
    assert rules.unix_stale_file("/tmp/x.sock").severity == "low"
