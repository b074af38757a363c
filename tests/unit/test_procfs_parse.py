"""The /proc/net/{tcp,tcp6,udp,udp6} parser on fixture text: values, filters, malformed lines.

Rows are written the way the kernel writes them (``net/ipv4/tcp_ipv4.c`` ``get_tcp4_sock``):
each 32-bit word of an address as a native-endian integer in hex, ports in host order.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portscope import BackendError, BackendUnavailable, Endpoint, Family, Proto, SocketFilter, State
from portscope.backends.linux_procfs import dump, parse_table

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
          "timeout inode\n")
HEADER6 = ("  sl  local_address                         remote_address                        st "
           "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def hex_address(address: str) -> str:
    """An address as the kernel prints it."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    return "".join(f"{word:08X}" for word in struct.unpack(f"={len(packed) // 4}I", packed))


def row(local: str, lport: int, remote: str, rport: int, state: int, *, tx: int = 0,
        rx: int = 0, uid: int = 0, inode: int = 0, sl: int = 0) -> str:
    """One line as get_tcp4_sock/udp4_format_sock print it (trailing columns included)."""
    return (f"{sl:4d}: {hex_address(local)}:{lport:04X} {hex_address(remote)}:{rport:04X} "
            f"{state:02X} {tx:08X}:{rx:08X} 00:00000000 00000000 {uid:5d}        0 {inode} 1 "
            "0000000000000000 100 0 0 10 0\n")


def parse(text: str, proto=Proto.TCP, family=Family.IPV4, **kwargs):
    return parse_table(text.encode("latin-1"), proto, family, **kwargs)


def test_tcp_rows_decode_like_netlink():
    text = HEADER + row("127.0.0.1", 3306, "0.0.0.0", 0, 0x0A, uid=27, inode=4242, sl=0) \
        + row("10.1.2.3", 22, "192.168.7.9", 51000, 0x01, tx=5, rx=7, uid=0, inode=77, sl=1) \
        + row("127.0.0.1", 40000, "127.0.0.1", 8080, 0x06, sl=2)
    sockets, bad = parse(text, netns=4026531840)
    assert bad == 0
    listener, established, time_wait = sockets
    assert listener == (Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 3306), None, State.LISTEN,
                        4242, 27, 4026531840, None, 0, 0, (), None, None, None, None, None)
    assert (established.local, established.remote) == (("10.1.2.3", 22), ("192.168.7.9", 51000))
    assert (established.state, established.rx_queue_bytes, established.tx_queue_bytes) == \
        (State.ESTABLISHED, 7, 5)
    assert (time_wait.state, time_wait.inode, time_wait.remote) == \
        (State.TIME_WAIT, 0, ("127.0.0.1", 8080))


@pytest.mark.parametrize("address", [
    "::", "::1", "::ffff:127.0.0.1", "fe80::1", "abcd:ef10:ffff:ffff:ffff:ffff:ffff:ff62"])
def test_tcp6_addresses_are_shown_as_inet_ntop_does(address):
    (sock,), bad = parse(HEADER6 + row(address, 80, "::", 0, 0x0A), family=Family.IPV6)
    assert bad == 0 and sock.local == (address, 80) and sock.family is Family.IPV6
    assert sock.v6only is None


@pytest.mark.skipif(sys.byteorder != "little", reason="literal kernel text of a little-endian host")
def test_literal_little_endian_text():
    text = HEADER6 + ("   0: 0000000000000000FFFF00000100007F:9E49 "
                      "10EFCDABFFFFFFFFFFFFFFFF62FFFFFF:0050 01 00000000:00000000 "
                      "00:00000000 00000000  1000        0 99 1 0000000000000000 20 4 30 10 -1\n")
    (sock,), bad = parse(text, family=Family.IPV6)
    assert bad == 0
    assert sock.local == ("::ffff:127.0.0.1", 40521)
    assert sock.remote == ("abcd:ef10:ffff:ffff:ffff:ffff:ffff:ff62", 80)
    assert (sock.uid, sock.inode) == (1000, 99)
    (sock,), _ = parse(HEADER + "   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 "
                       "00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0")
    assert sock.local == ("127.0.0.1", 3306) and sock.remote is None


