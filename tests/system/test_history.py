"""The time axis against real sockets and processes: the change stream's sources, watch,
record and history, and the store under kill -9, a full disk, corruption and a second writer."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from portscope import history
from portscope.errors import HistoryError
from portscope.filters import SocketFilter
from portscope.history import store
from portscope.history.diff import Event, EventKind, Item, Key, Source
from portscope.history.sources import Feed, tracefs_root
from portscope.types import Family, ProcessInfo, Proto, State

ROOT = os.geteuid() == 0
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def collect(feed: Feed, action, *, polls: int = 0, until=None, timeout_s: float = 90) -> list:
    """Run ``action`` in a thread while ``feed`` polls; the events of ``polls`` batches, or
    of as many as it takes until ``until(events)`` is true (on a loaded machine a poll can
    take seconds)."""
    events = []
    worker = threading.Thread(target=action)
    batches = feed.run()
    deadline = time.monotonic() + timeout_s
    try:
        events += next(batches).events      # the baseline is taken before the action starts
        worker.start()
        count = 1
        while time.monotonic() < deadline:
            events += next(batches).events
            count += 1
            if (until is not None and until(events)) or (until is None and count >= polls):
                break
    finally:
        worker.join()
        feed.stop()
        batches.close()
        feed.close()
    return events


def kinds_of(events) -> list:
    return [e.kind for e in events]


def closed_after(seen_open: threading.Event):
    """An ``until`` for ``collect``: sets ``seen_open`` once an opened event came (the action
    then closes its socket), stops at the closed event."""
    def until(events) -> bool:
        if EventKind.OPENED in kinds_of(events):
            seen_open.set()
        return EventKind.CLOSED in kinds_of(events)
    return until


def test_polling_reports_the_interval():
    port = free_port()
    feed = Feed(SocketFilter(port_range=(port, port)), interval_s=0.3, exact=False)
    marks = {}
    seen_open = threading.Event()

    def act():
        time.sleep(0.4)
        marks["opened"] = datetime.now(timezone.utc)
        s = listen(port)
        seen_open.wait(60)                  # open until a poll has seen it
        time.sleep(0.1)
        marks["closed"] = datetime.now(timezone.utc)
        s.close()

    events = collect(feed, act, until=closed_after(seen_open))
    seen_open.set()
    assert kinds_of(events) == [EventKind.OPENED, EventKind.CLOSED]
    for event, mark in zip(events, (marks["opened"], marks["closed"])):
        assert event.source is Source.POLL
        assert event.after is not None and event.after <= mark <= event.at
    assert events[0].item.owners[0].pid == os.getpid()
    assert events[1].item.owners[0].pid == os.getpid()      # as seen while it was open


def test_a_listener_between_two_polls_is_not_seen_by_polling_alone():
    port = free_port()
    feed = Feed(SocketFilter(port_range=(port, port)), interval_s=0.5, exact=False)

    def act():
        time.sleep(0.6)
        listen(port).close()          # lives microseconds: between two polls

    assert collect(feed, act, polls=3) == []


needs_tracepoint = pytest.mark.skipif(not ROOT or tracefs_root() is None,
                                      reason="the tracepoint needs root and tracefs")


@needs_tracepoint
def test_the_tracepoint_catches_a_10_ms_listener_with_its_pid():
    port = free_port()
    feed = Feed(SocketFilter(port_range=(port, port)), interval_s=1.0)
    assert Source.TRACEPOINT in feed.sources
    marks = {}

    def act():
        time.sleep(0.3)
        marks["opened"] = time.time()
        s = listen(port)
        time.sleep(0.01)
        s.close()
        marks["closed"] = time.time()

    events = collect(feed, act, until=lambda ev: EventKind.CLOSED in kinds_of(ev))
    assert [e.kind for e in events] == [EventKind.OPENED, EventKind.CLOSED]
    opened, closed = events
    assert opened.source is Source.TRACEPOINT and opened.after is None
    assert opened.pid == os.getpid()
    assert abs(opened.at.timestamp() - marks["opened"]) < 0.05
    assert 0.005 < (closed.at - opened.at).total_seconds() < 0.2
    assert closed.source in (Source.TRACEPOINT, Source.SOCK_DESTROY)
    assert opened.item.owners and opened.item.owners[0].pid == os.getpid()


def test_udp_close_is_timed_by_the_destroy_reports():
    port = free_port()
    feed = Feed(SocketFilter(port_range=(port, port)), interval_s=0.5)
    if Source.SOCK_DESTROY not in feed.sources:
        feed.close()
        pytest.skip("the sock_diag destroy groups cannot be joined here")
    marks = {}
    seen_open = threading.Event()

    def act():
        u = socket.socket(type=socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", port))
        seen_open.wait(60)                  # bound until a poll has seen it
        time.sleep(0.2)
        marks["closed"] = time.time()
        u.close()

    events = collect(feed, act, until=closed_after(seen_open))
    seen_open.set()
    closed = [e for e in events if e.kind is EventKind.CLOSED]
    assert len(closed) == 1 and closed[0].source is Source.SOCK_DESTROY
    assert abs(closed[0].at.timestamp() - marks["closed"]) < 1.0


FORK_HANDOVER = textwrap.dedent("""\
    import os, socket, sys, time
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    sys.stdin.readline()
    os._exit(0)                    # the parent goes, the child keeps the listener
