"""UNIX domain sockets against real sockets and processes: the netlink and /proc/net/unix
backends, peers resolved both ways, ``ss -xa`` inode for inode, ``portscope list -x``.

The holder (tests/holders.py) listens on a path with three clients in three forked processes
(each accepted), shares a socketpair with a forked child, listens on an abstract name holding
NUL bytes, binds a datagram socket that another forked child connects to, and leaves a fourth
client waiting in the accept queue. Every child reports its PID and socket inode through a
pipe.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess

import pytest
import seccomp
from holders import start_holder
from netns import netns  # noqa: F401  (fixture)

from portscope import Proto, SocketFilter, State, take_snapshot
from portscope.backends import linux_netlink, linux_procfs
from portscope.render import jsonfmt
from portscope.snapshot import open_snapshot

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/net"), reason="Linux only")

HOLDER = """
    import tempfile
    base = tempfile.mkdtemp(prefix="psux-")
    path = os.path.join(base, "srv.sock")
    dgram_path = os.path.join(base, "dgram.sock")
    ino = lambda s: os.fstat(s.fileno()).st_ino
    report_r, report_w = os.pipe()
    def child(work):
        # a forked process that runs work() (which returns a socket), reports, then waits
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            s = work()
            for fd in map(int, os.listdir("/proc/self/fd")):   # hold only this one socket
                if fd > 2 and fd not in (s.fileno(), report_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            os.write(report_w, (json.dumps([os.getpid(), ino(s)]) + "\\n").encode())
            while True:
                time.sleep(60)
        return pid
    listener = socket.socket(socket.AF_UNIX); listener.bind(path); listener.listen(16)
    def connect():
        c = socket.socket(socket.AF_UNIX); c.connect(path); return c
    clients = [child(connect) for _ in range(3)]
    accepted = [listener.accept()[0] for _ in range(3)]
    a, b = socket.socketpair()
    pair_kid = child(lambda: b)
    b.close()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    abstract.bind(b"\\0psux-" + str(os.getpid()).encode() + b"\\0tail"); abstract.listen()
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); dgram.bind(dgram_path)
    def dgram_client():
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.connect(dgram_path); return c
    dgram_kid = child(dgram_client)
    waiting = connect()                       # never accepted: in the accept queue
    reports = os.fdopen(report_r)
    kids = dict(json.loads(reports.readline()) for _ in range(5))
    ready(base=base, path=path, dgram_path=dgram_path, abstract_pid=os.getpid(),
          listener=ino(listener), accepted=[ino(s) for s in accepted],
          clients={str(pid): kids[pid] for pid in clients},
          pair=[ino(a), kids[pair_kid]], pair_kid=pair_kid,
          abstract=ino(abstract), dgram=ino(dgram), dgram_client=kids[dgram_kid],
          dgram_kid=dgram_kid, waiting=ino(waiting))