def test_udp_states():
    text = HEADER + row("127.0.0.1", 53, "0.0.0.0", 0, 0x07, inode=1) \
        + row("127.0.0.1", 40001, "127.0.0.1", 53, 0x01, inode=2)
    unconn, connected = parse(text, proto=Proto.UDP)[0]
    assert (unconn.proto, unconn.state, unconn.remote) == (Proto.UDP, State.UNCONN, None)
    assert (connected.state, connected.remote) == (State.ESTABLISHED, ("127.0.0.1", 53))
    # a UDP socket is never LISTEN: 0A is unknown for UDP, and counted
    assert parse(HEADER + row("127.0.0.1", 53, "0.0.0.0", 0, 0x0A), proto=Proto.UDP) == ([], 1)


GOOD = row("127.0.0.1", 80, "0.0.0.0", 0, 0x0A, inode=10)
MALFORMED = [
    "   1: 0100007F:0050 00000000:0000 0A 00000000:00000000\n",             # too few fields
    "   2: 0100007G:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 11\n",
    "   3: 0100007F:10000 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12\n",
    "   4: 0100007F:0050 00000000:0000 0D 00000000:00000000 00:00000000 00000000 0 0 13\n",
    "   5: 0100007F:0050 00000000:0000 FF 00000000:00000000 00:00000000 00000000 0 0 14\n",
    "   6: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\x005\n",
    "   7: 00000000000000000000000001000000:0050 00000000:0000 0A 00000000:00000000 "
    "00:00000000 00000000 0 0 16\n",                                        # IPv6 in tcp
    "   8: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 -1 0 17\n",
    "garbage\n",
]


def test_malformed_lines_are_counted_and_the_rest_kept():
    sockets, bad = parse(HEADER + GOOD + "".join(MALFORMED) + GOOD)
    assert bad == len(MALFORMED)
    assert [s.inode for s in sockets] == [10, 10]


@pytest.mark.parametrize("text, rows", [
    ("", 0),
    (HEADER, 0),
    (HEADER.rstrip("\n"), 0),                               # header only, no newline
    (HEADER + GOOD.rstrip("\n"), 1),                        # no trailing newline
    (HEADER.replace("\n", "\r\n") + GOOD.replace("\n", "\r\n") * 2, 2),   # CRLF
    (HEADER + GOOD.replace("\n", " extra columns here\n"), 1),
    (HEADER + "\n  \n" + GOOD + "\n\n", 1),                 # blank lines are not malformed
    (GOOD, 1),                                              # no header
])
def test_edge_layouts_are_not_malformed(text, rows):
    sockets, bad = parse(text)
    assert (len(sockets), bad) == (rows, 0)


def test_filters_applied_while_parsing():
    text = HEADER + row("127.0.0.1", 80, "0.0.0.0", 0, 0x0A, inode=1) \
        + row("127.0.0.1", 443, "0.0.0.0", 0, 0x0A, inode=2) \
        + row("127.0.0.1", 80, "127.0.0.1", 5000, 0x01, inode=3) + "garbage\n"
    sockets, bad = parse(text, states=frozenset({State.LISTEN}), port_range=(1, 100))
    assert [s.inode for s in sockets] == [1]
    assert bad == 1, "filtered rows are not malformed; malformed ones still count"


@pytest.fixture
def proc_root(tmp_path):
    """A procfs root with one socket per table and a malformed line in tcp."""
    net = tmp_path / "net"
    net.mkdir()
    (net / "tcp").write_text(HEADER + row("0.0.0.0", 22, "0.0.0.0", 0, 0x0A, inode=1)
                             + "bad line\n" + row("127.0.0.1", 22, "127.0.0.1", 6000, 1, inode=2))
    (net / "tcp6").write_text(HEADER6 + row("::", 22, "::", 0, 0x0A, inode=3))
    (net / "udp").write_text(HEADER + row("127.0.0.1", 53, "0.0.0.0", 0, 0x07, inode=4))
    (net / "udp6").write_text(HEADER6 + row("::1", 53, "::", 0, 0x07, inode=5))
    return tmp_path


def test_dump_reads_every_table_and_warns_per_file(proc_root):
    sockets, warnings = dump(proc_root=str(proc_root), netns=7)
    assert sorted(s.inode for s in sockets) == [1, 2, 3, 4, 5]
    assert {s.netns for s in sockets} == {7}
    assert warnings == [f"1 malformed line in {proc_root}/net/tcp skipped"]


