"""The history store: the change stream in SQLite (stdlib ``sqlite3``), and its queries.

Layout (schema version ``SCHEMA_VERSION``, applied by numbered ``MIGRATIONS``; the version is
SQLite's ``user_version``, the file is marked with ``application_id``):

- ``spans``: one row per socket (or connection group) lifetime: its key, state, and when it
  opened and closed, each with the earliest time (``*_after``, NULL when exact) and the source
  that timed it.
- ``holders``: one row per process holding a span's socket, for as long as it held it (an
  ``owners-changed`` event ends some rows and starts others), with the process as resolved
  while it held the socket (pid, start time, name, exe, user, unit, container, command line
  as ``--cmdline`` allows).
- ``events``: every event, in order (what ``watch`` printed).
- ``meta``: ``seen_at``, the last moment the recorder is known to have been looking.

Writes: WAL, ``synchronous=FULL``; an event counts as recorded once the transaction holding it
committed (``Writer.write`` returns). One writer at a time: ``Writer`` holds an exclusive
``flock`` on ``PATH.lock`` (which names its PID). A database that is corrupt, of a newer schema
or not portscope's is refused with ``HistoryError`` and never rewritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import HistoryError
from ..render.escape import undecodable_escaped
from ..types import Family, ProcessInfo, Proto, State
from .diff import Event, EventKind, Item, Key, Source

APPLICATION_ID = 0x70736370          # "pscp"
CMDLINE_MODES = ("full", "name", "none")
PAGE_BYTES = 512

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE spans (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        netns INTEGER, proto TEXT NOT NULL, family TEXT NOT NULL,
        address TEXT NOT NULL, port INTEGER, inode INTEGER NOT NULL,
        remote_address TEXT, remote_port INTEGER,
        state TEXT NOT NULL, uid INTEGER, v6only INTEGER, connections INTEGER NOT NULL,
        opened_at REAL NOT NULL, opened_after REAL, open_source TEXT NOT NULL,
        closed_at REAL, closed_after REAL, close_source TEXT
    );
    CREATE UNIQUE INDEX spans_open ON spans(key) WHERE closed_at IS NULL;
    CREATE INDEX spans_port ON spans(port, opened_at);
    CREATE INDEX spans_closed ON spans(closed_at);
    CREATE TABLE holders (
        id INTEGER PRIMARY KEY,
        span_id INTEGER NOT NULL REFERENCES spans(id) ON DELETE CASCADE,
        pid INTEGER NOT NULL, started_at REAL, ppid INTEGER, name TEXT, exe TEXT,
        cmdline TEXT, user TEXT, uid INTEGER, unit TEXT, container TEXT,
        from_at REAL NOT NULL, from_after REAL, from_source TEXT NOT NULL,
        to_at REAL, to_after REAL, to_source TEXT
    );
    CREATE INDEX holders_span ON holders(span_id);
    CREATE INDEX holders_pid ON holders(pid);
    CREATE INDEX holders_name ON holders(name);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL, after REAL, source TEXT NOT NULL, kind TEXT NOT NULL,
        span_id INTEGER NOT NULL REFERENCES spans(id) ON DELETE CASCADE,
        state TEXT, old_state TEXT, pid INTEGER, connections INTEGER,
        pids TEXT NOT NULL
    );
    CREATE INDEX events_at ON events(at);
    CREATE INDEX events_span ON events(span_id);
    """,
    # 2: each holding's time span in an R-tree, for History.at (a B-tree index on from_at or
    # to_at still reads every holding on one side of the moment: 110 ms at 1,000,000 events,
    # against 0.2 ms). R-tree bounds are 32-bit floats rounded outwards: candidates, checked
    # against the exact columns; an open holding ends at 1e38.
    """
    CREATE VIRTUAL TABLE holders_time USING rtree(id, from_at, to_at);
    INSERT INTO holders_time SELECT id, from_at, coalesce(to_at, 1e38) FROM holders;
    CREATE TRIGGER holders_time_add AFTER INSERT ON holders BEGIN
        INSERT INTO holders_time VALUES (new.id, new.from_at, coalesce(new.to_at, 1e38));
    END;
    CREATE TRIGGER holders_time_end AFTER UPDATE OF from_at, to_at ON holders BEGIN
        UPDATE holders_time SET from_at = new.from_at, to_at = coalesce(new.to_at, 1e38)
        WHERE id = new.id;
    END;
    CREATE TRIGGER holders_time_drop AFTER DELETE ON holders BEGIN
        DELETE FROM holders_time WHERE id = old.id;
    END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_path() -> str:
    """The default database: ``/var/lib/portscope/history.db`` for root, else
    ``$XDG_STATE_HOME/portscope/history.db`` (``~/.local/state`` when unset)."""
    if os.geteuid() == 0:
        return "/var/lib/portscope/history.db"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    return os.path.join(state, "portscope", "history.db")


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _translate(exc: sqlite3.Error, path: str) -> HistoryError:
    """An sqlite3 error in the user's words."""
    text = str(exc)
    if getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in text:  # SQLITE_FULL
        return HistoryError(f"{path}: the disk is full; recording stopped (the database is "
                            f"intact up to the last recorded event)")
    if "not a database" in text or "malformed" in text:
        return HistoryError(f"{path}: not a readable history database ({text}); it was left "
                            f"untouched: move it away to start a new one")
    if "locked" in text or "busy" in text:
        return HistoryError(f"{path}: the database is locked by another process ({text})")
    if "readonly" in text or "unable to open" in text:
        return HistoryError(f"{path}: cannot open the database ({text})")
    return HistoryError(f"{path}: {text}")