"""


@pytest.fixture(scope="module")
def ux():
    holder = start_holder(HOLDER)
    try:
        yield holder.info | {"pid": holder.pid}
    finally:
        holder.stop()
        import shutil
        shutil.rmtree(holder.info["base"], ignore_errors=True)


def unix_snapshot(**kwargs):
    return take_snapshot(SocketFilter(protos=frozenset({Proto.UNIX})), netns="host", **kwargs)


def test_netlink_decodes_every_field(ux):
    by_inode = {s.inode: s for s in linux_netlink.dump_unix()[0]}
    listener = by_inode[ux["listener"]]
    st = os.stat(ux["path"])
    assert listener.local.address == ux["path"] and listener.local.port is None
    assert listener.state is State.LISTEN and listener.unix.type == "stream"
    assert (listener.unix.vfs_dev, listener.unix.vfs_inode) == (st.st_dev, st.st_ino & 0xFFFFFFFF)
    assert listener.uid == os.getuid()
    assert listener.unix.pending == (ux["waiting"],)
    assert (listener.rx_queue_bytes, listener.tx_queue_bytes) == (1, 16)   # pending, backlog
    for server, client in zip(sorted(ux["accepted"]), sorted(ux["clients"].values())):
        assert by_inode[server].state is State.ESTABLISHED
    for inode in ux["accepted"]:
        s = by_inode[inode]
        assert s.local.address == ux["path"] and s.unix.vfs_inode == listener.unix.vfs_inode
        assert by_inode[s.unix.peer_inode].unix.peer_inode == inode
    mine, theirs = ux["pair"]
    assert by_inode[mine].unix.peer_inode == theirs and by_inode[theirs].unix.peer_inode == mine
    assert by_inode[mine].local.address == ""
    abstract = by_inode[ux["abstract"]]
    assert abstract.local.address == f"@psux-{ux['abstract_pid']}\\x00tail"
    assert abstract.unix.type == "seqpacket" and abstract.unix.vfs_inode is None
    dgram = by_inode[ux["dgram"]]
    # a datagram socket others connect to is ESTABLISHED for the kernel (as ss shows it)
    assert dgram.state is State.ESTABLISHED and dgram.unix.type == "dgram"
    assert dgram.unix.peer_inode is None
    assert by_inode[ux["dgram_client"]].unix.peer_inode == ux["dgram"]


@pytest.mark.usefixtures("fd_scan")
def test_peers_resolved_both_ways(ux):
    by_inode = {s.inode: s for s in unix_snapshot().sockets}
    server = ux["pid"]
    peer_of = {}
    for pid, inode in ux["clients"].items():
        client = by_inode[inode]
        assert [o.pid for o in client.owners] == [int(pid)]
        assert client.remote.address == ux["path"]
        (peer,) = client.unix.peers
        assert peer.inode in ux["accepted"] and [o.pid for o in peer.owners] == [server]
        peer_of[peer.inode] = int(pid)
    assert sorted(peer_of) == sorted(ux["accepted"])
    for inode in ux["accepted"]:          # and back: each accepted socket names its client
        (peer,) = by_inode[inode].unix.peers
        assert [o.pid for o in peer.owners] == [peer_of[inode]]
        assert by_inode[inode].remote.address == ""
    mine, theirs = ux["pair"]
    assert [o.pid for o in by_inode[theirs].owners] == [ux["pair_kid"]]
    assert [o.pid for o in by_inode[mine].unix.peers[0].owners] == [ux["pair_kid"]]
    assert [o.pid for o in by_inode[theirs].unix.peers[0].owners] == [server]
    # a datagram server has no peer of its own: its clients are found the other way
    dgram = by_inode[ux["dgram"]]
    assert dgram.unix.peer_inode is None and dgram.remote is None
    assert [(p.inode, [o.pid for o in p.owners]) for p in dgram.unix.peers] == \
        [(ux["dgram_client"], [ux["dgram_kid"]])]
    # the client waiting in the accept queue, and the listener it waits at
    listener = by_inode[ux["listener"]]
    assert [p.inode for p in listener.unix.peers] == [ux["waiting"]]
    assert [p.inode for p in by_inode[ux["waiting"]].unix.peers] == [ux["listener"]]
    assert by_inode[ux["waiting"]].remote.address == ux["path"]


@pytest.mark.usefixtures("fd_scan")
def test_json_rows_are_the_joined_sockets_json(ux):
    """The JSON writer's own join (``jsonfmt.UnixRows``: no joined sockets built) writes the
    text ``socket_json`` writes of the joined sockets, byte for byte, whole and in two
    shares: for every kind the holder has (clients in other processes, a socketpair across
    fork, a client waiting in the accept queue, a datagram socket with a client, an abstract
    listener) and a socket two descriptors hold (written as joined)."""
    a, b = socket.socketpair()
    dup = os.dup(a.fileno())
    try:
        stream = open_snapshot(SocketFilter(protos=frozenset({Proto.UNIX})), netns="host")
        assert stream.divisible

        def text(k, n, rows, lead="\n  "):
            out = io.StringIO()
            jsonfmt.write_items(out, stream.share(k, n, rows), lead=lead)
            return out.getvalue()

        def same(written: str, expected: str) -> None:
            """Equal, and where not, the first row that differs shown (not a diff of what
            may be megabytes: the host may hold many other sockets)."""
            rows, wanted = written.split(",\n  "), expected.split(",\n  ")
            differ = next((i for i, (x, y) in enumerate(zip(rows, wanted)) if x != y), None)
            assert differ is None or rows[differ] == wanted[differ]
            assert len(rows) == len(wanted)

        joined = text(0, 1, None)
        same(text(0, 1, jsonfmt.UnixRows), joined)
        same(text(0, 2, jsonfmt.UnixRows) + text(1, 2, jsonfmt.UnixRows, ",\n  "), joined)
        by_inode = {s["inode"]: s for s in json.loads("[" + joined + "]")}
        fixture = {ux["listener"], ux["abstract"], ux["dgram"], ux["dgram_client"],
                   ux["waiting"], *ux["pair"], *ux["accepted"], *ux["clients"].values()}
        assert fixture <= set(by_inode)
        shared = by_inode[os.fstat(a.fileno()).st_ino]
        assert sorted(o["fd"] for o in shared["owners"]) == sorted([a.fileno(), dup])
        assert [o["pid"] for p in shared["peers"] for o in p["owners"]] == [os.getpid()]
    finally:
        os.close(dup)
        a.close()
        b.close()


@pytest.mark.parametrize("piece_bytes", [None, 64])
def test_a_deferred_join_is_the_join_of_the_sockets_decoded_whole(ux, netns, monkeypatch,
                                                                  piece_bytes):
    """Linked without decoding (``link_unix``: names, peers, accept queues), then decoded a
    share at a time (``decode_unix_share``): the same joined sockets, owners, peers and
    remote names as the join of every socket decoded whole; over two namespaces, in one
    share or three, with the replies cut at message boundaries into runs of 32 KiB or of
    one message each (64 bytes)."""
    from portscope import namespaces, unixsock
    from portscope.owners import fdscan
    from portscope.types import OwnerUnknown
    if piece_bytes:
        monkeypatch.setattr(linux_netlink.UnixLinks, "PIECE_BYTES", piece_bytes)
    h = netns.holder("""
        l = socket.socket(socket.AF_UNIX); l.bind(b"\\0psux-deferred"); l.listen()
        c = socket.socket(socket.AF_UNIX); c.connect(b"\\0psux-deferred"); a, _ = l.accept()
        w = socket.socket(socket.AF_UNIX); w.connect(b"\\0psux-deferred")
        ready(inodes=[os.fstat(s.fileno()).st_ino for s in (l, c, a, w)])
    """)
    flt = SocketFilter(protos=frozenset({Proto.UNIX}))
    dumps = [linux_netlink.collect_unix(namespaces.own_inode())[0],
             *(r[0] for r in namespaces.run_in(namespaces.select(netns.name), lambda e:
                                                linux_netlink.collect_unix(e.namespace.inode)))]
    index = fdscan.OwnerIndex(fdscan.start_scan().result())
    deferred = linux_netlink.join_unix(dumps, flt)
    every = [s for d in dumps for s in linux_netlink.decode_unix(d.chunks, d.netns)]
    if piece_bytes:                     # runs of one message each (or of NLMSG_DONE alone)
        assert {len(linux_netlink.decode_unix([c])) for d in dumps for c in d.chunks} <= {0, 1}
        assert len(dumps[1].chunks) >= 4
    whole = list(unixsock.UnixJoin(every, flt).sockets(index, OwnerUnknown.PERMISSION))

    def joined(n):
        found = [s for k in range(n)
                 for s in deferred.sockets(index, OwnerUnknown.PERMISSION, share=(k, n))]
        assert len(found) == len(whole)
        return sorted(found, key=lambda s: s.inode)

    assert list(deferred.sockets(index, OwnerUnknown.PERMISSION)) == whole
    assert joined(3) == sorted(whole, key=lambda s: s.inode)
    by_inode = {s.inode: s for s in whole}
    listener, client, accepted, waiting = map(by_inode.get, h.info["inodes"])
    assert [p.inode for p in listener.unix.peers] == [waiting.inode]
    assert waiting.remote.address == listener.local.address == "@psux-deferred"
    assert [p.inode for p in client.unix.peers] == [accepted.inode]
    assert by_inode[ux["dgram"]].unix.peers[0].inode == ux["dgram_client"]
    assert deferred.size_bytes() == sum(map(len, dumps[0].chunks + dumps[1].chunks))


def test_a_datagram_socket_many_send_to_lists_them_all_as_peers(tmp_path):
    import socket
    path = str(tmp_path / "dgram.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        clients = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for c in clients:
                c.connect(path)
            by_inode = {s.inode: s for s in unix_snapshot(owners=False).sockets}
            mine, *theirs = (os.fstat(s.fileno()).st_ino for s in (server, *clients))
        finally:
            for c in clients:
                c.close()
    assert sorted(p.inode for p in by_inode[mine].unix.peers) == sorted(theirs)
    for inode in theirs:
        assert [p.inode for p in by_inode[inode].unix.peers] == [mine]
        assert by_inode[inode].remote.address == path


_SS_ROW = re.compile(r"^(\S+)\s+(\S+)\s+\d+\s+\d+\s+(.*?)\s+(\d+)\s+(.*?)\s+(\d+)\s*$")


def ss_inodes(prefix: list[str] | None = None) -> dict[int, tuple[str, str]]:
    """``ss -xaH``: inode -> (netid, local name as ss prints it)."""
    out = subprocess.run([*(prefix or []), "ss", "-xaH"], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        m = _SS_ROW.match(line)
        assert m, line
        found[int(m.group(4))] = (m.group(1), m.group(3))
    return found


def test_same_sockets_as_ss_on_the_host(ux):
    # other processes open and close sockets meanwhile: every socket ss lists both before and
    # after is in portscope's dump, and every socket of the dump is in one of ss's lists
    before = ss_inodes()
    ours = {s.inode for s in linux_netlink.dump_unix()[0]}
    after = ss_inodes()
    assert set(before) & set(after) <= ours
    assert ours <= set(before) | set(after)
    assert {ux["listener"], ux["abstract"], ux["dgram"], *ux["accepted"]} <= ours


NETNS_DUMP = """
    import json
    from portscope.backends import linux_netlink, linux_procfs
    key = lambda s: [s.unix.type.value, s.state.value, s.local.address]
    print(json.dumps({"netlink": {s.inode: key(s) for s in linux_netlink.dump_unix()[0]},
                      "procfs": {s.inode: key(s) for s in linux_procfs.dump_unix()[0]}}))
