"""The netlink decoders on real replies and on mutated ones: any bytes either decode into
well-formed sockets or raise ``BackendError`` (never a crash, a hang or a half-built socket).

The canned replies are real: this machine's kernel answering inet_diag and unix_diag dumps
while this test holds a listener, a connection pair, a UDP socket and a UNIX pair on loopback.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink is Linux")

from portscope.backends import _netlink_io as nlio  # noqa: E402
from portscope.errors import BackendError  # noqa: E402
from portscope.filters import SocketFilter  # noqa: E402
from portscope.types import Endpoint, Proto, Socket, State, UnixInfo  # noqa: E402


def _first_messages(chunks: list[bytes], count: int) -> list[bytes]:
    """The first ``count`` messages of a reply, then NLMSG_DONE: a short canned reply."""
    from portscope.backends import _netlink_wire as w
    kept = bytearray()
    for chunk in chunks:
        off = 0
        while off < len(chunk) and count:
            length, kind = w.NLMSGHDR.unpack_from(chunk, off)[:2]
            if kind == w.NLMSG_DONE:
                break
            kept += chunk[off:off + ((length + 3) & ~3)]
            off += (length + 3) & ~3
            count -= 1
    done = w.NLMSGHDR.pack(w.NLMSGHDR.size + 4, w.NLMSG_DONE, 2, 0, 0) + bytes(4)
    return [bytes(kept), done]


@pytest.fixture(scope="module")
def canned():
    """``([(proto, [datagram bytes])], {fd: socket inode})``: one short real reply per dump,
    ending with NLMSG_DONE, and the inodes of the sockets held here, in creation order:
    the test's own TCP listener and accepted connection, its UDP sockets on 127.0.0.1 and ::1
    (the kernel filters on their port), and the first UNIX sockets of the machine."""
    from portscope.backends import _netlink_wire as w
    from portscope.backends import linux_netlink as netlink
    held = []
    try:
        listener = socket.socket()
        held.append(listener)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        held += [socket.create_connection(("127.0.0.1", port)), listener.accept()[0]]
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            held.append(udp)
            udp.bind((address, port))
        held += socket.socketpair()
        raw, _ = netlink.collect(SocketFilter(port_range=(port, port)))
        replies = [(proto, list(chunks)) for proto, chunks, _ in raw.replies]
        sock = nlio.open_diag_socket()
        try:
            chunks, _ = nlio.receive(nlio.request_chunks(
                sock, w.unix_diag_req(w.UNIX_SHOW)), w.UNIX_ATTRS_OFFSET)
        finally:
            sock.close()
        replies.append((Proto.UNIX, _first_messages(chunks, 8)))
        yield replies, {s.fileno(): os.fstat(s.fileno()).st_ino for s in held}
    finally:
        for s in held:
            s.close()


def decode_all(proto: Proto, chunks: list[bytes]) -> list[Socket]:
    """What the backend does with a reply: walk it to NLMSG_DONE, then decode it (a UNIX
    reply also linked, as a deferred join does first)."""
    from portscope.backends import linux_netlink as netlink
    from portscope.backends import _netlink_wire as w
    got, interrupted = nlio.receive(iter(chunks), w.UNIX_ATTRS_OFFSET if proto is Proto.UNIX
                                    else w.NLMSG_INET_DIAG_MSG.size)
    if proto is Proto.UNIX:
        socks = netlink.decode_unix(got, 1, dedup=interrupted)
        # a deferred join's first pass (names, peers: link_unix) reads what decodes, and cuts
        # it into runs that decode to the same sockets
        pieces = netlink.link_unix(got).pieces
        assert netlink.decode_unix(pieces, 1, dedup=interrupted) == socks
        return socks
    raw = netlink.RawDump(SocketFilter(), 1, [(proto, got, interrupted)])
    netlink.inodes(raw)
    return list(netlink.decode(raw))


def well_formed(sock: Socket) -> bool:
    return (isinstance(sock, Socket) and isinstance(sock.state, State)
            and isinstance(sock.local, Endpoint) and isinstance(sock.local.address, str)
            and (sock.unix is None or isinstance(sock.unix, UnixInfo)))


def test_the_canned_replies_decode(canned):
    replies, inodes = canned
    decoded: dict[Proto, list[Socket]] = {}
    for proto, chunks in replies:
        decoded.setdefault(proto, []).extend(decode_all(proto, chunks))
    # the kernel filtered on the test's port: its listener, the accepted end (the client's
    # local port is another) and both UDP sockets are there, maybe beside others' sockets
    found = {s.inode for socks in decoded.values() for s in socks}
    listener, client, accepted, udp4, udp6 = list(inodes.values())[:5]
    assert {listener, accepted, udp4, udp6} <= found and client not in found
    assert 1 <= len(decoded[Proto.UNIX]) <= 8
    assert all(well_formed(s) for socks in decoded.values() for s in socks)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_replies_decode_or_raise_backend_error(canned, data):
    proto, chunks = data.draw(st.sampled_from(canned[0]))
    chunks = [bytearray(c) for c in chunks]
    k = data.draw(st.integers(0, len(chunks) - 1))
    chunk = chunks[k]
    how = data.draw(st.sampled_from(["bytes", "truncate", "header"]))
    if how == "truncate" and chunk:
        del chunk[data.draw(st.integers(0, len(chunk) - 1)):]
    elif how == "header" and len(chunk) >= 16:
        # a message header field: length, type or flags of the first or a later message
        at = data.draw(st.sampled_from([0, 4, 6])) + data.draw(st.sampled_from(
            [0, *range(16, len(chunk) - 16, 4)]))
        chunk[at:at + 2] = data.draw(st.binary(min_size=2, max_size=2))
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            if chunk:
                chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    try:
        socks = decode_all(proto, [bytes(c) for c in chunks])
    except BackendError as exc:
        assert str(exc).startswith("netlink"), exc
        return
    assert all(well_formed(s) for s in socks)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([Proto.TCP, Proto.UDP, Proto.UNIX]),
       st.lists(st.binary(max_size=200), min_size=1, max_size=3))
def test_random_bytes_raise_backend_error_or_decode(proto, chunks):
    try:
        socks = decode_all(proto, chunks)
    except BackendError:
        return
    assert all(well_formed(s) for s in socks)


def test_a_datagram_as_the_last_time_is_not_walked_again_and_a_changed_one_is(canned):
    from portscope.backends import _netlink_wire as w
    size = w.NLMSG_INET_DIAG_MSG.size
    proto, chunks = canned[0][0]
    assert nlio.receive(iter(chunks), size, chunks) == (chunks, False)
    for bad in ([chunks[0][:7], *chunks[1:]], [*chunks[:-1], chunks[-1][:7]]):
        with pytest.raises(BackendError, match="malformed"):      # a cut header
            nlio.receive(iter(bad), size, chunks)
    with pytest.raises(BackendError, match="without NLMSG_DONE"):
        nlio.receive(iter(chunks[:-1]), size, chunks)
