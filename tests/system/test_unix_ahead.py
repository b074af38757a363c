"""The UNIX dump received ahead (``backends/_netlink_ahead.py``): a forked child dumps the
caller's namespace while the CLI loads, and the command decodes its reply as it arrives.

Against real sockets: the dump taken ahead equals one taken in-process field for field, and
``ss -xa`` inode for inode; one that is not what the command needs (another request, another
namespace) is dropped and its child reaped, and the CLI in another namespace lists that
namespace's sockets. The kernel never flags a unix_diag dump interrupted (unix_diag does not
check its dump's consistency), so the retries are tested on the kernel's real reply replayed
with NLM_F_DUMP_INTR set in it: the child asks again, and after the last try keeps the reply,
drops the sockets listed twice and says so, as an in-process dump does.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
from netns import netns  # noqa: F401  (fixture)

from portscope import Proto, SocketFilter, namespaces
from portscope.backends import _netlink_ahead as ahead
from portscope.backends import _netlink_io as nlio
from portscope.backends import _netlink_wire as w
from portscope.backends import linux_netlink
from portscope.errors import BackendError

from .test_unix import ss_inodes, ux  # noqa: F401  (ux: fixture)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/net"), reason="Linux only")

REQUEST = w.unix_diag_req(w.UNIX_SHOW)


def holder_inodes(ux) -> set[int]:
    return {ux["listener"], ux["abstract"], ux["dgram"], ux["dgram_client"], ux["waiting"],
            *ux["accepted"], *ux["clients"].values(), *ux["pair"]}


def reaped(pid: int) -> bool:
    """True when ``pid`` is no child of ours any more (ended and waited for)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def prefetched():
    """``prefetched()`` starts the dump ahead and returns it as ``take`` will; whatever is
    left of it is ended after the test."""
    def start() -> ahead.DumpAhead:
        ahead.prefetch_unix()
        dump = ahead._prefetched
        assert dump is not None and dump.netns == namespaces.own_inode()
        return dump

    yield start
    ahead.drop()


def test_dump_ahead_equals_one_in_process_and_ss(ux, prefetched):
    before = ss_inodes()
    child = prefetched()
    dump, warnings = linux_netlink.collect_unix(namespaces.own_inode())
    assert dump.ahead is child                      # taken, still arriving
    got = dump.decode()
    after = ss_inodes()
    assert dump.ahead is None and dump.chunks and not dump.interrupted and warnings == []
    assert reaped(child._pid)
    here = {s.inode: s for s in linux_netlink.dump_unix(namespaces.own_inode())[0]}
    by_inode = {s.inode: s for s in got}
    assert len(by_inode) == len(got)                # each socket once
    mine = holder_inodes(ux)
    assert {i: by_inode[i] for i in mine} == {i: here[i] for i in mine}
    # other processes open and close sockets meanwhile: every socket ss lists before and
    # after is in the dump, and every socket of the dump in one of ss's lists
    assert set(before) & set(after) <= set(by_inode) <= set(before) | set(after)
    # the same bytes once whole: a lookup's raw search reads them too
    assert linux_netlink.decode_unix(dump.chunks, dump.netns) == got


def test_wait_gives_the_whole_reply_to_a_lookup(ux, prefetched):
    prefetched()
    dump, _ = linux_netlink.collect_unix(namespaces.own_inode())
    dump.wait()
    assert dump.ahead is None and not dump.interrupted
    assert ux["listener"] in {s.inode for s in dump.decode()}


def test_a_dump_ahead_of_something_else_is_dropped(prefetched):
    own = namespaces.own_inode()
    child = prefetched()
    other = w.unix_diag_req(w.UNIX_SHOW & ~w.UDIAG_SHOW_UID)
    assert ahead.take(other, own) is None           # another request
    assert reaped(child._pid)
    assert ahead.take(REQUEST, own) is None         # taken once: nothing left
    child = prefetched()
    assert ahead.take(REQUEST, own + 1) is None     # another namespace
    assert reaped(child._pid)
    child = prefetched()
    assert ahead.take(REQUEST, None) is None        # a namespace not known
    assert reaped(child._pid)
    # an in-process dump then, as without a prefetch
    child = prefetched()
    ahead.drop()
    assert reaped(child._pid)
    dump, _ = linux_netlink.collect_unix(own)
    assert dump.ahead is None and dump.chunks


def test_cli_in_another_namespace_lists_that_namespace(netns, cli):
    h = netns.holder("""
        l = socket.socket(socket.AF_UNIX); l.bind(b"\\0psux-ahead"); l.listen()
        c = socket.socket(socket.AF_UNIX); c.connect(b"\\0psux-ahead"); a, _ = l.accept()
        ready(inodes=[os.fstat(s.fileno()).st_ino for s in (l, c, a)])
    """)
    result = cli("list", "-x", "-a", "--json", "--netns", netns.name)
    assert result.returncode == 0, result.stderr
    listed = {s["inode"] for s in json.loads(result.stdout)["sockets"]}
    assert listed == set(ss_inodes(netns.prefix())) >= set(h.info["inodes"])
    assert listed.isdisjoint(ss_inodes())           # none of the host's own


