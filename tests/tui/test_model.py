"""The TUI's pure parts: the filter query language, change marks, grouping and export."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fixed  # noqa: E402

from portscope.tui import model  # noqa: E402
from portscope.types import State  # noqa: E402


def rows_of(snapshot):
    return [model.Row(model.socket_key(s), s) for s in snapshot.sockets]


def select(query, snapshot=None):
    snapshot = snapshot or fixed.snapshot()
    columns = model.columns_for(model.VIEW_BY_NAME["all"], snapshot, {},
                                lambda p, proto: None)

    def text_of(row):
        return " ".join(model.row_texts(row, columns)).lower()
    match = model.compile_query(model.parse_query(query), text_of,
                                model.namespace_names(snapshot.namespaces))
    return [r.sock for r in rows_of(snapshot) if match(r)]


def ports(sockets):
    return sorted({s.local.port for s in sockets})


def test_query_terms():
    assert ports(select("port:80")) == [80, 51234]          # local or peer port
    assert ports(select("port:22-80 state:listen")) == [22, 80]
    assert ports(select("process:nginx !state:established")) == [80]
    assert ports(select("user:postgres")) == [5432]
    assert ports(select("user:65534")) == [9100]            # no owner: the socket's uid
    assert ports(select("container:web")) == [6379]
    assert ports(select("proto:udp")) == [53]
    assert ports(select("pid:640")) == [22]
    assert ports(select(f"netns:{fixed.NETNS}")) == ports(fixed.sockets())
    assert ports(select("netns:other")) == []
    assert ports(select("REDIS")) == [6379]                  # free text, any column
    assert ports(select("!tcp")) == [53]
    assert ports(select("state:time-wait")) == [80]
    assert ports(select("")) == ports(fixed.sockets())


@pytest.mark.parametrize("query, message", [
    ("port:99999", "invalid port"), ("port:+80", "invalid port"), ("port:", "needs a value"),
    ("state:open", "unknown state"), ("colour:red", "unknown filter"), ("!", "needs a term"),
    ("proto:sctp", "unknown protocol"), ("pid:1-x", "invalid pid"),
])
def test_bad_queries_say_why(query, message):
    with pytest.raises(model.QueryError, match=message):
        model.parse_query(query)


def test_changes_new_closed_changed_and_first_refresh_unmarked():
    first = fixed.snapshot()
    marks, closed, seen = model.changes(None, first.sockets, first.taken_at)
    assert marks == {} and closed == []
    second = fixed.snapshot(extra_listener=True)
    socks = list(second.sockets)
    # the TIME_WAIT is gone, sshd's v6 listener has another holder, curl's connection closes
    # towards CLOSE_WAIT
    socks = [s for s in socks if s.state is not State.TIME_WAIT]
    socks = [s._replace(owners=(s.owners[0]._replace(pid=641, process=replace(
        fixed.SSHD, pid=641)),)) if s.inode == 1102 else s for s in socks]
    socks = [s._replace(state=State.CLOSE_WAIT) if s.inode == 1702 else s for s in socks]
    marks, closed, _ = model.changes(seen, socks, second.taken_at)
    by_port = {(k[0].port, k[0].inode): v for k, v in marks.items()}
    assert by_port == {(8080, 1801): model.NEW, (22, 1102): model.CHANGED,
                       (51234, 1702): model.CHANGED, (80, 0): model.CLOSED}
    assert [s.state for s in closed] == [State.TIME_WAIT]


def test_reuseport_members_and_time_wait_peers_are_distinct_rows():
    base = fixed.sockets()
    listener = base[0]
    twin = listener._replace(inode=9999, cookie=9999)
    tw = base[-1]
    other_tw = tw._replace(remote=tw.remote._replace(port=51201))
    keys = {model.socket_key(s) for s in (listener, twin, tw, other_tw)}
    assert len(keys) == 4


def test_grouped_rows_one_per_process():
    snapshot = fixed.snapshot()
    rows = model.group_by_process(snapshot.sockets, {})
    nginx = [r for r in rows if r.key[1] in (812, 813)]
    assert sorted(len(r.sockets) for r in nginx) == [1, 2]   # the worker also holds a conn
    worker = next(r for r in nginx if r.key[1] == 813)
    assert model.group_texts(worker) == ("1", "1", "80/tcp")


def test_export_json_and_csv_are_what_the_cli_writes():
    snapshot = fixed.snapshot()
    rows = rows_of(snapshot)
    doc = json.loads(model.export_json(snapshot, rows, "all", "port:80"))
    assert doc["schema_version"] == 1 and doc["view"] == "all" and doc["filter"] == "port:80"
    assert doc["complete"] is False and len(doc["sockets"]) == len(rows)
    columns = model.columns_for(model.VIEW_BY_NAME["all"], snapshot, {}, lambda p, q: None)
    table = list(csv.reader(io.StringIO(model.export_csv(rows, columns, False))))
    assert table[0] == [c.key for c in columns] and len(table) == len(rows) + 1
    assert table[3][:5] == ["nginx", "812,813", "root,www-data", "tcp", "LISTEN"]


def test_row_json_is_the_socket_object():
    row = rows_of(fixed.snapshot())[2]
    doc = json.loads(model.row_json(row))
    assert doc["inode"] == 1201 and [o["pid"] for o in doc["owners"]] == [812, 813]


def test_import_portscope_never_loads_textual():
    code = ("import sys, portscope; portscope.take_snapshot; portscope.plan_kill; "
            "import portscope.cli, portscope.tui, portscope.tui.model; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