"""


def test_private_namespace_matches_ss_and_proc(netns):
    h = netns.holder("""
        l = socket.socket(socket.AF_UNIX); l.bind(b"\\0psux-ns"); l.listen()
        c = socket.socket(socket.AF_UNIX); c.connect(b"\\0psux-ns"); a, _ = l.accept()
        p, q = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ready(inodes=[os.fstat(s.fileno()).st_ino for s in (l, c, a, p, q, u)])
    """)
    result = netns.python(NETNS_DUMP)
    assert result.returncode == 0, result.stderr
    dumps = {name: {int(k): v for k, v in d.items()} for name, d in
             json.loads(result.stdout).items()}
    ss = ss_inodes(netns.prefix())
    assert set(dumps["netlink"]) == set(ss) == set(dumps["procfs"])
    assert set(h.info["inodes"]) <= set(ss)
    assert dumps["netlink"] == dumps["procfs"]
    types = {"stream": "u_str", "dgram": "u_dgr", "seqpacket": "u_seq"}
    assert {i: types[v[0]] for i, v in dumps["netlink"].items()} == \
        {i: v[0] for i, v in ss.items()}


def no_netlink() -> list[str]:
    """The argv prefix running portscope where socket(AF_NETLINK, ...) fails with
    EAFNOSUPPORT, as in some sandboxes (tests/seccomp.py)."""
    import errno
    import socket
    return seccomp.portscope_refusing(
        "socket", errno.EAFNOSUPPORT, arg0=socket.AF_NETLINK,
        probe="import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)")


def test_without_netlink_unix_sockets_come_from_proc_net_unix(netns):
    sandboxed = no_netlink()
    h = netns.holder("""
        l = socket.socket(socket.AF_UNIX); l.bind(b"\\0psux-fallback"); l.listen()
        c = socket.socket(socket.AF_UNIX); c.connect(b"\\0psux-fallback"); a, _ = l.accept()
        p, q = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ready(inodes=[os.fstat(s.fileno()).st_ino for s in (l, c, a, p, q)])
    """)
    args = ["list", "-x", "-a", "--json", "--netns", "host"]
    refused = netns.run(*sandboxed, *args)
    assert refused.returncode == 0, refused.stderr
    assert "UNIX sockets read from /proc/net/unix" in refused.stderr
    doc = json.loads(refused.stdout)
    by_inode = {s["inode"]: s for s in doc["sockets"]}
    assert set(by_inode) == set(ss_inodes(netns.prefix())) >= set(h.info["inodes"])
    listener, client, accepted, *pair = h.info["inodes"]
    assert by_inode[listener]["state"] == "LISTEN"
    assert by_inode[listener]["local"]["address"] == "@psux-fallback"
    assert {by_inode[i]["unix_type"] for i in pair} == {"dgram"}
    for inode in h.info["inodes"]:        # owners from the descriptor scan; no peers known
        assert [o["pid"] for o in by_inode[inode]["owners"]] == [h.pid]
        assert by_inode[inode]["peer_inode"] is None and by_inode[inode]["peers"] == []
    # an abstract name is found by its name there too (a socket file needs netlink's inodes)
    named = netns.run(*sandboxed, "@psux-fallback", "--json", "--netns", "host")
    assert named.returncode == 0, named.stderr
    assert {s["inode"] for s in json.loads(named.stdout)["sockets"]} == {listener, accepted}
    # the same command with netlink: the same sockets, and their peers
    code, plain = netns.portscope_json("list", "-x", "-a", "--netns", "host")
    assert code == 0 and {s["inode"] for s in plain["sockets"]} == set(by_inode)
    assert [p["inode"] for p in {s["inode"]: s for s in plain["sockets"]}[client]["peers"]] \
        == [accepted]


def test_procfs_and_netlink_agree_on_the_holder(ux):
    mine = {ux["listener"], ux["abstract"], ux["dgram"], ux["waiting"], ux["dgram_client"],
            *ux["accepted"], *ux["clients"].values(), *ux["pair"]}

    def keyed(sockets):
        return {s.inode: (s.unix.type, s.state, s.local.address.replace("\\x00", "@"))
                for s in sockets if s.inode in mine}
    assert keyed(linux_netlink.dump_unix()[0]) == keyed(linux_procfs.dump_unix()[0])
    assert len(keyed(linux_netlink.dump_unix()[0])) == len(mine)


RELATED = """
    import tempfile
    base = tempfile.mkdtemp(prefix="psux-")
    os.chdir(base)
    name = "@psux-rel-" + str(os.getpid())
    # an abstract datagram server that two clients talk to (no peer of its own)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); server.bind(b"\\0" + name[1:].encode())
    senders = []
    for _ in range(2):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); c.connect(b"\\0" + name[1:].encode())
        senders.append(c)
    # a relative path that reads like that abstract name, with a listener that never accepts
    # and a client bound to an abstract name of its own waiting in its queue
    listener = socket.socket(socket.AF_UNIX); listener.bind(name); listener.listen()
    waiting = socket.socket(socket.AF_UNIX); waiting.bind(b"\\0psux-wait-" + name[10:].encode())
    waiting.connect(name)
    ready(base=base, name=name, waiting="@psux-wait-" + name[10:])