def _check_schema(conn: sqlite3.Connection, path: str, *, fresh_ok: bool) -> int:
    """The file's schema version, after checking it is portscope's and not newer."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables == 0 and fresh_ok:
            return 0
        raise HistoryError(f"{path}: not a portscope history database (an SQLite file of "
                           f"another program); it was left untouched")
    if app_id != APPLICATION_ID:
        raise HistoryError(f"{path}: not a portscope history database (application_id "
                           f"{app_id:#x}); it was left untouched")
    if version > SCHEMA_VERSION:
        raise HistoryError(f"{path}: written by a newer portscope (schema version {version}, "
                           f"this one knows up to {SCHEMA_VERSION}); it was left untouched: "
                           f"upgrade portscope")
    return version


# ---------------------------------------------------------------------------------- reading

@dataclass(frozen=True, slots=True)
class Holding:
    """One process holding one socket (or connection group) for a while: a row of
    ``portscope history``.

    Attributes:
        process: the process as resolved while it held the socket (``cmdline`` as the
            recorder's ``--cmdline`` allowed: full, the program name only, or None).
        proto, family, address, port, netns, inode, state: the socket (``state`` the last
            recorded; ``inode`` 0 for a connection group or a socket known only from the
            tracepoint); ``remote_address``/``remote_port`` for a connection group.
        connections: connections of a group when it opened (0 for a socket).
        from_at: when the process started holding it (or the latest it can have started);
            ``from_after`` the earliest (None when exact); ``from_source`` what timed it.
        to_at, to_after, to_source: the same for the end; ``to_at`` None while it still holds
            it (as far as the store knows).
    """

    process: ProcessInfo
    proto: Proto
    family: Family
    address: str
    port: int | None
    netns: int | None
    inode: int
    state: State
    remote_address: str | None
    remote_port: int | None
    connections: int
    from_at: datetime
    from_after: datetime | None
    from_source: Source
    to_at: datetime | None
    to_after: datetime | None
    to_source: Source | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from ``from_at`` to ``to_at`` (None while still held)."""
        if self.to_at is None:
            return None
        return (self.to_at - self.from_at).total_seconds()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: ``kind``, when (``at``, ``after``: see ``diff.Event``), ``source``,
    the socket (``proto``, ``address``, ``port``, ``state``, ``old_state``), the PID the
    kernel named as its cause (``pid``) and the PIDs it concerns (``pids``: holders after the
    event; for owners-changed the added and removed ones)."""

    kind: EventKind
    at: datetime
    after: datetime | None
    source: Source
    proto: Proto
    address: str
    port: int | None
    state: State | None
    old_state: State | None
    pid: int | None
    pids: tuple[int, ...]


_HOLDING_COLUMNS = """
    h.pid, h.started_at, h.ppid, h.name, h.exe, h.cmdline, h.user, h.uid, h.unit, h.container,
    s.proto, s.family, s.address, s.port, s.netns, s.inode, s.state, s.remote_address,
    s.remote_port, s.connections, h.from_at, h.from_after, h.from_source, h.to_at,
    h.to_after, h.to_source
"""


def _holding(row) -> Holding:
    cmdline = None if row[5] is None else tuple(json.loads(row[5]))
    process = ProcessInfo(pid=row[0], ppid=row[2], name=row[3], exe=row[4], cmdline=cmdline,
                          user=row[6], uid=row[7], started_at=_dt(row[1]), unit=row[8],
                          container=row[9])
    return Holding(process, Proto(row[10]), Family(row[11]), row[12], row[13], row[14],
                   row[15], State(row[16]), row[17], row[18], row[19], _dt(row[20]),
                   _dt(row[21]), Source(row[22]), _dt(row[23]), _dt(row[24]),
                   None if row[25] is None else Source(row[25]))


class History:
    """A history database opened for reading (``open(path)``).

    Queries return typed records; times are aware UTC datetimes. Use as a context manager or
    call ``close()``.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, version: int = SCHEMA_VERSION
                 ) -> None:
        self._conn = conn
        self.path = path
        self._version = version

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def _query(self, sql: str, params: Sequence = ()) -> list:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def holdings(self, *, port: int | None = None, pid: int | None = None,
                 name: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, connections: bool = False
                 ) -> list[Holding]:
        """Who held what when: holdings that overlap ``[since, until]``, oldest first.

        Args:
            port: only sockets on this local port.
            pid: only this process id (any start time: a reused PID shows both processes).
            name: only processes with this name (``comm``).
            since, until: aware datetimes bounding the time window (None: open-ended).
            connections: include connection groups (default: sockets only).
        Raises:
            HistoryError: the database cannot be read.
        """
        where, params = [], []
        if port is not None:
            where.append("s.port = ?")
            params.append(port)
        if pid is not None:
            where.append("h.pid = ?")
            params.append(pid)
        if name is not None:
            where.append("h.name = ?")
            params.append(name)
        if since is not None:
            where.append("(h.to_at IS NULL OR h.to_at >= ?)")
            params.append(since.timestamp())
        if until is not None:
            where.append("h.from_at <= ?")
            params.append(until.timestamp())
        if not connections:
            where.append("s.remote_address IS NULL")
        sql = (f"SELECT {_HOLDING_COLUMNS} FROM holders h JOIN spans s ON s.id = h.span_id"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY h.from_at, h.id")
        return [_holding(row) for row in self._query(sql, params)]

    def at(self, moment: datetime, *, connections: bool = False) -> list[Holding]:
        """The listener set at ``moment``: holdings that had started by then and had not
        ended (a holding whose end is only known to lie in an interval counts until the
        interval's end). Ordered by port, address.

        Source: the ``holders_time`` R-tree (schema 2; a database of schema 1, not yet
        migrated by a recorder, is scanned whole)."""
        t = moment.timestamp()
        span = ("holders_time r JOIN holders h ON h.id = r.id AND r.from_at <= ? "
                "AND r.to_at > ?" if self._version >= 2 else "holders h")
        sql = (f"SELECT {_HOLDING_COLUMNS} FROM {span} JOIN spans s ON s.id = h.span_id "
               f"WHERE h.from_at <= ? AND (h.to_at IS NULL OR h.to_at > ?)"
               f"{'' if connections else ' AND s.remote_address IS NULL'} "
               f"ORDER BY s.port, s.address, h.from_at")
        params = (t, t, t, t) if self._version >= 2 else (t, t)
        return [_holding(row) for row in self._query(sql, params)]

    def events(self, *, since: datetime | None = None, until: datetime | None = None,
               port: int | None = None) -> list[StoredEvent]:
        """Stored events in order, optionally in ``[since, until]`` and on ``port``."""
        where, params = [], []
        if since is not None:
            where.append("e.at >= ?")
            params.append(since.timestamp())
        if until is not None:
            where.append("e.at <= ?")
            params.append(until.timestamp())
        if port is not None:
            where.append("s.port = ?")
            params.append(port)
        sql = ("SELECT e.kind, e.at, e.after, e.source, s.proto, s.address, s.port, e.state, "
               "e.old_state, e.pid, e.pids FROM events e JOIN spans s ON s.id = e.span_id"
               f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY e.id")
        return [StoredEvent(EventKind(r[0]), _dt(r[1]), _dt(r[2]), Source(r[3]), Proto(r[4]),
                            r[5], r[6], None if r[7] is None else State(r[7]),
                            None if r[8] is None else State(r[8]), r[9],
                            tuple(json.loads(r[10])))
                for r in self._query(sql, params)]

    def seen_at(self) -> datetime | None:
        """The last moment the recorder is known to have been looking (None: never)."""
        rows = self._query("SELECT value FROM meta WHERE name = 'seen_at'")
        return _dt(float(rows[0][0])) if rows else None


def open(path: str | None = None) -> History:  # noqa: A001 - the API's name: history.open()
    """Open a history database for reading; it is never written.

    Args:
        path: the database (default ``default_path()``).
    Raises:
        HistoryError: no such file, not a portscope database, corrupt, or of a newer schema.
    """
    path = path or default_path()
    if not os.path.exists(path):
        raise HistoryError(f"{path}: no history database here (start one with "
                           f"`portscope record`, or give --db)")
    try:
        conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=5)
        version = _check_schema(conn, path, fresh_ok=False)
    except sqlite3.Error as exc:
        raise _translate(exc, path) from None
    return History(conn, path, version)


def _uri_path(path: str) -> str:
    from urllib.parse import quote
    return quote(os.path.abspath(path))


# ---------------------------------------------------------------------------------- writing

class Writer:
    """The one writer of a history database (the recorder).

    Opening takes the lock, checks the file (integrity, application id, schema version) and
    applies pending migrations; a missing file is created (mode 0600, its directory 0700).

    Args:
        path: the database file.
        cmdline: how much of a command line to store: ``full``, ``name`` (the program only,
            the default: arguments may hold secrets) or ``none``.
    Raises:
        HistoryError: another recorder holds the lock, the file is corrupt, not portscope's,
            of a newer schema, or cannot be created.
    """

    def __init__(self, path: str, *, cmdline: str = "name") -> None:
        if cmdline not in CMDLINE_MODES:
            raise ValueError(f"cmdline must be one of {CMDLINE_MODES}, not {cmdline!r}")
        self.path = path
        self._cmdline = cmdline
        self._lock_fd = self._lock(path)
        try:
            self._conn = self._connect(path)
        except BaseException:
            os.close(self._lock_fd)
            raise

    @staticmethod
    def _lock(path: str) -> int:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HistoryError(f"{path}: cannot create the database: "
                               f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise HistoryError(f"{path}: the history database is being written by pid "
                               f"{holder} (one recorder per database)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _connect(self, path: str) -> sqlite3.Connection:
        if not os.path.exists(path):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise HistoryError(f"{path}: cannot create the database: "
                                   f"{exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=0.5)
            version = _check_schema(conn, path, fresh_ok=True)
            if version:
                (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise HistoryError(f"{path}: the database is damaged ({verdict}); it was "
                                       f"left untouched: move it away to start a new one")
            else:       # before the first table: small pages keep a new database small
                conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:    # the migrations due, in one transaction
                conn.execute("BEGIN IMMEDIATE")
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _statements(MIGRATIONS[number - 1]):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")     # into the file, log empty
        except sqlite3.Error as exc:
            raise _translate(exc, path) from None
        return conn

    def close(self) -> None:
        """Close the database and release the lock."""
        try:
            self._conn.close()
        finally:
            os.close(self._lock_fd)

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stored_view(self) -> tuple[dict[Key, Item], datetime | None]:
        """What the store holds as open now (``{Key: Item}``, as ``diff.view`` builds) and
        ``seen_at``: the last moment the recorder was known to be looking."""
        try:
            spans = self._conn.execute(
                "SELECT id, key, family, state, uid, v6only, connections FROM spans "
                "WHERE closed_at IS NULL").fetchall()
            owners: dict[int, list[ProcessInfo]] = {}
            for row in self._conn.execute(
                    "SELECT h.span_id, h.pid, h.started_at, h.ppid, h.name, h.exe, h.cmdline, "
                    "h.user, h.uid, h.unit, h.container FROM holders h JOIN spans s "
                    "ON s.id = h.span_id WHERE s.closed_at IS NULL AND h.to_at IS NULL "
                    "ORDER BY h.id"):
                owners.setdefault(row[0], []).append(ProcessInfo(
                    pid=row[1], started_at=_dt(row[2]), ppid=row[3], name=row[4], exe=row[5],
                    cmdline=None if row[6] is None else tuple(json.loads(row[6])),
                    user=row[7], uid=row[8], unit=row[9], container=row[10]))
            seen = self._conn.execute("SELECT value FROM meta WHERE name = 'seen_at'").fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        result = {}
        for span_id, key, family, state, uid, v6only, count in spans:
            result[_key_from_text(key)] = Item(
                Family(family), State(state), tuple(owners.get(span_id, ())), uid,
                None if v6only is None else bool(v6only), count)
        return result, _dt(float(seen[0])) if seen else None

    def write(self, events: Iterable[Event], seen_at: datetime | None = None) -> None:
        """Record ``events`` in one transaction (committed with ``synchronous=FULL`` when this
        returns), and ``seen_at`` as the last moment the recorder was looking.

        Raises:
            HistoryError: the write failed (disk full, I/O error): nothing of it was stored.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    self._apply(event)
                if seen_at is not None:
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('seen_at', ?)",
                                 (repr(seen_at.timestamp()),))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def _process_row(self, p: ProcessInfo) -> tuple:
        if self._cmdline == "full" and p.cmdline is not None:
            cmdline = json.dumps([_text(arg) for arg in p.cmdline])
        elif self._cmdline == "name" and p.cmdline:
            cmdline = json.dumps([_text(os.path.basename(p.cmdline[0]))])
        else:
            cmdline = None
        return (p.pid, _ts(p.started_at), p.ppid, _text(p.name), _text(p.exe), cmdline,
                _text(p.user), p.uid, _text(p.unit), _text(p.container))

    def _add_holders(self, span_id: int, owners: Iterable[ProcessInfo], event: Event) -> None:
        self._conn.executemany(
            "INSERT INTO holders (span_id, pid, started_at, ppid, name, exe, cmdline, user, "
            "uid, unit, container, from_at, from_after, from_source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(span_id, *self._process_row(p), event.at.timestamp(), _ts(event.after),
              str(event.source)) for p in owners])

    def _apply(self, event: Event) -> None:
        conn = self._conn
        key, item = event.key, event.item
        key_text = _key_text(key)
        at, after, source = event.at.timestamp(), _ts(event.after), str(event.source)
        if event.kind is EventKind.OPENED:
            cur = conn.execute(
                "INSERT INTO spans (key, netns, proto, family, address, port, inode, "
                "remote_address, remote_port, state, uid, v6only, connections, opened_at, "
                "opened_after, open_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?) ON CONFLICT DO NOTHING",
                (key_text, key.netns, str(key.proto), str(item.family), _text(key.address),
                 key.port, key.inode, _text(key.remote_address), key.remote_port, str(item.state), item.uid,
                 None if item.v6only is None else int(item.v6only), item.connections, at,
                 after, source))
            if not cur.rowcount:
                return          # already open (a replayed event): nothing new
            span_id = cur.lastrowid
            self._add_holders(span_id, item.owners, event)
            pids = [p.pid for p in item.owners]
        else:
            row = conn.execute("SELECT id FROM spans WHERE key = ? AND closed_at IS NULL",
                               (key_text,)).fetchone()
            if row is None:
                return          # not open in the store: nothing to end or change
            span_id = row[0]
            if event.kind is EventKind.CLOSED:
                conn.execute("UPDATE spans SET closed_at = ?, closed_after = ?, "
                             "close_source = ? WHERE id = ?", (at, after, source, span_id))
                conn.execute("UPDATE holders SET to_at = ?, to_after = ?, to_source = ? "
                             "WHERE span_id = ? AND to_at IS NULL",
                             (at, after, source, span_id))
                pids = [p.pid for p in item.owners]
            elif event.kind is EventKind.STATE_CHANGED:
                conn.execute("UPDATE spans SET state = ? WHERE id = ?",
                             (str(item.state), span_id))
                pids = [p.pid for p in item.owners]
            else:
                for p in event.removed:
                    conn.execute(
                        "UPDATE holders SET to_at = ?, to_after = ?, to_source = ? "
                        "WHERE span_id = ? AND pid = ? AND started_at IS ? AND exe IS ? "
                        "AND to_at IS NULL",
                        (at, after, source, span_id, p.pid, _ts(p.started_at), p.exe))
                self._add_holders(span_id, event.added, event)
                pids = [p.pid for p in event.added] + [-p.pid for p in event.removed]
        conn.execute(
            "INSERT INTO events (at, after, source, kind, span_id, state, old_state, pid, "
            "connections, pids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (at, after, source, str(event.kind), span_id, str(item.state),
             None if event.old_state is None else str(event.old_state), event.pid,
             item.connections, json.dumps(pids)))

    def prune(self, *, keep_s: float | None, max_bytes: int | None,
              now: float | None = None) -> int:
        """Retention: delete what ended more than ``keep_s`` seconds ago, then, while the file
        is larger than ``max_bytes``, the oldest ended spans (with their holders and events);
        free pages are returned to the file system. Returns the number of spans deleted.

        Raises:
            HistoryError: the database could not be written.
        """
        now = time.time() if now is None else now
        conn = self._conn
        deleted = 0
        try:
            if keep_s is not None:
                conn.execute("BEGIN IMMEDIATE")
                deleted += conn.execute("DELETE FROM spans WHERE closed_at < ?",
                                        (now - keep_s,)).rowcount
                conn.execute("DELETE FROM events WHERE at < ?", (now - keep_s,))
                conn.execute("COMMIT")
            while max_bytes is not None and self.size_bytes() > max_bytes:
                conn.execute("BEGIN IMMEDIATE")
                gone = conn.execute(
                    "DELETE FROM spans WHERE id IN (SELECT id FROM spans WHERE closed_at IS "
                    "NOT NULL ORDER BY closed_at LIMIT 1000)").rowcount
                conn.execute("COMMIT")
                conn.execute("PRAGMA incremental_vacuum")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                deleted += gone
                if not gone:
                    break           # only open spans left: nothing more may go
            conn.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _translate(exc, self.path) from None
        return deleted

    def size_bytes(self) -> int:
        """Pages in use times page size: the database's size without its free pages."""
        pages, free, size = (self._conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size


def _statements(script: str) -> list[str]:
    """The SQL statements of ``script``, in order (a trigger's body stays whole)."""
    statements, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def _text(value: str | None) -> str | None:
    """A text column's value: SQLite takes UTF-8 only, so the undecodable bytes of a process
    name, path or argument (kept by ``surrogateescape``) are stored as ``\\xNN`` text."""
    return None if value is None else undecodable_escaped(value)


def _key_text(key: Key) -> str:
    return json.dumps([key.netns, str(key.proto), key.address, key.port, key.inode,
                       key.remote_address, key.remote_port], separators=(",", ":"))


def _key_from_text(text: str) -> Key:
    netns, proto, address, port, inode, remote_address, remote_port = json.loads(text)
    return Key(netns, Proto(proto), address, port, inode, remote_address, remote_port)