""")


def test_fork_handover_is_owners_changed():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FORK_HANDOVER, str(port)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    child = None
    try:
        parent = int(proc.stdout.readline())
        feed = Feed(SocketFilter(port_range=(port, port)), interval_s=0.3, exact=False)
        pids = {}

        def act():
            time.sleep(0.4)
            proc.stdin.write("fork\n")
            proc.stdin.flush()
            pids["child"] = int(proc.stdout.readline())
            time.sleep(0.7)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.wait(timeout=10)

        events = collect(feed, act, until=lambda ev: len(ev) >= 2 and proc.poll() is not None)
        child = pids["child"]
        changes = [e for e in events if e.kind is EventKind.OWNERS_CHANGED]
        assert [(tuple(p.pid for p in e.added), tuple(p.pid for p in e.removed))
                for e in changes] == [((child,), ()), ((), (parent,))]
        assert not [e for e in events if e.kind is not EventKind.OWNERS_CHANGED]
    finally:
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------ record / history

class Recorder:
    """``portscope record`` as a child process; ``lines`` are the events it acknowledged."""

    def __init__(self, db: str, port: int, *extra: str, interval: str = "0.2"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portscope", "record", "--db", db, "--port", str(port),
             "--json", "--interval", interval, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.proc.stderr.readline()
        self.banner = line

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        self.stderr = self.proc.stderr.read()
        return code


@pytest.fixture
def recorders():
    started: list[Recorder] = []

    def start(*args, **kwargs) -> Recorder:
        r = Recorder(*args, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def test_restart_records_what_changed_while_it_was_down(tmp_path, recorders):
    db = str(tmp_path / "h.db")
    port_a, port_b = free_port(), free_port()
    low, high = min(port_a, port_b), max(port_a, port_b)
    a = listen(port_a)
    first = recorders(db, low, "--port", f"{low}-{high}")
    time.sleep(0.5)
    assert first.stop() == 0
    stopped = datetime.now(timezone.utc)
    a.close()
    b = listen(port_b)
    try:
        second = recorders(db, low, "--port", f"{low}-{high}")
        time.sleep(0.5)
        assert second.stop() == 0
    finally:
        b.close()
    kinds = [(e["kind"], e["local"]["port"], e["source"]) for e in second.lines]
    assert ("closed", port_a, "startup") in kinds and ("opened", port_b, "startup") in kinds
    with history.open(db) as h:
        (held_a,) = h.holdings(port=port_a)
        assert held_a.to_source is Source.STARTUP
        assert held_a.to_after is not None and held_a.to_after <= stopped <= held_a.to_at
        (held_b,) = h.holdings(port=port_b)
        assert held_b.to_at is None and held_b.process.pid == os.getpid()


HOLD = "import socket,sys,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, " \
       "socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); " \
       "print('up', flush=True); time.sleep(float(sys.argv[2]))"


def test_history_of_a_port_after_three_owners_in_a_row_and_at(tmp_path, recorders, cli):
    db = str(tmp_path / "h.db")
    port = free_port()
    rec = recorders(db, port)
    pids, middles = [], []
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(port), "0.8"],
                             stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        pids.append(p.pid)
        time.sleep(0.4)
        middles.append(datetime.now(timezone.utc))
        p.wait(timeout=10)
        time.sleep(0.4)
    assert rec.stop() == 0
    result = cli("history", str(port), "--since", "1h", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["holdings"]
    assert [r["process"]["pid"] for r in rows] == pids
    assert all(r["to"] is not None and r["duration_s"] > 0 for r in rows)
    with history.open(db) as h:
        for pid, middle in zip(pids, middles):
            assert [x.process.pid for x in h.at(middle) if x.port == port] == [pid]
    moment = middles[1].astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")
    result = cli("history", str(port), "--at", moment, "--db", db, "--csv")
    assert result.returncode == 0 and f",{pids[1]}," in result.stdout
    table = cli("history", str(port), "--db", db)
    assert table.returncode == 0 and "Duration" in table.stdout
    nothing = cli("history", str(free_port()), "--db", db)
    assert nothing.returncode == 1 and nothing.stdout.count("\n") <= 1


def test_kill_9_loses_no_acknowledged_event(tmp_path, recorders):
    db = str(tmp_path / "h.db")
    port = free_port()
    stop = threading.Event()

    def churn():                      # a stream of events: open and close, again and again
        while not stop.is_set():
            s = listen(port)
            time.sleep(random.uniform(0.05, 0.3))
            s.close()
            time.sleep(random.uniform(0.05, 0.3))

    worker = threading.Thread(target=churn)
    worker.start()
    acknowledged = []
    try:
        for _ in range(10):
            rec = recorders(db, port, interval="0.1")
            time.sleep(random.uniform(0.3, 1.5))
            rec.stop(signal.SIGKILL)
            acknowledged += rec.lines
    finally:
        stop.set()
        worker.join()
    assert len(acknowledged) >= 10
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    with history.open(db) as h:
        stored = {(e.kind.value, e.at.isoformat()) for e in h.events(port=port)}
    missing = [e for e in acknowledged if (e["kind"], e["at"]) not in stored]
    assert missing == []


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_with_exit_3_and_an_intact_database(tmp_path, recorders, cli):
    mount = tmp_path / "small"
    mount.mkdir()
    # 96 KiB: a new database takes 60 KiB of it (file, WAL index, lock, the log while the
    # schema is checkpointed), the rest fills up with events
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], check=True)
    try:
        db = str(mount / "h.db")
        port = free_port()
        rec = recorders(db, port, "--cmdline", "full")
        assert "recording to" in rec.banner, rec.banner
        for _ in range(60):                   # open and close until the disk is full
            if rec.proc.poll() is not None:
                break
            s = listen(port)
            time.sleep(0.3)
            s.close()
            time.sleep(0.3)
        code = rec.stop(timeout_s=30)
        assert code == 3, rec.stderr
        assert "disk is full" in rec.stderr and "Traceback" not in rec.stderr
        assert rec.lines, "some events were recorded before the disk filled up"
        with history.open(db) as h:
            stored = {(e.kind.value, e.at.isoformat()) for e in h.events()}
        assert {(e["kind"], e["at"]) for e in rec.lines} <= stored
        shown = cli("history", str(port), "--db", db, "--json")
        assert shown.returncode == 0, shown.stderr
    finally:
        for r in [rec] if "rec" in locals() else []:
            r.proc.kill()
            r.proc.wait()
        subprocess.run(["umount", str(mount)], check=True)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_corrupt_database_is_refused_and_left_alone(tmp_path, cli, damage):
    db = tmp_path / "h.db"
    if damage == "random":
        db.write_bytes(os.urandom(8192))
    else:
        with store.Writer(str(db)):
            pass
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])
    before = _digest(db)
    for args in (["record", "--poll-only", "--port", "1"], ["history"]):
        result = cli(*args, "--db", str(db))
        assert result.returncode == 3, result.stderr
        assert str(db) in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1
    assert _digest(db) == before


def test_a_newer_schema_is_refused_and_left_alone(tmp_path, cli):
    db = tmp_path / "h.db"
    with store.Writer(str(db)):
        pass
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.close()
    before = _digest(db)
    for args in (["record", "--poll-only", "--port", "1"], ["history"]):
        result = cli(*args, "--db", str(db))
        assert result.returncode == 3 and "newer portscope" in result.stderr, result.stderr
    assert _digest(db) == before
    with pytest.raises(HistoryError, match="newer"):
        history.open(str(db))


def _holdings_events(count: int) -> list:
    """Listeners opened and closed over ``count`` seconds, overlapping, one still open, one
    handed to a second holder (events as the feed makes them)."""
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    rng = random.Random(7)
    events = []
    for n in range(count):
        at = start + timedelta(seconds=n)
        owner = ProcessInfo(pid=1000 + n, ppid=1, name=f"s{n % 5}", exe="/usr/bin/s",
                            cmdline=("s",), user="root", uid=0, started_at=at)
        key = Key(1, Proto.TCP, "0.0.0.0", 20000 + n % 7, 100 + n)
        item = Item(Family.IPV4, State.LISTEN, (owner,), 0)
        events.append(Event(EventKind.OPENED, key, item, at, at - timedelta(seconds=1),
                            Source.POLL))
        if n % 10 == 3:
            heir = dataclasses.replace(owner, pid=owner.pid + 50000)
            events.append(Event(EventKind.OWNERS_CHANGED, key, item._replace(owners=(heir,)),
                                at + timedelta(seconds=2), None, Source.POLL, added=(heir,),
                                removed=(owner,)))
        if n != count // 2:
            ended = at + timedelta(seconds=rng.choice((0.4, 3, 30, 400)))
            events.append(Event(EventKind.CLOSED, key, item, ended, None, Source.TRACEPOINT))
    return sorted(events, key=lambda e: e.at)


def test_at_by_the_time_index_equals_a_scan_after_migration_and_pruning(tmp_path,
                                                                       monkeypatch):
    db = str(tmp_path / "h.db")
    events = _holdings_events(300)
    with monkeypatch.context() as schema_1:          # a database of the first schema
        schema_1.setattr(store, "SCHEMA_VERSION", 1)
        with store.Writer(db) as writer:
            writer.write(events[:400])
    with store.Writer(db) as writer:                  # migrated; the rest through the index
        writer.write(events[400:])
        writer.prune(keep_s=None, max_bytes=None)
        conn = sqlite3.connect(db)
        conn.execute("DELETE FROM spans WHERE port = 20003")    # cascades to its holders
        conn.commit()
    assert conn.execute("SELECT count(*) FROM holders_time").fetchone() == \
        conn.execute("SELECT count(*) FROM holders").fetchone()
    conn.close()
    start = events[0].at
    with history.open(db) as indexed:
        scan = store.History(sqlite3.connect(db), db, version=1)
        found = 0
        for second in range(-5, 800, 3):
            moment = start + timedelta(seconds=second + 0.2)
            got = indexed.at(moment)
            assert got == scan.at(moment)
            found += len(got)
        scan.close()
    assert found > 300


def test_a_second_recorder_is_refused(tmp_path, recorders):
    db = str(tmp_path / "h.db")
    port = free_port()
    first = recorders(db, port)
    second = recorders(db, port)
    assert second.proc.wait(timeout=15) == 3
    assert f"being written by pid {first.proc.pid}" in second.banner
    assert first.stop() == 0


def test_cmdline_is_stored_as_the_program_name_unless_asked(tmp_path, recorders):
    port = free_port()
    secret = "--password=hunter2"
    for mode, expect in (("name", None), ("full", secret), ("none", None)):
        db = str(tmp_path / f"{mode}.db")
        rec = recorders(db, port, "--cmdline", mode)
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(port), "1", secret],
                             stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        time.sleep(0.6)
        rec.stop()
        p.wait(timeout=10)
        with history.open(db) as h:
            (held,) = h.holdings(port=port)
        raw = open(db, "rb").read() + (open(db + "-wal", "rb").read()
                                        if os.path.exists(db + "-wal") else b"")
        assert (b"hunter2" in raw) == (expect is not None)
        if mode == "name":
            assert held.process.cmdline == (os.path.basename(sys.executable),)
        if mode == "none":
            assert held.process.cmdline is None


HOSTILE = "import ctypes, sys; ctypes.CDLL(None).prctl(15, b'\\xff=1+1\\x1b[2J', 0, 0, 0); " \
          "exec(sys.argv[3])"


def test_a_hostile_process_name_is_recorded_and_shown_escaped(tmp_path, recorders, cli):
    """An undecodable byte and a terminal escape in the holder's name and arguments: the
    recorder keeps running (SQLite takes UTF-8 only), history's JSON stays strict, the table
    shows the bytes escaped."""
    db = str(tmp_path / "h.db")
    port = free_port()
    rec = recorders(db, port, "--cmdline", "full")
    p = subprocess.Popen([sys.executable, "-c", HOSTILE, str(port), "0.8", HOLD,
                          b"--token=\xfe\x1b]0;x\x07"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        time.sleep(0.6)
        assert p.wait(timeout=10) == 0
        time.sleep(0.6)
    finally:
        p.kill()
        p.wait()
    assert rec.stop() == 0, rec.stderr
    assert [e["kind"] for e in rec.lines] == ["opened", "closed"]
    result = cli("history", str(port), "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["holdings"]
    assert row["process"]["pid"] == p.pid and row["process"]["name"] == "\\xff=1+1\x1b[2J"
    assert row["process"]["cmdline"][-1] == "--token=\\xfe\x1b]0;x\x07"
    table = cli("history", str(port), "--db", db)
    assert table.returncode == 0 and "\\xff=1+1\\x1b[2J" in table.stdout
    assert "\x1b" not in table.stdout


# ------------------------------------------------------------------------------------ watch

def test_watch_json_lines_parse_and_match_ss(cli):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "portscope", "watch", "--json", "--port",
                             str(port), "--interval", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        time.sleep(1.0)
        s = listen(port)
        line = proc.stdout.readline()
        event = json.loads(line)
        ss = subprocess.run(["ss", "-tlnHe", f"sport = :{port}"], capture_output=True,
                            text=True, check=True).stdout
        assert event["kind"] == "opened" and event["local"] == {"address": "127.0.0.1",
                                                                "port": port}
        assert f"127.0.0.1:{port}" in ss and f"ino:{event['inode']} " in ss
        assert [o["pid"] for o in event["owners"]] == [os.getpid()]
        s.close()
        closed = json.loads(proc.stdout.readline())
        assert closed["kind"] == "closed" and closed["inode"] == event["inode"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not ROOT or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_watch_unprivileged_polls_and_says_so(tmp_path):
    port = free_port()
    cmd = [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups",
           sys.executable, "-m", "portscope", "watch", "--port", str(port), "--interval",
           "0.2", "--netns", "host"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "NO_COLOR": "1"})
    try:
        time.sleep(1.0)
        s = listen(port)
        line = proc.stdout.readline()
        s.close()
        assert "opened" in line and "[poll: between" in line and "\x1b" not in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        stderr = proc.stderr.read()
        assert "tracepoint" in stderr and "process events are not used" in stderr
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_shipped_systemd_unit_verifies(tmp_path, cli):
    unit = tmp_path / "portscope-record.service"
    result = cli("record", "--print-unit")
    assert result.returncode == 0
    unit.write_text(result.stdout)
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    assert "ExecStart=" in result.stdout and "portscope record" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path, cli):
    for args in (["history", "--since", "2 hours"], ["history", "99999"],
                 ["record", "--keep", "0d"], ["watch", "--interval", "0"],
                 ["history", "--at", "now", "--since", "1h"]):
        result = cli(*args, "--db", str(tmp_path / "x.db")) if args[0] != "watch" \
            else cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
