"""``PortscopeApp``: the Textual application of ``portscope tui``.

A view of the public API only: snapshots come from a source (``source.py``) in a worker
thread, so the screen never waits for a scan; each refresh is diffed against the last by socket
identity (``model.changes``) to colour and mark rows. Actions go through the library's own
safety: kill (``plan_kill`` / ``refuse`` / ``terminate`` / ``verify_port``), ``check_bind``,
``pick_free_ports``.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import timezone
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from .. import namespaces
from ..errors import AccessDenied, HistoryError, KillRefused, PortscopeError
from ..render.columns import endpoint_text, safe
from ..types import Snapshot
from . import model
from .detail import TIME_FORMAT, detail_text
from .model import CLOSED, VIEW_BY_NAME, VIEWS, Row, View
from .source import LiveSource
from .table import SocketTable

MIN_INTERVAL_S = 0.5
MAX_INTERVAL_S = 60.0
KILL_TIMEOUT_S = 5.0
#: up to this many rows, the scan's worker thread formats every row's text (a new or changed
#: one: unchanged rows keep theirs), so that a filter keystroke only compares text
PREPARED_ROWS = 50_000


class TextScreen(ModalScreen[bool]):
    """A modal text: ``y`` answers True when ``question`` is set; Escape/``n``/``q`` close
    with False."""

    BINDINGS = [Binding("escape,n,q", "answer(False)", "Close"),
                Binding("y", "answer(True)", "Yes", show=False)]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll { width: 90%; height: auto; max-height: 90%;
                                  border: round $accent; padding: 0 1;
                                  background: $surface; }
    """

    def __init__(self, title: str, text: str, question: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.text = text
        self.question = question

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = self.title_text
            yield Static(self.text, markup=False, id="text")
            hint = f"{self.question} [y/N]" if self.question else "Escape closes"
            yield Static(hint, markup=False, id="hint")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(bool(answer and self.question))


class ExportScreen(ModalScreen[str | None]):
    """Asks where to export the view: a path ending in ``.csv`` writes CSV, else JSON."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical { width: 80%; height: auto; border: round $accent;
                              background: $surface; padding: 0 1; }
    """

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Export the view (.json or .csv)"
            yield Input(self.default, id="path")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PortscopeApp(App):
    """TCPView for the terminal.

    Args:
        source: where snapshots come from (default ``LiveSource(netns)``; ``FixedSource``
            replays given ones): ``capture(view)`` (a snapshot and its Accepted counts),
            ``port_snapshot(port, netns)``, ``scope(snapshot)``, ``ranges()``,
            ``service_name(port, proto)`` and ``history(port)``.
        interval_s: seconds between refreshes (0.5-60).
        view: the first view's name (``listeners``, ``all``, ``connections``, ``udp``,
            ``unix``, ``processes``).
        clock: seconds of a monotonic clock, for the scan cost (default ``time.perf_counter``;
            tests inject a fixed one).
        netns: the namespaces the default source covers (``take_snapshot``'s ``netns``).
        history_path: the default source's history database (``portscope record``).
    """

    TITLE = "portscope"
    CSS = """
    Screen { layout: vertical; }
    #status { height: auto; padding: 0 1; background: $boost; }
    #table { height: 1fr; }
    #detail-box { height: 40%; border-top: solid $accent; display: none; }
    #detail-box.shown { display: block; }
    #detail { padding: 0 1; }
    #filter { display: none; border: none; height: 1; padding: 0 1; }
    #filter.shown { display: block; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort(1)", "Sort"),
        Binding("S", "sort(0)", "Reverse", show=False),
        Binding("enter,d", "detail", "Detail"),
        Binding("k", "kill", "Kill"),
        Binding("c", "check", "Check"),
        Binding("f", "free", "Free"),
        Binding("y", "copy", "Copy"),
        Binding("e", "export", "Export"),
        Binding("p", "pause", "Pause"),
        Binding("plus", "interval(1)", "Slower", show=False),
        Binding("minus", "interval(-1)", "Faster", show=False),
        Binding("r", "refresh_now", "Refresh", show=False),
        *(Binding(v.key, f"view('{v.name}')", v.title, show=False) for v in VIEWS),
    ]

    def __init__(self, source=None, *, interval_s: float = 1.0, view: str = "listeners",
                 clock: Callable[[], float] = time.perf_counter, netns: str | None = None,
                 history_path: str | None = None) -> None:
        super().__init__()
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"interval_s must be {MIN_INTERVAL_S}-{MAX_INTERVAL_S} s, "
                             f"not {interval_s!r}")
        self.source = source if source is not None else LiveSource(netns, history_path)
        self.interval_s = interval_s
        self.view: View = VIEW_BY_NAME[view]
        self.clock = clock
        self.paused = False
        self.snapshot: Snapshot | None = None
        self.scan_cost_s: float | None = None
        self.scan_error: str | None = None
        self.refreshes = 0
        self.query_text = ""
        self._terms: tuple[model.Term, ...] = ()
        self.sort_key: str = "local"
        self.sort_reverse = False
        self._previous: model.Seen | None = None
        self._rows: list[Row] = []
        self._columns: list[model.TuiColumn] = []
        self._timer = None
        self._scanning = False
        self._detail_for = None

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", id="status", markup=False)
        yield SocketTable(id="table")
        with VerticalScroll(id="detail-box"):
            yield Static("", id="detail", markup=False)
        yield Input(placeholder=model.QUERY_HELP, id="filter")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one(SocketTable).focus()
        self._timer = self.set_interval(self.interval_s, self.refresh_now)
        self._draw_status()
        self.refresh_now()

    # -- refresh ---------------------------------------------------------------------------

    def refresh_now(self) -> None:
        """Start a scan unless paused or one is running (timer and ``r``)."""
        if self.paused or self._scanning:
            return
        self._scanning = True
        self._scan(self.view)

    def action_refresh_now(self) -> None:
        if self._scanning:
            return
        self._scanning = True
        self._scan(self.view)

    @work(thread=True, group="scan")      # one at a time: see _scanning
    def _scan(self, view: View) -> None:
        started = self.clock()
        try:
            snapshot, accepted = self.source.capture(view)
        except (PortscopeError, OSError) as exc:
            self.call_from_thread(self._scan_failed, str(exc))
            return
        cost = self.clock() - started
        sockets = [s for s in snapshot.sockets if view.wants(s)]
        previous = self._previous if view is self.view else None
        marks, closed, current = model.changes(previous, sockets, snapshot.taken_at)
        counts = {model.socket_key(snapshot.sockets[i]): n for i, n in accepted.items()}
        if view.grouped:
            rows = model.group_by_process([*sockets, *closed], marks)
            columns = model.process_columns()
        else:
            columns = model.columns_for(view, snapshot, counts, self.source.service_name)
            known = {r.key: r for r in self._rows} if view is self.view else {}
            same_columns = [c.key for c in columns] == [c.key for c in self._columns]
            rows = [model.make_row(s, marks, known if same_columns else {}, counts)
                    for s in (*sockets, *closed)]
        if len(rows) <= PREPARED_ROWS:      # format here, not on the first filter keystroke
            for row in rows:
                if row.haystack is None:
                    row.haystack = " ".join(model.row_texts(row, columns, view.grouped)).lower()
        self.call_from_thread(self._apply, view, snapshot, cost, current, rows, columns)

    def _scan_failed(self, message: str) -> None:
        self._scanning = False
        self.scan_error = message
        self._draw_status()

    def _apply(self, view: View, snapshot: Snapshot, cost: float, current: model.Seen,
               rows: list[Row], columns: list) -> None:
        self._scanning = False
        if view is not self.view:
            self.refresh_now()          # the view changed during the scan: scan again
            return
        self.snapshot = snapshot
        self.scan_cost_s = cost
        self.scan_error = None
        self.refreshes += 1
        self._previous = current
        self._rows = rows
        self._columns = columns
        self._show()

    def _show(self, resort: bool = True, measure: bool = True) -> None:
        """Sort (when asked: after a refresh or a new sort order) and filter the rows into the
        table; the cursor stays on its socket. Filtering a sorted list keeps it sorted, so a
        filter keystroke costs one pass over the rows."""
        table = self.query_one(SocketTable)
        columns = self._columns
        grouped = self.view.grouped
        keys = [c.key for c in columns]
        sort_index = keys.index(self.sort_key) if self.sort_key in keys else None
        if resort and sort_index is not None:
            column = columns[sort_index]
            if column.sort is not None:
                get = column.sort
                self._rows.sort(key=lambda r: get(r.sock), reverse=self.sort_reverse)
            else:
                self._rows.sort(key=lambda r: model.row_texts(r, columns, grouped)[sort_index],
                                reverse=self.sort_reverse)
        rows = self._rows
        if self._terms:
            def text_of(row: Row) -> str:
                if row.haystack is None:
                    row.haystack = " ".join(model.row_texts(row, columns, grouped)).lower()
                return row.haystack
            names = model.namespace_names(self.snapshot.namespaces if self.snapshot else ())
            rows = list(filter(model.compile_query(self._terms, text_of, names), rows))
        else:
            rows = list(rows)
        table.set_rows(rows, columns, grouped=grouped, sort_index=sort_index, measure=measure)
        self._draw_status()

    def _draw_status(self) -> None:
        refresh = "PAUSED (p resumes)" if self.paused else f"every {self.interval_s:g} s"
        lines = [f"{self.view.title} · {refresh}"]
        snap = self.snapshot
        if snap is not None:
            shown = len(self.query_one(SocketTable).rows)
            lines[0] += f" · {shown} of {len(self._rows)} rows"
            if self.query_text:
                lines[0] += f" · filter: {safe(self.query_text)}"
            taken = snap.taken_at.astimezone(timezone.utc).strftime("%H:%M:%S UTC")
            cost = f"{self.scan_cost_s * 1000:.0f} ms" if self.scan_cost_s is not None else "?"
            lines.append(f"{safe(snap.hostname)} · taken {taken} · scan {cost} · "
                         f"{self.source.scope(snap)} · {snap.backend} · "
                         + ("complete" if snap.complete else "INCOMPLETE"))
            lines += [safe(w) for w in snap.warnings]
        else:
            lines.append("scanning…")
        if self.scan_error:
            lines.append(f"scan failed: {safe(self.scan_error)}")
        self.query_one("#status", Static).update("\n".join(lines))

    # -- keys ------------------------------------------------------------------------------

    def action_view(self, name: str) -> None:
        view = VIEW_BY_NAME[name]
        if view is self.view:
            return
        self.view = view
        self._previous = None
        self._rows = []
        self.refresh_now() if not self._scanning else None
        self._draw_status()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self._draw_status()

    def action_interval(self, direction: int) -> None:
        steps = [0.5, 1, 2, 5, 10, 30, 60]
        index = min(range(len(steps)), key=lambda i: abs(steps[i] - self.interval_s))
        self.interval_s = steps[max(0, min(index + direction, len(steps) - 1))]
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.interval_s, self.refresh_now)
        self._draw_status()

    def action_sort(self, forward: int) -> None:
        keys = [c.key for c in self._columns]
        if not keys:
            return
        if not forward:
            self.sort_reverse = not self.sort_reverse
        else:
            index = keys.index(self.sort_key) if self.sort_key in keys else -1
            self.sort_key = keys[(index + 1) % len(keys)]
            self.sort_reverse = False
        self._show()

    def on_socket_table_header_clicked(self, event: SocketTable.HeaderClicked) -> None:
        key = self._columns[event.index].key
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, False
        self._show()

    def action_filter(self) -> None:
        bar = self.query_one("#filter", Input)
        bar.add_class("shown")
        bar.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        try:
            terms = model.parse_query(event.value)
        except model.QueryError as exc:
            event.input.border_title = str(exc)
            self.query_one("#status", Static).update(f"filter: {exc}")
            return
        self.query_text, self._terms = event.value.strip(), terms
        self._show(resort=False, measure=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self._close_filter()

    def on_key(self, event) -> None:
        if event.key == "escape" and self.query_one("#filter", Input).has_focus:
            self._close_filter()
            event.stop()

    def _close_filter(self) -> None:
        bar = self.query_one("#filter", Input)
        if not bar.value.strip():
            bar.remove_class("shown")
        self.query_one(SocketTable).focus()

    # -- detail pane -----------------------------------------------------------------------

    def action_detail(self) -> None:
        box = self.query_one("#detail-box")
        box.toggle_class("shown")
        if box.has_class("shown"):
            self._load_detail(self.query_one(SocketTable).cursor_row)

    def on_socket_table_cursor_moved(self, event: SocketTable.CursorMoved) -> None:
        box = self.query("#detail-box")        # empty while the app shuts down
        if box and box.first().has_class("shown"):
            self._load_detail(event.row)

    def _load_detail(self, row: Row | None) -> None:
        if row is None:
            self.query_one("#detail", Static).update("")
            return
        if row.key == self._detail_for:
            return
        self._detail_for = row.key
        self._detail(row, self.snapshot)

    @work(thread=True, group="detail")
    def _detail(self, row: Row, snapshot: Snapshot) -> None:
        port_snapshot = None
        try:
            if not row.sockets and row.sock.local.port:
                port_snapshot = self.source.port_snapshot(row.sock.local.port, row.sock.netns)
            history = None
            if not row.sockets and row.sock.local.port:
                try:
                    history = self.source.history(row.sock.local.port)
                except HistoryError as exc:
                    history = f"cannot read it: {exc}"
            text = detail_text(row, port_snapshot, snapshot, self.source.ranges(),
                               self.source.service_name, history)
        except (PortscopeError, OSError) as exc:
            text = f"cannot explain it: {exc}"
        self.call_from_thread(self._show_detail, row.key, text)

    def _show_detail(self, key, text: str) -> None:
        if key == self._detail_for:         # else the cursor moved on meanwhile
            self.query_one("#detail", Static).update(text)

    # -- actions ---------------------------------------------------------------------------

    def _socket_row(self, action: str) -> Row | None:
        row = self.query_one(SocketTable).cursor_row
        if row is None:
            self.notify(f"{action}: no row selected", severity="warning")
            return None
        if row.sockets:
            self.notify(f"{action} works on a socket: open the process's sockets with "
                        "filter pid:N", severity="warning")
            return None
        if not row.sock.local.port or row.sock.proto.value not in ("tcp", "udp"):
            self.notify(f"{action}: this socket has no port", severity="warning")
            return None
        return row

    def action_copy(self) -> None:
        row = self.query_one(SocketTable).cursor_row
        if row is None:
            return
        self.copy_to_clipboard(model.row_json(row))
        self.notify("row copied as JSON (terminal clipboard, OSC 52)")

    def action_export(self) -> None:
        if self.snapshot is None:
            return
        default = f"portscope-{self.view.name}.json"
        self.push_screen(ExportScreen(default), self._export)

    def _export(self, path: str | None) -> None:
        if not path:
            return
        table = self.query_one(SocketTable)
        if path.lower().endswith(".csv"):
            text = model.export_csv(table.rows, self._columns, self.view.grouped)
        else:
            text = model.export_json(self.snapshot, table.rows, self.view.name, self.query_text)
        target = Path(path).expanduser()
        try:
            write_atomically(target, text)
        except OSError as exc:
            self.notify(f"export failed: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"{len(table.rows)} row(s) written to {safe(str(target))}")

    def action_check(self) -> None:
        row = self._socket_row("check")
        if row is not None:
            self._check(row)

    @work(thread=True, group="action")
    def _check(self, row: Row) -> None:
        from ..bindcheck import check_bind
        port = row.sock.local.port
        try:
            diagnosis = check_bind(port, proto=row.sock.proto)
        except (PortscopeError, OSError, ValueError) as exc:
            self.call_from_thread(self.notify, f"check failed: {exc}", severity="error")
            return
        verdict = "can be bound" if diagnosis.bindable else f"cannot be bound ({diagnosis.errno})"
        lines = [f"{row.sock.proto.value} port {port} {verdict}: {' and '.join(diagnosis.binds)}"]
        lines += [f"  {r.message}" for r in diagnosis.reasons]
        lines += [f"  note: {r.message}" for r in diagnosis.warnings]
        if diagnosis.fixes:
            lines += ["", "What to try:", *(f"  {fix}" for fix in diagnosis.fixes)]
        self.call_from_thread(self.push_screen, TextScreen(
            f"check {port}", "\n".join(safe(line) for line in lines)))

    def action_free(self) -> None:
        row = self._socket_row("free port")
        if row is not None:
            self._free(row)

    @work(thread=True, group="action")
    def _free(self, row: Row) -> None:
        from ..freeport import pick_free_ports
        port = row.sock.local.port
        try:
            found = pick_free_ports(1, near=port, protos=(row.sock.proto,))
        except (PortscopeError, OSError, ValueError) as exc:
            self.call_from_thread(self.notify, f"free port: {exc}", severity="error")
            return
        message = (f"free {row.sock.proto.value} port near {port}: {found[0]} (binds now; not "
                   "reserved)" if found else f"no free port near {port}")
        self.call_from_thread(self.notify, message, timeout=10)

    # -- kill ------------------------------------------------------------------------------

    def action_kill(self) -> None:
        row = self._socket_row("kill")
        if row is None:
            return
        if row.mark == CLOSED:
            self.notify("kill: that socket is closed already", severity="warning")
            return
        if row.sock.netns not in (None, namespaces.own_inode()):
            self.notify("kill acts in this network namespace only: use portscope kill "
                        "--netns for that one", severity="warning")
            return
        self._plan_kill(row)

    @work(thread=True, group="kill")
    def _plan_kill(self, row: Row) -> None:
        from ..kill import plan_kill, refuse
        sock = row.sock
        plan = plan_kill(sock.local.port, protos=(sock.proto,))
        try:
            changed = row_changed(row, plan)
            if changed:
                raise KillRefused(f"the row changed since it was shown ({changed}); nothing "
                                  "was signalled: look again and retry")
            refuse(plan)
        except (KillRefused, AccessDenied) as exc:
            plan.close()
            self.call_from_thread(self.push_screen, TextScreen(
                "kill refused", safe(str(exc))))
            return
        live = [t for t in plan.targets if not t.gone]
        if not live:
            plan.close()
            self.call_from_thread(self.notify, f"port {sock.local.port}: no process to signal")
            return
        text = plan_text(plan)

        def answered(yes: bool) -> None:
            if yes:
                self._terminate(plan)
            else:
                plan.close()
                self.notify("kill declined: nothing signalled")
        self.call_from_thread(self.push_screen, TextScreen(
            f"kill port {sock.local.port}", text,
            f"send SIGTERM to {len(live)} process(es)?"), answered)

    @work(thread=True, group="kill")
    def _terminate(self, plan) -> None:
        from ..kill import plan_protos, terminate, verify_port
        try:
            outcomes = terminate(plan, sig=signal.SIGTERM, timeout_s=KILL_TIMEOUT_S)
            check = verify_port(plan.port, None, plan_protos(plan))
        except (KillRefused, AccessDenied) as exc:
            self.call_from_thread(self.push_screen, TextScreen("kill refused", safe(str(exc))))
            return
        finally:
            plan.close()
        lines = [f"pid {o.pid} ({o.name}): {o.result} [{', '.join(o.signals) or 'no signal'}]"
                 + (f": {o.detail}" if o.detail else "") for o in outcomes]
        lines.append("")
        if check.freed:
            lines.append(f"port {plan.port} is free now (a trial bind succeeded)")
        else:
            for sock in check.still_held:
                lines.append(f"still held: {sock.proto.value} {endpoint_text(*sock.local)} by "
                             f"{', '.join(str(o.pid) for o in sock.owners) or '(hidden)'}")
            if check.kernel_held:
                lines.append(f"NOT free yet: the kernel keeps {len(check.kernel_held)} closed "
                             "connection(s) (TIME_WAIT...) for up to 60 s")
        self.call_from_thread(self.push_screen, TextScreen(
            f"kill port {plan.port}: {'freed' if check.freed else 'not freed'}",
            "\n".join(safe(line) for line in lines)))
        self.call_from_thread(self.action_refresh_now)


def row_changed(row: Row, plan) -> str | None:
    """Why the plan's fresh scan does not show ``row``'s socket with the same holders (pid
    and start time), or None when it does: the re-check at the moment of acting."""
    sock = row.sock
    planned = {s.inode for s in (*plan.sockets, *plan.hidden)}
    if sock.inode not in planned:
        return f"socket inode {sock.inode} is no longer on port {plan.port}"
    targets = {t.pid: t for t in plan.targets}
    for owner in sock.owners:
        target = targets.get(owner.pid)
        if target is None:
            return f"PID {owner.pid} no longer holds it"
        if target.gone:
            return f"PID {owner.pid}: {target.gone}"
        if target.process.started_at != owner.process.started_at:
            return f"PID {owner.pid} is another process now (start time differs)"
    return None


def plan_text(plan) -> str:
    """The plan in words: each target (pid, user, start time, name, sockets, note, command),
    kernel-held and unplanned sockets. Escaped."""
    lines = [f"port {plan.port}: {len(plan.sockets)} socket(s); plan: SIGTERM each holder, "
             f"wait {KILL_TIMEOUT_S:g} s, then prove the port is free", ""]
    for t in plan.targets:
        started = t.process.started_at.strftime(TIME_FORMAT) if t.process.started_at else "?"
        socks = ", ".join(f"{s.proto.value} {s.state.value} {endpoint_text(*s.local)}"
                          for s in t.sockets)
        lines.append(f"pid {t.pid} {t.process.name or '?'} (user {t.process.user or '?'}, "
                     f"started {started}): {socks}")
        lines.append(f"    {' '.join(t.process.cmdline or ()) or '?'}")
        note = t.gone or (t.respawner.detail if t.respawner else "")
        if note:
            lines.append(f"    note: {note}")
    for sock in plan.kernel_held:
        lines.append(f"kernel-held, no process to signal: {sock.state.value} "
                     f"{endpoint_text(*sock.local)}")
    for sock in plan.unplanned:
        lines.append(f"not planned (a connection held by another process): "
                     f"{endpoint_text(*sock.local)}")
    lines += ["", "Each holder is re-checked (pid, start time, socket inode) and signalled "
                  "through a pidfd at the moment you confirm."]
    return "\n".join(safe(line) for line in lines)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a
    rename: a reader never sees half a file.

    Raises:
        OSError: the directory is not writable, the disk is full...
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
