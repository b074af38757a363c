"""The TUI driven by Textual's pilot against real sockets and real processes on loopback."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

pytest.importorskip("textual")

from portscope.freeport import pick_free_ports  # noqa: E402
from portscope.tui.app import PortscopeApp, TextScreen  # noqa: E402
from portscope.tui.model import CLOSED, NEW, row_texts  # noqa: E402
from portscope.tui.table import SocketTable  # noqa: E402

pytestmark = pytest.mark.asyncio
SIZE = (160, 40)


def listener(port: int = 0) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


async def refreshed(app, pilot) -> SocketTable:
    """Scan now and wait until the rows are on screen."""
    before = app.refreshes
    app.action_refresh_now()
    deadline = time.monotonic() + 30
    while app.refreshes == before and time.monotonic() < deadline:
        await app.workers.wait_for_complete()
        await pilot.pause()
    assert app.refreshes > before, "no refresh happened"
    return app.query_one(SocketTable)


async def settled(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def row_for(table: SocketTable, sock: socket.socket | int):
    port = sock if isinstance(sock, int) else sock.getsockname()[1]
    found = [r for r in table.rows if r.sock.local.port == port and r.sock.remote is None]
    return found[0] if found else None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


async def test_opened_listener_appears_green_and_closed_one_red_then_gone():
    app = PortscopeApp(interval_s=60)
    async with app.run_test(size=SIZE) as pilot:
        table = await refreshed(app, pilot)
        sock = listener()
        await refreshed(app, pilot)
        row = row_for(table, sock)
        assert row is not None and row.mark == NEW
        assert row.sock.owners[0].pid == os.getpid()
        port = sock.getsockname()[1]
        sock.close()
        await refreshed(app, pilot)
        row = row_for(table, port)
        assert row is not None and row.mark == CLOSED, "a closed row stays one refresh, red"
        await refreshed(app, pilot)
        assert row_for(table, port) is None


async def test_filter_query_and_negation():
    a, b = listener(), listener()
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            port_a = a.getsockname()[1]
            await pilot.press("slash", *f"port:{port_a}")
            await pilot.pause()
            assert [r.sock.local.port for r in table.rows] == [port_a]
            await pilot.press(*["backspace"] * len(f"port:{port_a}"), *f"!port:{port_a}")
            await pilot.pause()
            ports = {r.sock.local.port for r in table.rows}
            assert port_a not in ports and b.getsockname()[1] in ports
            await pilot.press("enter")          # back to the table, the filter stays
            assert table.has_focus and app.query_text == f"!port:{port_a}"
            await refreshed(app, pilot)         # and holds across refreshes
            assert port_a not in {r.sock.local.port for r in table.rows}
    finally:
        a.close()
        b.close()


async def test_bad_filter_keeps_the_last_good_one():
    app = PortscopeApp(interval_s=60)
    async with app.run_test(size=SIZE) as pilot:
        table = await refreshed(app, pilot)
        count = len(table.rows)
        await pilot.press("slash", *"port:99999")
        await pilot.pause()
        assert app.query_text == "port:9999", "the last query that parsed stays in force"
        assert len(table.rows) <= count
        assert "invalid port" in str(app.query_one("#status").render())


async def test_sort_by_pid_then_reversed():
    socks = [listener() for _ in range(3)]
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            while app.sort_key != "pid":
                await pilot.press("s")
            pids = [min((o.pid for o in r.sock.owners), default=-1) for r in table.rows]
            assert pids == sorted(pids) and len(set(pids)) > 1
            await pilot.press("S")
            pids = [min((o.pid for o in r.sock.owners), default=-1) for r in table.rows]
            assert pids == sorted(pids, reverse=True)
    finally:
        for s in socks:
            s.close()


async def test_cursor_keeps_its_socket_when_rows_are_inserted_above():
    # the cursor's listener has an ephemeral port (32768 and up): the new ones sort above it
    target = listener()
    low = pick_free_ports(3, port_range=(1024, 32767))
    inserted = []
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            assert app.sort_key == "local"
            row = row_for(table, target)
            assert table.select_key(row.key)
            index = table.cursor
            inserted = [listener(p) for p in low]
            await refreshed(app, pilot)
            above = [i for i, r in enumerate(table.rows) if r.sock.local.port in low]
            assert len(above) == 3 and max(above) < table.cursor, "not inserted above"
            assert table.cursor > index and table.cursor_row.key == row.key
            await pilot.press("up", "down")
            assert table.cursor_row.key == row.key
    finally:
        target.close()
        for s in inserted:
            s.close()


LISTEN = """
s = socket.socket(); s.bind(("127.0.0.1", PORT)); s.listen()
ready(port=s.getsockname()[1])
"""


async def test_kill_hits_the_process_under_the_cursor_after_the_rows_moved(holder):
    first = holder(LISTEN.replace("PORT", "0"))
    second = holder(LISTEN.replace("PORT", "0"))
    low = pick_free_ports(1, port_range=(1024, 32767))[0]
    app = PortscopeApp(interval_s=60)
    async with app.run_test(size=SIZE) as pilot:
        table = await refreshed(app, pilot)
        row = next(r for r in table.rows if r.sock.local.port == second.info["port"])
        table.select_key(row.key)
        index = table.cursor
        third = holder(LISTEN.replace("PORT", str(low)))
        await refreshed(app, pilot)
        above = [i for i, r in enumerate(table.rows) if r.sock.local.port == low]
        assert above and above[0] < table.cursor and table.cursor_row.key == row.key
        assert table.cursor > index
        await pilot.press("k")
        await settled(app, pilot)
        screen = app.screen
        assert isinstance(screen, TextScreen) and screen.question, screen.text
        assert f"pid {second.pid} " in screen.text and f"pid {first.pid} " not in screen.text
        await pilot.press("y")
        await settled(app, pilot)
        result = app.screen
        assert isinstance(result, TextScreen) and "freed" in result.title_text, result.text
        (line,) = [x for x in result.text.splitlines() if x.startswith(f"pid {second.pid} (")]
        assert line.endswith("exited [SIGTERM]"), line
        assert f"port {second.info['port']} is free now" in result.text
        second.proc.wait(timeout=5)
        assert alive(first.pid) and alive(third.pid)


async def test_kill_refuses_when_the_row_no_longer_names_the_process(holder):
    """PID reuse: the row's holder (pid + start time) is not the process the fresh plan
    finds; nothing is signalled."""
    held = holder(LISTEN.replace("PORT", "0"))
    app = PortscopeApp(interval_s=60)
    async with app.run_test(size=SIZE) as pilot:
        table = await refreshed(app, pilot)
        row = next(r for r in table.rows if r.sock.local.port == held.info["port"])
        owner = row.sock.owners[0]
        older = owner.process.__class__(**{**{f: getattr(owner.process, f) for f in (
            "pid", "ppid", "name", "exe", "cmdline", "user", "uid", "unit", "container")},
            "started_at": owner.process.started_at.replace(year=2001)})
        row.sock = row.sock._replace(owners=(owner._replace(process=older),))
        table.select_key(row.key)
        await pilot.press("k")
        await settled(app, pilot)
        assert isinstance(app.screen, TextScreen) and app.screen.title_text == "kill refused"
        assert "another process now" in app.screen.text
        assert alive(held.pid)


async def test_kill_declined_signals_nothing(holder):
    held = holder(LISTEN.replace("PORT", "0"))
    app = PortscopeApp(interval_s=60)
    async with app.run_test(size=SIZE) as pilot:
        table = await refreshed(app, pilot)
        table.select_key(next(r.key for r in table.rows
                              if r.sock.local.port == held.info["port"]))
        await pilot.press("k")
        await settled(app, pilot)
        assert app.screen.question
        await pilot.press("n")
        await settled(app, pilot)
        assert not isinstance(app.screen, TextScreen)
        assert table.has_focus, "the keys go to the table again"
        assert alive(held.pid)


async def test_detail_copy_check_and_export(tmp_path):
    sock = listener()
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            row = row_for(table, sock)
            table.select_key(row.key)
            await pilot.press("enter")
            await settled(app, pilot)
            detail = str(app.query_one("#detail").render())
            assert f"TCP listener 127.0.0.1:{sock.getsockname()[1]}" in detail
            assert f"pid {os.getpid()} " in detail and "exe " in detail

            await pilot.press("y")
            copied = json.loads(app.clipboard)
            assert copied["inode"] == row.sock.inode and copied["owners"][0]["pid"] == os.getpid()

            await pilot.press("c")
            await settled(app, pilot)
            assert isinstance(app.screen, TextScreen)
            assert "cannot be bound (EADDRINUSE)" in app.screen.text
            await pilot.press("escape")

            for name in ("view.json", "view.csv"):
                await pilot.press("e")
                await pilot.pause()
                field = app.screen.query_one("#path")
                field.value = str(tmp_path / name)
                await pilot.press("enter")
                await pilot.pause()
            doc = json.loads((tmp_path / "view.json").read_text())
            assert doc["schema_version"] == 1 and doc["view"] == "listeners"
            assert row.sock.inode in {s["inode"] for s in doc["sockets"]}
            lines = (tmp_path / "view.csv").read_text().splitlines()
            assert lines[0].startswith("process,pid,user,proto,state,local")
            assert len(lines) == len(table.rows) + 1
    finally:
        sock.close()


async def test_views_pause_and_quit():
    server = listener()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            assert all(r.sock.remote is None for r in table.rows)
            await pilot.press("3")
            await settled(app, pilot)
            assert all(r.sock.remote is not None for r in table.rows)
            assert any(r.sock.local.port == server.getsockname()[1] for r in table.rows)
            await pilot.press("2")
            await settled(app, pilot)
            row = row_for(table, server)
            conns = [c.key for c in table.columns].index("accepted")
            assert row_texts(row, table.columns)[conns] == "1"
            await pilot.press("6")
            await settled(app, pilot)
            mine = [r for r in table.rows if r.key[1] == os.getpid()]
            assert len(mine) == 1 and len(mine[0].sockets) >= 3
            await pilot.press("p")
            before = app.refreshes
            app.refresh_now()
            await settled(app, pilot)
            assert app.refreshes == before and "PAUSED" in str(app.query_one("#status").render())
            await pilot.press("q")
        assert app.return_code == 0
    finally:
        for s in (accepted, client, server):
            s.close()


def accepted_text(table: SocketTable, server: socket.socket) -> str:
    """The Accepted cell of ``server``'s row."""
    index = [c.key for c in table.columns].index("accepted")
    return row_texts(row_for(table, server), table.columns)[index]