"""


def test_lookup_decodes_only_the_related_sockets_and_answers_the_same(ux, holder):
    # one dump; every name in it (every socket file by its inode), looked up by decoding the
    # related sockets only and by decoding them all: the same joined answers
    import shutil
    from portscope import unixsock
    h = holder(RELATED)
    try:
        dump, _ = linux_netlink.collect_unix()
        every = dump.decode()
        flt = SocketFilter(protos=frozenset({Proto.UNIX}))
        names = {s.local.address for s in every if s.local.address}
        assert {ux["path"], ux["dgram_path"], h.info["name"], h.info["waiting"]} <= names
        os.chdir(h.info["base"])          # the relative path names a file from here only
        sizes = {}
        for target in sorted(names):
            file = None if target.startswith("@") else unixsock.socket_file(target)
            select = unixsock.selector(target, file)
            related = linux_netlink.decode_unix_related([dump], select)
            assert {s.inode for s in related} <= {s.inode for s in every}
            assert list(unixsock.UnixJoin(related, flt, select).sockets()) == \
                list(unixsock.UnixJoin(every, flt, select).sockets()), target
            sizes[target] = len(related)
        # decoded: the listener, its 3 accepted sockets and their clients, the waiting one
        assert sizes[ux["path"]] == 8 < len(every)
        assert sizes[h.info["name"]] == 5           # both sockets named so, 2 senders, waiting
        assert sizes[h.info["waiting"]] == 2        # the waiting client and its listener
        waiting = [s for s in unixsock.UnixJoin(every, flt, unixsock.selector(
            h.info["waiting"], None)).sockets()]
        assert waiting[0].remote.address == h.info["name"]
    finally:
        os.chdir("/")
        shutil.rmtree(h.info["base"], ignore_errors=True)


EVERY_NAME_TWO_WAYS = """
    import json, os, sys
    from portscope import Proto, SocketFilter, unixsock
    from portscope.backends import linux_netlink
    os.chdir(sys.argv[1])
    dump, _ = linux_netlink.collect_unix()
    every = dump.decode()
    flt = SocketFilter(protos=frozenset({Proto.UNIX}))
    sizes = {}
    for target in sorted({s.local.address for s in every if s.local.address}):
        file = None if target.startswith("@") else unixsock.socket_file(target)
        select = unixsock.selector(target, file)
        related = linux_netlink.decode_unix_related([dump], select)
        assert list(unixsock.UnixJoin(related, flt, select).sockets()) == \\
            list(unixsock.UnixJoin(every, flt, select).sockets()), target
        sizes[target] = len(related)
    print(json.dumps({"sizes": sizes, "every": len(every)}))
