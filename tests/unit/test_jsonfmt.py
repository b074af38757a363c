"""The hand-written JSON writer (render/jsonfmt.py) against ``json.dumps`` of the same data: for
any socket, the streamed listing says exactly what the generic encoder says, key order
included, and is strict JSON."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

from hypothesis import example, given, settings
from hypothesis import strategies as st

from portscope.render import jsonfmt
from portscope.types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown,
                             Peer, ProcessInfo, Proto, Published, Snapshot, Socket, State,
                             UnixInfo, UnixType)

# any text a process may name itself, including control, bidi and undecodable (surrogate) code
# points, which the strict writer must escape the same way on both paths
text = st.text(st.characters(blacklist_categories=()), max_size=12)
maybe_text = st.none() | text
small = st.integers(0, 2**32)
maybe_int = st.none() | small

processes = st.builds(
    ProcessInfo, pid=st.integers(1, 4194304), ppid=maybe_int, name=maybe_text, exe=maybe_text,
    cmdline=st.none() | st.tuples(text, text), user=maybe_text, uid=maybe_int,
    started_at=st.none() | st.datetimes(timezones=st.just(timezone.utc)), unit=maybe_text,
    container=maybe_text)
owners = st.lists(st.builds(Owner, st.integers(1, 4194304), st.integers(-1, 1 << 20),
                            processes), max_size=3).map(tuple)
containers = st.builds(Container, id=text, name=maybe_text, runtime=maybe_text,
                       image=maybe_text, pod=maybe_text)
endpoints = st.builds(Endpoint, text, st.none() | st.integers(0, 65535))
unix_infos = st.builds(UnixInfo, st.sampled_from(UnixType), maybe_int, maybe_int, maybe_int,
                       st.lists(small, max_size=2).map(tuple),
                       st.lists(st.builds(Peer, small, owners), max_size=2).map(tuple))
sockets = st.builds(
    Socket, st.sampled_from(Proto), st.sampled_from(Family), endpoints, st.none() | endpoints,
    st.sampled_from(State), small, st.integers(-1, 2**32), maybe_int,
    st.none() | st.booleans(), small, small, owners, st.none() | st.sampled_from(OwnerUnknown),
    st.none() | st.integers(0, 2**64 - 1), st.none() | containers,
    st.none() | st.builds(Published, containers, maybe_text, st.none() | st.integers(0, 65535),
                          maybe_text, owners),
    st.none() | unix_infos)


def reference(sock: Socket) -> dict:
    """The socket as the generic encoder sees it: ``jsonable`` of every field, the UNIX
    details flattened as the schema has them."""
    doc = jsonfmt.jsonable(sock)
    unix = doc.pop("unix")
    if sock.unix is not None:
        doc.update({"unix_type": unix["type"], "vfs_dev": unix["vfs_dev"],
                    "vfs_inode": unix["vfs_inode"], "peer_inode": unix["peer_inode"],
                    "peers": unix["peers"]})
    return doc


def strict(written: str) -> None:
    """``written`` is strict JSON: ASCII, and no string in it (key or value) holds a lone
    surrogate, not even as a ``\\ud800`` escape (UTF-8 cannot encode one)."""
    assert written.isascii()
    json.dumps(json.loads(written), ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.lists(sockets, max_size=4), st.dictionaries(text, st.none() | text | small,
                                                       max_size=2))
@example([], {"\ud800": "\udcff", "\udcff": None})     # lone surrogates in a key and a value
def test_hand_written_socket_json_equals_json_dumps(items, extra):
    processes: dict = {}
    addresses: dict = {}
    for sock in [*items, Socket(Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 1), None,
                                State.LISTEN, 1, 0)]:
        written = jsonfmt.socket_json(sock, processes, addresses, extra)
        # what json.dumps writes of the strict data: every string, keys included, with its
        # undecodable bytes as \xNN text (escape.undecodable_escaped)
        expected = {**reference(sock), **jsonfmt.jsonable(extra)}
        assert json.loads(written) == expected
        assert list(json.loads(written)) == list(expected)             # key order too
        strict(written)
        assert json.dumps(json.loads(written)) == json.dumps(expected)


def test_documents_are_strict_in_keys_too():
    written = jsonfmt.dumps({"\udcff": {"\ud800x": "\udcfe"}})
    assert json.loads(written) == {"\\xff": {"\\ud800x": "\\xfe"}}
    strict(json.dumps(json.loads(written)))


@settings(max_examples=100, deadline=None)
@given(st.lists(sockets, max_size=5), maybe_text)
def test_a_streamed_listing_is_the_document_json_dumps_would_write(items, hostname):
    meta = Snapshot(tuple(items), datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), hostname,
                    "netlink", True, ("a warning",), (NetNamespace(4026531840, "host"),))
    out = io.StringIO()
    jsonfmt.write_snapshot(out, meta, items, extras={0: {"accepted_connections": 2}},
                           fields={"query": {"port": 80}})
    doc = json.loads(out.getvalue())
    expected_items = [reference(s) for s in items]
    if expected_items:
        expected_items[0]["accepted_connections"] = 2
    assert doc == {"schema_version": 1, "taken_at": "2026-01-02T03:04:05+00:00",
                   "hostname": hostname, "backend": "netlink",
                   "namespaces": [{"inode": 4026531840, "name": "host"}],
                   "query": {"port": 80}, "sockets": expected_items, "complete": True,
                   "warnings": ["a warning"]}