def port_view_count(port: int) -> str:
    """The Accepted count ``portscope PORT`` shows for the one listener on ``port``."""
    from portscope.filters import SocketFilter
    from portscope.snapshot import accepted_connections, take_snapshot
    snap = take_snapshot(SocketFilter(port_range=(port, port)))
    (conns,) = accepted_connections(snap.sockets).values()
    return str(len(conns))


async def test_listeners_view_counts_the_accepted_connections():
    """Three clients connect, two are accepted (the third waits in the accept queue: no
    descriptor, not accepted); a dual-stack [::] listener accepts an IPv4 client (on
    ``::ffff:127.0.0.1``) and an IPv6 one; then one accepted connection is closed. Every
    count is the one ``portscope PORT`` shows."""
    server, other = listener(), listener()
    dual = socket.socket(socket.AF_INET6)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    dual.listen()
    clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
    clients += [socket.create_connection(("127.0.0.1", dual.getsockname()[1])),
                socket.create_connection(("::1", dual.getsockname()[1]))]
    accepted = [server.accept()[0] for _ in range(2)] + [dual.accept()[0] for _ in range(2)]
    try:
        app = PortscopeApp(interval_s=60)
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            assert all(r.sock.remote is None for r in table.rows), "listeners only"
            assert accepted_text(table, server) == "2"
            assert accepted_text(table, other) == "0"
            assert accepted_text(table, dual) == "2"
            for sock in (server, other, dual):
                assert accepted_text(table, sock) == port_view_count(sock.getsockname()[1])
            accepted.pop(0).close()
            table = await refreshed(app, pilot)
            assert accepted_text(table, server) == "1" == port_view_count(
                server.getsockname()[1])
    finally:
        for s in (*accepted, *clients, server, other, dual):
            s.close()