def _flag_interrupted(chunk: bytes) -> bytes:
    """``chunk`` with NLM_F_DUMP_INTR set on its first message."""
    flags = struct.unpack_from("=H", chunk, 6)[0] | w.NLM_F_DUMP_INTR
    return chunk[:6] + struct.pack("=H", flags) + chunk[8:]


def _twice(chunks: list[bytes]) -> list[bytes]:
    """The reply with its first datagram's messages listed again before NLMSG_DONE, as a dump
    that met a change may list a socket twice; the first message flagged interrupted."""
    first = _flag_interrupted(chunks[0])
    last = chunks[-1]
    done_at = len(last) - w.NLMSGHDR.size - 4       # NLMSG_DONE ends the reply
    assert w.NLMSGHDR.unpack_from(last, done_at)[1] == w.NLMSG_DONE
    repeated = chunks[0][:linux_netlink._offsets(chunks[0])[-1]]   # all but its last message
    if len(chunks) == 1:
        return [first[:done_at] + repeated + first[done_at:]]
    return [first, *chunks[1:-1], last[:done_at] + repeated + last[done_at:]]


@pytest.fixture
def replayed(monkeypatch):
    """``replayed(replies)``: each request sent (by the child, or in-process) is answered
    with the next of ``replies`` (lists of datagrams) instead of the kernel's answer."""
    def replay(replies: list[list[bytes]]) -> None:
        answers = iter(replies)
        monkeypatch.setattr(nlio, "request_chunks", lambda sock, request: iter(next(answers)))

    return replay


def _kernel_reply() -> list[bytes]:
    sock = nlio.open_diag_socket()
    try:
        chunks, interrupted = nlio.receive(nlio.request_chunks(sock, REQUEST),
                                           w.UNIX_ATTRS_OFFSET)
    finally:
        sock.close()
    assert not interrupted
    return chunks


def received(dump: linux_netlink.UnixDump, how: str) -> list:
    """The sockets of ``dump``: decoded as they arrive (``"decode"``), or linked as they
    arrive and then decoded in two shares (``"deferred"``: a large listing that two
    processes write)."""
    if how == "decode":
        return dump.decode()
    linux_netlink.join_unix([dump], SocketFilter(protos=frozenset({Proto.UNIX})))
    return [s for k in range(2) for s in linux_netlink.decode_unix_share([dump], k, 2)]


@pytest.mark.parametrize("how", ["decode", "deferred"])
def test_an_interrupted_reply_is_asked_again(ux, prefetched, replayed, how):
    clean = _kernel_reply()
    own = namespaces.own_inode()
    replayed([_twice(clean), clean])
    prefetched()
    dump, warnings = linux_netlink.collect_unix(own)
    got = received(dump, how)
    assert warnings == [] and not dump.interrupted and dump.chunks
    assert got == linux_netlink.decode_unix(clean, own)


@pytest.mark.parametrize("how", ["decode", "deferred"])
def test_interrupted_every_time_keeps_the_last_reply_once_each_and_says_so(
        ux, prefetched, replayed, how):
    clean = _kernel_reply()
    own = namespaces.own_inode()
    flagged = _twice(clean)
    assert len(linux_netlink.decode_unix(flagged, own)) > len(clean_sockets := (
        linux_netlink.decode_unix(clean, own)))
    replayed([flagged] * nlio.MAX_DUMP_ATTEMPTS)
    prefetched()
    dump, warnings = linux_netlink.collect_unix(own)
    got = received(dump, how)
    assert dump.interrupted and warnings == [nlio.interrupted_warning("unix")]
    assert got == clean_sockets
    # as in-process
    replayed([flagged] * nlio.MAX_DUMP_ATTEMPTS)
    assert linux_netlink.dump_unix(own) == (clean_sockets, warnings)


@pytest.mark.parametrize("how", ["decode", "deferred"])
def test_a_malformed_reply_fails_as_in_process(prefetched, replayed, how):
    clean = _kernel_reply()
    own = namespaces.own_inode()
    cut = [clean[0][:w.UNIX_ATTRS_OFFSET + 7], *clean[1:]]
    replayed([cut])
    with pytest.raises(BackendError) as in_process:
        linux_netlink.dump_unix(own)
    replayed([cut])
    child = prefetched()
    with pytest.raises(BackendError) as received_ahead:     # at once, or while decoding
        received(linux_netlink.collect_unix(own)[0], how)
    assert str(received_ahead.value) == str(in_process.value)
    assert reaped(child._pid)
