"""What the TUI shows, without Textual: rows keyed by socket identity, the views, the filter
query language, sorting, the change marks of a refresh, and the export of a view.

Everything here is pure and works on ``Snapshot``/``Socket`` from the public API; ``app.py``
draws it. A row's text comes from the column specs of ``render/columns.py`` (escaped), so the
TUI shows what the table and CSV show.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..history import diff as hdiff
from ..render import columns as cols
from ..render import csvfmt, jsonfmt
from ..types import LISTENER_STATES, NetNamespace, Proto, Snapshot, Socket, State

# ---------------------------------------------------------------------------------------------
# Identity and change marks

#: a socket's identity across refreshes: the change stream's key (network namespace,
#: protocol, local address and port, inode: ``history.diff.socket_key``) and the peer
#: endpoint (kernel-held TIME_WAIT sockets have inode 0 and differ by peer only).
SocketKey = tuple


def socket_key(sock: Socket) -> SocketKey:
    """The identity of ``sock`` across refreshes (see ``SocketKey``)."""
    return (hdiff.socket_key(sock), sock.remote)


NEW, CLOSED, CHANGED = "new", "closed", "changed"
#: the marker character of each change, so that rows read without colour (NO_COLOR)
MARKS = {NEW: "+", CLOSED: "-", CHANGED: "*", None: " "}
_EVENT_MARKS = {hdiff.EventKind.OPENED: NEW, hdiff.EventKind.CLOSED: CLOSED,
                hdiff.EventKind.OWNERS_CHANGED: CHANGED, hdiff.EventKind.STATE_CHANGED: CHANGED}


@dataclass(frozen=True, slots=True)
class Seen:
    """What one refresh saw, for the next one to compare with: the change stream's view of
    the listeners, and every socket by key."""

    listeners: dict
    sockets: dict[SocketKey, Socket]


def _owner_pids(sock: Socket) -> tuple[int, ...]:
    return tuple(sorted({o.pid for o in sock.owners}))


def changes(previous: Seen | None, current: Sequence[Socket], at: datetime
            ) -> tuple[dict[SocketKey, str], list[Socket], Seen]:
    """The change of each socket since the previous refresh.

    Listeners are compared by the change stream (``history.diff``: opened, closed,
    owners-changed including an exec, state-changed); other sockets (connections, TIME_WAIT)
    by state and holder PIDs.

    Args:
        previous: what the last refresh saw (None: the first refresh, nothing is marked).
        current: this refresh's sockets.
        at: when they were taken (aware UTC).
    Returns:
        ``(marks, closed, seen)``: ``marks`` maps the key of each new socket to ``NEW``, of
        each changed one to ``CHANGED`` and of each closed one to ``CLOSED``; ``closed`` lists
        the sockets of ``previous`` that are gone (shown once more, marked); ``seen`` is what
        the next refresh compares with.
    """
    by_key = {socket_key(s): s for s in current}
    seen = Seen(hdiff.view(current), by_key)
    marks: dict[SocketKey, str] = {}
    if previous is None:
        return marks, [], seen
    listener_keys = {hdiff.socket_key(s): k for k, s in by_key.items()}
    old_keys = {hdiff.socket_key(s): k for k, s in previous.sockets.items()}
    for event in hdiff.diff_views(previous.listeners, seen.listeners, after=None, at=at):
        key = (listener_keys if event.kind is not hdiff.EventKind.CLOSED
               else old_keys).get(event.key)
        if key is not None:
            marks[key] = _EVENT_MARKS[event.kind]
    for key, sock in by_key.items():
        if hdiff.socket_key(sock) in seen.listeners:
            continue                        # a listener: the change stream said it
        before = previous.sockets.get(key)
        if before is None:
            marks[key] = NEW
        elif before.state is not sock.state or _owner_pids(before) != _owner_pids(sock):
            marks[key] = CHANGED
    closed = [s for k, s in previous.sockets.items() if k not in by_key]
    for sock in closed:
        marks[socket_key(sock)] = CLOSED
    return marks, closed, seen


# ---------------------------------------------------------------------------------------------
# Columns

@dataclass(frozen=True, slots=True)
class TuiColumn:
    """A table column: the shared ``render.columns.Column`` (text) and how it sorts.

    Attributes:
        column: key, header, text and alignment.
        sort: socket -> sort key (default: the column's text).
        width: the widest the column gets, in cells (longer text is cut with an ellipsis).
    """

    column: cols.Column
    sort: Callable[[Socket], object] | None = None
    width: int = 24

    @property
    def key(self) -> str:
        return self.column.key

    @property
    def header(self) -> str:
        return self.column.header


def _port_sort(ep) -> tuple:
    return (-1, "") if ep is None else (ep.port if ep.port is not None else -1, ep.address)


def _first_pid(sock: Socket) -> int:
    return min((o.pid for o in sock.owners), default=-1)


def columns_for(view: "View", snapshot: Snapshot, counts: dict[SocketKey, int],
                name_of: Callable[[int, str], str | None]) -> list[TuiColumn]:
    """The columns of ``view``: process, PID, user, protocol, state, local and peer endpoint
    (no peer in the listeners view), service (UNIX: the peer processes and the inode),
    accepted connections (the listeners and all views, when their snapshot has connections:
    ``counts``, listener key -> count, not empty), netns (when the snapshot covers several
    namespaces) and container (when a socket has one)."""
    result = [TuiColumn(cols.PROCESS, width=20), TuiColumn(cols.PID, _first_pid, width=14),
              TuiColumn(cols.USER, width=12), TuiColumn(cols.PROTO, width=6),
              TuiColumn(cols.STATE, width=14),
              TuiColumn(cols.LOCAL, lambda s: _port_sort(s.local), width=47)]
    if view.name != "listeners":
        result.append(TuiColumn(cols.REMOTE, lambda s: _port_sort(s.remote), width=47))
    if view.name == "unix":
        result += [TuiColumn(cols.PEERS, width=24), TuiColumn(cols.INODE, lambda s: s.inode,
                                                              width=10)]
    else:
        result.append(TuiColumn(cols.service_column(name_of), width=16))
    if view.name in ("listeners", "all") and counts:
        accepted = cols.accepted_column(lambda s: counts.get(socket_key(s)))
        result.append(TuiColumn(accepted, lambda s: counts.get(socket_key(s), -1), width=8))
    if len(snapshot.namespaces) > 1:
        result.append(TuiColumn(cols.netns_column(snapshot.namespaces), width=16))
    if any(s.container is not None for s in snapshot.sockets):
        result.append(TuiColumn(cols.CONTAINER, width=20))
    return result


# ---------------------------------------------------------------------------------------------
# Views

@dataclass(frozen=True, slots=True)
class View:
    """A set of sockets: ``name``, the ``key`` that shows it, a ``title`` and which sockets it
    keeps (``wants``). ``grouped`` views show one row per process instead of per socket."""

    name: str
    key: str
    title: str
    wants: Callable[[Socket], bool]
    grouped: bool = False


def _connection(sock: Socket) -> bool:
    return sock.remote is not None and sock.state not in LISTENER_STATES


VIEWS = (
    View("listeners", "1", "Listeners", lambda s: s.state in LISTENER_STATES),
    View("all", "2", "All sockets", lambda s: True),
    View("connections", "3", "Connections", _connection),
    View("udp", "4", "UDP", lambda s: s.proto is Proto.UDP),
    View("unix", "5", "UNIX sockets", lambda s: s.proto is Proto.UNIX),
    View("processes", "6", "By process", lambda s: True, grouped=True),
)
VIEW_BY_NAME = {v.name: v for v in VIEWS}


# ---------------------------------------------------------------------------------------------
# Rows

@dataclass(slots=True)
class Row:
    """One line of the table: a socket (or, in a grouped view, a process and its sockets).

    Attributes:
        key: the socket identity (grouped: ``("pid", pid, started_at)``).
        sock: the socket (grouped: the process's first socket).
        mark: ``NEW``, ``CLOSED``, ``CHANGED`` or None.
        sockets: grouped rows: every socket of the process.
        texts: the cell texts, computed on first use.
        haystack: the texts in lower case, for free-text filters (first use).
        line: the drawn line and the column widths it was drawn for (first use).
        count: the accepted-connection count the texts were made with.
    """

    key: SocketKey
    sock: Socket
    mark: str | None = None
    sockets: tuple[Socket, ...] = ()
    texts: tuple[str, ...] | None = None
    haystack: str | None = field(default=None, repr=False)
    line: tuple | None = field(default=None, repr=False)
    count: int | None = None


def make_row(sock: Socket, marks: dict[SocketKey, str], known: dict[SocketKey, Row],
             counts: dict[SocketKey, int]) -> Row:
    """The row of ``sock``, reusing the texts of the last refresh's row when the socket is
    unchanged (same fields, same accepted-connection count): a refresh of a quiet host
    formats almost nothing again."""
    key = socket_key(sock)
    row = Row(key, sock, marks.get(key))
    before = known.get(key)
    if before is not None and before.texts is not None and before.sock == sock \
            and before.count == counts.get(key):
        row.texts, row.haystack = before.texts, before.haystack
        if before.mark == row.mark:
            row.line = before.line
    row.count = counts.get(key)
    return row


def group_by_process(sockets: Iterable[Socket], marks: dict[SocketKey, str]) -> list[Row]:
    """One row per process (pid and start time) holding any of ``sockets``; a process is
    marked when one of its sockets is (new before changed before closed)."""
    groups: dict[tuple, list[Socket]] = {}
    for sock in sockets:
        for owner in sock.owners:
            groups.setdefault(("pid", owner.pid, owner.process.started_at), []).append(sock)
    rows = []
    order = {NEW: 0, CHANGED: 1, CLOSED: 2}
    for key, socks in groups.items():
        found = [marks[k] for k in map(socket_key, socks) if k in marks]
        mark = min(found, key=order.__getitem__) if found else None
        if mark == CLOSED and len(found) < len(socks):
            mark = CHANGED          # some sockets closed, the process still holds others
        rows.append(Row(key, socks[0], mark, tuple(socks)))
    return rows


def process_columns() -> list[TuiColumn]:
    """The columns of the grouped view: process, PID, user, listeners, connections, ports."""
    def pid_of(sock: Socket) -> int:
        return sock.owners[0].pid if sock.owners else -1
    return [TuiColumn(cols.Column("process", "Process", lambda s: cols.safe(
                s.owners[0].process.name or "?") if s.owners else ""), width=20),
            TuiColumn(cols.Column("pid", "PID", lambda s: str(pid_of(s)), "right"), pid_of,
                      width=8),
            TuiColumn(cols.Column("user", "User", lambda s: cols.safe(
                s.owners[0].process.user or "?") if s.owners else ""), width=12)]


def group_texts(row: Row) -> tuple[str, ...]:
    """The cells of a grouped row after its process columns: listeners, connections, ports."""
    listening = [s for s in row.sockets if s.state in LISTENER_STATES]
    ports = sorted({(s.proto.value, s.local.port) for s in listening})
    text = " ".join(f"{p}/{proto}" for proto, p in ports)
    return (str(len(listening)), str(len(row.sockets) - len(listening)), text)


GROUP_HEADERS = (("listeners", "Listen", "right"), ("sockets", "Other", "right"),
                 ("ports", "Listening on", "left"))


def row_texts(row: Row, columns: Sequence[TuiColumn], grouped: bool = False) -> tuple[str, ...]:
    """The cell texts of ``row`` (cached on the row)."""
    if row.texts is None:
        texts = tuple(c.column.get(row.sock) for c in columns)
        if grouped:
            texts += group_texts(row)
        row.texts = texts
    return row.texts


# ---------------------------------------------------------------------------------------------
# The filter query language

QUERY_KEYS = ("port", "process", "pid", "user", "state", "proto", "netns", "container")
QUERY_HELP = ("port:443 process:nginx pid:42 user:www-data state:listen proto:udp "
              "netns:NAME container:NAME, free text matches any column, !term negates")


class QueryError(ValueError):
    """A filter query that cannot be understood (the message says which term and why)."""


@dataclass(frozen=True, slots=True)
class Term:
    """One term of a query: ``key`` (None for free text), ``value`` (lower case) and
    ``negated``."""

    key: str | None
    value: str
    negated: bool = False


def parse_query(text: str) -> tuple[Term, ...]:
    """Parse a filter query: whitespace-separated terms, each ``key:value`` (keys in
    ``QUERY_KEYS``) or free text; a leading ``!`` negates a term. All terms must match.

    ``port:`` takes a port or a range ``8000-8100`` and matches the local or the peer port;
    ``state:`` takes a state name (``listen``, ``time-wait``, ``estab``); ``process:``,
    ``user:``, ``netns:`` and ``container:`` match a substring, case-insensitively.

    Raises:
        QueryError: unknown key, empty value, bad port or state.
    """
    terms = []
    for word in text.split():
        negated = word.startswith("!")
        word = word[1:] if negated else word
        key, sep, value = word.partition(":")
        if not sep or key.lower() not in QUERY_KEYS:
            if sep and key.isalpha() and value:
                raise QueryError(f"unknown filter {key + ':'!r}: use one of "
                                 f"{', '.join(k + ':' for k in QUERY_KEYS)}")
            if not word:
                raise QueryError("'!' needs a term after it")
            terms.append(Term(None, word.lower(), negated))
            continue
        key = key.lower()
        if not value:
            raise QueryError(f"{key}: needs a value")
        if key in ("port", "pid"):
            _number_range(key, value)
        elif key == "state":
            _state(value)
        elif key == "proto" and value.lower() not in ("tcp", "udp", "unix", "raw"):
            raise QueryError(f"unknown protocol {value!r}: use tcp, udp, unix or raw")
        terms.append(Term(key, value.lower(), negated))
    return tuple(terms)


def _number_range(key: str, value: str) -> tuple[int, int]:
    low, dash, high = value.partition("-")
    high = high if dash else low
    limit = 65535 if key == "port" else 2 ** 22
    if not (low.isascii() and low.isdigit() and high.isascii() and high.isdigit()) \
            or not int(low) <= int(high) <= limit:
        raise QueryError(f"invalid {key} {value!r}: expected N or N-M, 0-{limit}")
    return int(low), int(high)


_STATE_ALIASES = {"ESTAB": State.ESTABLISHED, "LISTENING": None}


def _state(value: str) -> frozenset[State]:
    name = value.upper().replace("-", "_")
    if name == "LISTENING":
        return LISTENER_STATES
    if name in _STATE_ALIASES:
        return frozenset({_STATE_ALIASES[name]})
    if name in State.__members__:
        return frozenset({State[name]})
    raise QueryError(f"unknown state {value!r}: e.g. listen, established, time-wait, unconn")


def compile_query(terms: Sequence[Term], text_of: Callable[[Row], str],
                  netns_names: dict[int, str]) -> Callable[[Row], bool]:
    """A predicate over rows for ``terms`` (see ``parse_query``); ``text_of(row)`` is the
    row's text for free-text terms (lower case), ``netns_names`` names namespace inodes."""
    tests = [(_term_test(t, text_of, netns_names), t.negated) for t in terms]
    if len(tests) == 1:                 # the common case, one call per row
        test, negated = tests[0]
        return (lambda row: not test(row)) if negated else test

    def matches(row: Row) -> bool:
        for test, negated in tests:
            if test(row) == negated:
                return False
        return True
    return matches


def _owners(row: Row):
    return [o for s in (row.sockets or (row.sock,)) for o in s.owners]


def _term_test(term: Term, text_of, netns_names) -> Callable[[Row], bool]:
    value = term.value
    if term.key is None:
        return lambda row: value in text_of(row)
    if term.key == "port":
        low, high = _number_range("port", value)
        return lambda row: any(
            ep is not None and ep.port is not None and low <= ep.port <= high
            for s in (row.sockets or (row.sock,)) for ep in (s.local, s.remote))
    if term.key == "pid":
        low, high = _number_range("pid", value)
        return lambda row: any(low <= o.pid <= high for o in _owners(row))
    if term.key == "state":
        states = _state(value)
        return lambda row: any(s.state in states for s in (row.sockets or (row.sock,)))
    if term.key == "proto":
        return lambda row: any(s.proto.value == value for s in (row.sockets or (row.sock,)))
    if term.key == "process":
        return lambda row: any(value in (o.process.name or "").lower()
                               or value in (o.process.exe or "").lower() for o in _owners(row))
    if term.key == "user":
        return lambda row: any(value in (o.process.user or "").lower() or
                               value == str(o.process.uid) for o in _owners(row)) or (
            not row.sock.owners and value == str(row.sock.uid))
    if term.key == "netns":
        return lambda row: any(
            value in netns_names.get(s.netns, "").lower() or value == str(s.netns)
            for s in (row.sockets or (row.sock,)))
    # container: its name, id or image
    return lambda row: any(
        s.container is not None and any(value in (x or "").lower() for x in (
            s.container.name, s.container.id, s.container.image))
        for s in (row.sockets or (row.sock,)))


# ---------------------------------------------------------------------------------------------
# Export

def row_json(row: Row) -> str:
    """The socket of ``row`` as the JSON object of ``portscope --json`` (a grouped row: its
    process and its sockets)."""
    processes: dict[int, str] = {}
    addresses: dict[str, str] = {}
    if row.sockets:
        items = [json.loads(jsonfmt.socket_json(s, processes, addresses)) for s in row.sockets]
        process = row.sock.owners[0].process if row.sock.owners else None
        return json.dumps({"process": jsonfmt.jsonable(process), "sockets": items}, indent=2)
    return json.dumps(json.loads(jsonfmt.socket_json(row.sock, processes, addresses)),
                      indent=2)


def export_json(snapshot: Snapshot, rows: Sequence[Row], view: str, query: str) -> str:
    """The view as a JSON listing document (``schema_version`` 1, as ``portscope --json``),
    with the view and filter that selected it."""
    out = io.StringIO()
    sockets = dict.fromkeys(s for row in rows for s in (row.sockets or (row.sock,)))
    jsonfmt.write_snapshot(out, snapshot, sockets, fields={"view": view, "filter": query})
    return out.getvalue()


def export_csv(rows: Sequence[Row], columns: Sequence[TuiColumn], grouped: bool) -> str:
    """The view as CSV through the CLI's writer (``render/csvfmt``): the visible columns'
    keys as header, one line per row."""
    out = io.StringIO()
    keys = [c.key for c in columns] + ([k for k, _h, _a in GROUP_HEADERS] if grouped else [])
    csvfmt.write_rows(out, keys, (row_texts(r, columns, grouped) for r in rows))
    return out.getvalue()


def namespace_names(namespaces: Sequence[NetNamespace]) -> dict[int, str]:
    """Namespace inode -> its name (``ip netns``), or the inode as text."""
    return {ns.inode: ns.name or str(ns.inode) for ns in namespaces}