async def test_unix_view_shows_a_unix_listener_with_its_path(tmp_path):
    path = str(tmp_path / "app.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    try:
        app = PortscopeApp(interval_s=60, view="unix")
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            (row,) = [r for r in table.rows if r.sock.local.address == path]
            assert row.sock.owners[0].pid == os.getpid() and row.sock.state.value == "LISTEN"
            assert all(r.sock.proto.value == "unix" for r in table.rows)
            await pilot.press("k")
            await pilot.pause()
            assert not isinstance(app.screen, TextScreen)     # no port: nothing planned
    finally:
        server.close()


async def test_detail_shows_the_ports_history_from_the_recorders_database(tmp_path):
    from portscope.history import diff, store
    from portscope.snapshot import take_snapshot
    from portscope.filters import SocketFilter
    sock = listener()
    port = sock.getsockname()[1]
    try:
        snap = take_snapshot(SocketFilter(port_range=(port, port)))
        writer = store.Writer(str(tmp_path / "history.db"))
        try:
            writer.write(diff.diff_views({}, diff.view(snap.sockets), after=None,
                                         at=snap.taken_at), snap.taken_at)
        finally:
            writer.close()
        app = PortscopeApp(interval_s=60, history_path=str(tmp_path / "history.db"))
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            table.select_key(row_for(table, sock).key)
            await pilot.press("enter")
            await settled(app, pilot)
            detail = str(app.query_one("#detail").render())
            assert f"History of port {port} (portscope record):" in detail
            assert "(still held)" in detail and f"  {os.getpid()}  " in detail
        app = PortscopeApp(interval_s=60, history_path=str(tmp_path / "missing.db"))
        async with app.run_test(size=SIZE) as pilot:
            table = await refreshed(app, pilot)
            table.select_key(row_for(table, sock).key)
            await pilot.press("enter")
            await settled(app, pilot)
            assert "History: cannot read it:" in str(app.query_one("#detail").render())
    finally:
        sock.close()