def test_dump_honours_the_filter(proc_root):
    def inodes(**kwargs):
        return sorted(s.inode for s in dump(SocketFilter(**kwargs), proc_root=str(proc_root))[0])

    assert inodes(protos=frozenset({Proto.UDP})) == [4, 5]
    assert inodes(families=frozenset({Family.IPV6})) == [3, 5]
    assert inodes(states=frozenset({State.LISTEN})) == [1, 3]
    assert inodes(port_range=(53, 53)) == [4, 5]
    assert inodes(address="127.0.0.1") == [1, 2, 3, 4]    # 0.0.0.0 covers it; so may [::] (v6only unknown)
    _, warnings = dump(SocketFilter(protos=frozenset({Proto.UDP})), proc_root=str(proc_root))
    assert warnings == [], "an unread table gives no warning"


def test_missing_tables(proc_root):
    (proc_root / "net" / "tcp6").unlink()
    (proc_root / "net" / "udp6").unlink()
    sockets, warnings = dump(proc_root=str(proc_root))
    assert sorted(s.inode for s in sockets) == [1, 2, 4]
    assert len(warnings) == 1, "no IPv6 tables (IPv6 disabled) is not a warning"
    (proc_root / "net" / "udp").unlink()
    assert dump(proc_root=str(proc_root))[1][-1] == \
        f"{proc_root}/net/udp is missing: no udp sockets listed"


def test_unreadable_table_and_missing_procfs(proc_root, tmp_path_factory):
    (proc_root / "net" / "udp").unlink()
    (proc_root / "net" / "udp").mkdir()                     # read() fails with EISDIR
    with pytest.raises(BackendError, match="udp"):
        dump(proc_root=str(proc_root))
    with pytest.raises(BackendUnavailable):
        dump(proc_root=str(tmp_path_factory.mktemp("empty")))


# --- properties ---------------------------------------------------------------------------

addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
ports = st.integers(0, 65535)


@given(st.one_of(st.tuples(st.just(Family.IPV4), addresses4, addresses4),
                 st.tuples(st.just(Family.IPV6), addresses6, addresses6)),
       ports, st.integers(1, 65535), st.sampled_from([0x01, 0x06, 0x0A]),
       st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_round_trip(addrs, lport, rport, state, uid, inode):
    family, local, remote = addrs
    (sock,), bad = parse(row(local, lport, remote, rport, state, uid=uid, inode=inode),
                         family=family)
    assert bad == 0
    assert sock.local == (local, lport) and sock.remote == (remote, rport)
    assert (sock.uid, sock.inode) == (uid, inode)
    assert ipaddress.ip_address(sock.local.address) == ipaddress.ip_address(local)


@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data):
    for proto in Proto.TCP, Proto.UDP:
        for family in Family.IPV4, Family.IPV6:
            sockets, bad = parse_table(data, proto, family)
            lines = [line for line in data.split(b"\n") if line.strip(b" \t\r")]
            assert bad >= 0 and len(sockets) + bad <= len(lines)


junk_lines = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"")),
    st.text(alphabet="0123456789ABCDEFabcdef: \t\r\x00-+_xyz", max_size=160).map(str.encode),
    # a real row with one character changed
    st.tuples(st.integers(0, len(GOOD) - 2), st.characters()).map(
        lambda t: (GOOD[:t[0]] + t[1] + GOOD[t[0] + 1:]).rstrip("\n").replace("\n", "")
        .encode("utf-8", "surrogatepass")),
)


@given(st.lists(st.one_of(st.just(None), junk_lines), max_size=30))
def test_junk_among_good_rows_is_counted_never_fatal(lines):
    data = HEADER.encode() + b"".join(GOOD.encode() if line is None else line + b"\n"
                                      for line in lines)
    sockets, bad = parse_table(data, Proto.TCP, Family.IPV4)
    good = sum(line is None for line in lines)
    nonblank_junk = [line for line in lines if line is not None and line.strip(b" \t\r")]
    assert len([s for s in sockets if s.inode == 10 and s.local == ("127.0.0.1", 80)]) >= good
    assert len(sockets) + bad == good + len(nonblank_junk)