"""


def test_lookup_in_a_private_namespace_answers_as_the_full_decode(netns):
    import sys
    import textwrap
    h = netns.holder(RELATED)
    try:
        result = netns.run(sys.executable, "-c", textwrap.dedent(EVERY_NAME_TWO_WAYS),
                           h.info["base"])
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        assert found["sizes"] == {h.info["name"]: 5, h.info["waiting"]: 2}
        assert found["every"] == 5       # the server, its 2 senders, the listener, the waiting one
    finally:
        import shutil
        shutil.rmtree(h.info["base"], ignore_errors=True)


def test_list_x_cli(ux, cli):
    result = cli("list", "-x", "-a", "--json", "--pid", str(ux["pid"]), "--netns", "host")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    by_inode = {s["inode"]: s for s in doc["sockets"]}
    assert set(by_inode) == {ux["listener"], ux["abstract"], ux["dgram"], ux["waiting"],
                             ux["pair"][0], *ux["accepted"]}
    listener = by_inode[ux["listener"]]
    assert (listener["proto"], listener["family"], listener["local"]) == \
        ("unix", "unix", {"address": ux["path"], "port": None})
    assert listener["unix_type"] == "stream" and listener["peer_inode"] is None
    assert listener["vfs_inode"] == os.stat(ux["path"]).st_ino
    accepted = by_inode[ux["accepted"][0]]
    assert accepted["peer_inode"] in ux["clients"].values()
    (peer,) = accepted["peers"]
    assert peer["inode"] == accepted["peer_inode"]
    assert [o["pid"] for o in peer["owners"]] == \
        [int(p) for p, i in ux["clients"].items() if i == peer["inode"]]
    # -l: listeners (and unconnected datagram sockets); --process; --csv
    listening = cli("list", "-x", "-l", "--csv", "--pid", str(ux["pid"]), "--netns", "host")
    rows = [line.split(",") for line in listening.stdout.splitlines()]
    assert rows[0][:3] == ["proto", "state", "recv_q"]
    assert {(r[0], r[1]) for r in rows[1:]} == {("u_str", "LISTEN"), ("u_seq", "LISTEN")}
    by_name = cli("list", "-x", "-a", "--process", "no-such-process", "--netns", "host")
    assert by_name.returncode == 0 and by_name.stdout.count("\n") <= 1
    as_user = cli("list", "-x", "--json", "--user", "root", "--netns", "host")
    assert ux["accepted"][0] in {s["inode"] for s in json.loads(as_user.stdout)["sockets"]}


def test_listener_view_adds_unix_only_with_x(ux, cli):
    plain = cli("--json", "--netns", "host")
    assert all(s["proto"] != "unix" for s in json.loads(plain.stdout)["sockets"])
    with_x = cli("-tux", "--json", "--netns", "host")
    protos = {s["proto"] for s in json.loads(with_x.stdout)["sockets"]}
    assert "unix" in protos
    mine = [s for s in json.loads(with_x.stdout)["sockets"] if s["inode"] == ux["listener"]]
    assert [p["inode"] for p in mine[0]["peers"]] == [ux["waiting"]]


def test_unprivileged_run_keeps_root_sockets(ux, cli):
    result = cli("list", "-x", "-l", "--json", "--netns", "host", user="nobody")
    assert result.returncode == 0, result.stderr
    (listener,) = [s for s in json.loads(result.stdout)["sockets"]
                   if s["inode"] == ux["listener"]]
    assert listener["owners"] == [] and listener["owner_unknown"] == "permission"
    assert "no visible owner" in result.stderr


def test_path_lookup_lists_listener_holders_and_clients(ux, cli):
    result = cli(ux["path"], "--json", "--netns", "host")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["query"]["unix"] == ux["path"] and doc["query"]["file"]["is_socket"]
    inodes = [s["inode"] for s in doc["sockets"]]
    assert inodes[0] == ux["listener"] and set(inodes) == {ux["listener"], *ux["accepted"]}
    clients = {o["pid"] for s in doc["sockets"] for p in s["peers"] for o in p["owners"]}
    assert clients == {*map(int, ux["clients"]), ux["pid"]}    # the waiting one is the holder
    text = cli(ux["path"], "--netns", "host")
    assert text.returncode == 0 and str(ux["listener"]) in text.stdout
    abstract = cli(f"@psux-{ux['abstract_pid']}\\x00tail", "--json", "--netns", "host")
    assert [s["inode"] for s in json.loads(abstract.stdout)["sockets"]] == [ux["abstract"]]


RENAMED = """
    import tempfile
    base = tempfile.mkdtemp(prefix="psux-")
    old, new = os.path.join(base, "old.sock"), os.path.join(base, "new.sock")
    s = socket.socket(socket.AF_UNIX); s.bind(old); s.listen()
    os.rename(old, new)
    ready(base=base, old=old, new=new, inode=os.fstat(s.fileno()).st_ino)
"""


def test_renamed_live_file_is_in_use_by_inode(holder, cli):
    h = holder(RENAMED)
    try:
        result = cli("check", h.info["new"], "--json")
        doc = json.loads(result.stdout)
        assert result.returncode == 1 and [r["code"] for r in doc["reasons"]] == ["in-use"]
        (blocker,) = doc["blockers"]
        # the kernel still names the old path; the inode found it
        assert blocker["local"]["address"] == h.info["old"]
        assert [o["pid"] for o in blocker["owners"]] == [h.pid]
        assert cli("check", h.info["old"]).returncode == 0      # nothing there now
        found = cli(h.info["new"], "--json", "--netns", "host")
        assert [s["inode"] for s in json.loads(found.stdout)["sockets"]] == [h.info["inode"]]
    finally:
        import shutil
        shutil.rmtree(h.info["base"], ignore_errors=True)


def test_stale_file_after_sigkill_is_cleaned_then_binds(holder, cli, tmp_path):
    path = str(tmp_path / "srv.sock")
    h = holder(f"""
        s = socket.socket(socket.AF_UNIX); s.bind({path!r}); s.listen()
        ready()
    """)
    assert cli("check", path).returncode == 1
    os.kill(h.pid, 9)
    h.proc.wait(timeout=10)
    doc = json.loads(cli("check", path, "--json").stdout)
    assert [r["code"] for r in doc["reasons"]] == ["stale-file"] and not doc["bindable"]
    refused = cli("check", "--clean", path)                  # no terminal, no --yes
    assert refused.returncode == 5 and os.path.exists(path)
    dry = cli("check", "--clean", "--dry-run", path)
    assert dry.returncode == 0 and os.path.exists(path)
    cleaned = cli("check", "--clean", "--yes", path, "--json")
    assert cleaned.returncode == 0 and json.loads(cleaned.stdout)["removed"] is True
    assert not os.path.exists(path)
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        assert cli("check", "--clean", "--yes", path).returncode == 1   # live: never removed
        assert os.path.exists(path)
    os.unlink(path)


def test_live_file_is_never_cleaned(ux, cli):
    result = cli("check", "--clean", "--yes", ux["path"])
    assert result.returncode == 1 and os.path.exists(ux["path"])
    assert "in-use" in result.stdout


def test_not_a_socket_and_other_reasons(cli, tmp_path):
    regular = tmp_path / "file"
    regular.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (regular, fifo):
        doc = json.loads(cli("check", str(path), "--json").stdout)
        assert [r["code"] for r in doc["reasons"]] == ["not-a-socket"]
        assert cli("check", "--clean", "--yes", str(path)).returncode == 1 and path.exists()
        assert cli(str(path)).returncode == 1
    missing = json.loads(cli("check", str(tmp_path / "no" / "x.sock"), "--json").stdout)
    assert [r["code"] for r in missing["reasons"]] == ["parent-missing"]
    long_path = "/tmp/" + "x" * 103 + ".sock"                # 111 bytes > 107
    too_long = cli("check", long_path, "--json")
    assert too_long.returncode == 1
    assert [r["code"] for r in json.loads(too_long.stdout)["reasons"]] == ["path-too-long"]
    assert cli("check", str(tmp_path / "new.sock")).returncode == 0


@pytest.mark.parametrize("args", [["/tmp/" + "y" * 200], ["/tmp"], ["check", "/tmp"],
                                  ["kill", "/tmp"], ["check", "--clean", "@abstract"],
                                  ["/tmp/x.sock", "--backend", "procfs"]])
def test_bad_input_exits_2_with_one_line(cli, args):
    result = cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_nul_in_a_path_is_refused():
    from portscope import InvalidInput, unixsock
    with pytest.raises(InvalidInput):
        unixsock.parse_target("/tmp/a\0b")


def test_kill_path_stops_the_listener_holders(holder, cli, tmp_path):
    path = str(tmp_path / "k.sock")
    h = holder(f"""
        s = socket.socket(socket.AF_UNIX); s.bind({path!r}); s.listen()
        kid = fork_sleeper()                    # shares the listener
        ready(kid=kid)
    """)
    from netns import alive
    dry = cli("kill", path, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = {t["pid"] for t in json.loads(dry.stdout)["plan"]["targets"]}
    assert planned == {h.pid, h.info["kid"]}
    assert cli("kill", path).returncode == 5 and alive(h.pid)      # no terminal, no --yes
    result = cli("kill", path, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no socket is bound to it any more" in result.stdout
    h.proc.wait(timeout=10)
    assert not alive(h.info["kid"])
    assert json.loads(cli("check", path, "--json").stdout)["reasons"][0]["code"] == "stale-file"
    assert cli("kill", path, "--yes").returncode == 1              # nothing holds it now


def test_kill_path_names_what_would_restart_each_holder(holder, cli, tmp_path):
    # for a UNIX socket: a holder run by pm2 is refused with pm2's command; a holder named
    # docker-proxy has no respawner (a forwarder publishes ports, not socket files: no
    # 'docker ps --filter publish=0')
    from netns import alive
    supervised, proxied = str(tmp_path / "pm2.sock"), str(tmp_path / "proxy.sock")
    h = holder(f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import socket, time\\n"
                                  "s = socket.socket(socket.AF_UNIX); s.bind({supervised!r})\\n"
                                  "s.listen(); print('up', flush=True); time.sleep(3600)"],
                                 env={{**os.environ, "pm_id": "3", "name": "api"}},
                                 stdout=subprocess.PIPE)
        child.stdout.readline()
        _libc.prctl(15, b"docker-proxy")         # PR_SET_NAME: what /proc/PID/comm says
        s = socket.socket(socket.AF_UNIX); s.bind({proxied!r}); s.listen()
        ready(child=child.pid)
    """)
    result = cli("kill", supervised, "--yes", "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 5 and "pm2 stop 3" in doc["message"], result.stderr
    assert doc["plan"]["targets"][0]["respawner"]["command"] == "pm2 stop 3"
    assert alive(h.info["child"])
    dry = cli("kill", proxied, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (target,) = json.loads(dry.stdout)["plan"]["targets"]
    assert target["pid"] == h.pid and target["process"]["name"] == "docker-proxy"
    assert target["respawner"] is None


def test_explain_path_and_abstract(ux, cli):
    result = cli("explain", ux["path"], "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kind"] == "unix" and doc["subject"] == ux["path"] and doc["found"]
    text = " ".join([doc["summary"], *(line for s in doc["sections"] for line in s["lines"])])
    assert f"pid {ux['pid']}" in text and "may connect" in text
    assert "3 connection(s) from 3 client process(es)" in doc["summary"]
    abstract = cli("explain", f"@psux-{ux['abstract_pid']}\\x00tail")
    assert abstract.returncode == 0 and "no file and no permissions" in abstract.stdout


def test_explain_stale_file(cli, tmp_path):
    import socket
    path = str(tmp_path / "gone.sock")
    socket.socket(socket.AF_UNIX).bind(path)          # closed at once: a stale file
    result = cli("explain", path)
    assert result.returncode == 1 and "stale socket file" in result.stdout


def test_audit_unix_rules(holder, cli, tmp_path):
    path = str(tmp_path / "open.sock")
    stale = "/tmp/psux-stale-%d.sock" % os.getpid()
    import socket
    socket.socket(socket.AF_UNIX).bind(stale)
    h = holder(f"""
        s = socket.socket(socket.AF_UNIX); s.bind({path!r}); s.listen()
        os.chmod({path!r}, 0o666)
        a = socket.socket(socket.AF_UNIX); a.bind(b"\\0psux-audit-" + str(os.getpid()).encode())
        a.listen()
        ready()
    """)
    try:
        doc = json.loads(cli("audit", "--json", "--fail-on", "high").stdout)
        found = {(f["rule"], f["address"], f["pid"]) for f in doc["findings"]
                 if f["rule"].startswith("unix-")}
        assert ("unix-world-writable", path, h.pid) in found
        assert ("unix-abstract-host", f"@psux-audit-{h.pid}", h.pid) in found
        assert ("unix-stale-file", stale, None) in found
        assert not any(r == "unix-stale-file" and a == path for r, a, _ in found)
        skipped = json.loads(cli("audit", "--json", "--skip", "unix-stale-file").stdout)
        assert not any(f["rule"] == "unix-stale-file" for f in skipped["findings"])
    finally:
        os.unlink(stale)


def test_unix_documents_match_the_schema(ux, cli, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources
    schema = json.loads(resources.files("portscope.render").joinpath("schema.json").read_text())
    docs = [cli(ux["path"], "--json"), cli("check", ux["path"], "--json"),
            cli("check", str(tmp_path / "x.sock"), "--json"),
            cli("explain", ux["path"], "--json"), cli("kill", ux["path"], "--dry-run", "--json"),
            cli("list", "-x", "-a", "--json", "--backend", "psutil")]
    for result in docs:
        jsonschema.Draft202012Validator(schema).validate(json.loads(result.stdout))
