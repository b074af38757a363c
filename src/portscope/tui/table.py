"""``SocketTable``: a virtual table on Textual's line API.

Only the lines on screen are drawn, so 100,000 rows cost no more per frame than 20; a row's
cell texts are computed when it is first drawn (or filtered on). The cursor is a row key (the
socket identity), not a row number: when rows are inserted above it, filtered or sorted, it
stays on the same socket.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .model import CHANGED, CLOSED, GROUP_HEADERS, MARKS, NEW, Row, TuiColumn, row_texts

#: colours of TCPView: new rows green, closed red, changed yellow (a marker character says the
#: same without colour)
MARK_STYLES = {NEW: Style(color="green", bold=True), CLOSED: Style(color="red"),
               CHANGED: Style(color="yellow"), None: Style()}
HEADER_STYLE = Style(bold=True, underline=True)
SORTED_STYLE = Style(bold=True, underline=True, italic=True)
CURSOR_STYLE = Style(reverse=True)
#: every segment carries a style: Textual's NO_COLOR filter fails on a segment without one
PLAIN = Style()
WIDTH_SAMPLE = 5000      # rows whose texts decide the column widths
GAP = 1


class SocketTable(ScrollView, can_focus=True):
    """The socket table: ``set_rows()`` gives it rows and columns; ``cursor_row`` is the row
    under the cursor (None when empty). Posts ``CursorMoved`` when the cursor lands on another
    row, ``HeaderClicked`` when a column title is clicked (sort by it)."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(-1)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("left", "pan(-8)", "Left", show=False),
        Binding("right", "pan(8)", "Right", show=False),
    ]

    class CursorMoved(Message):
        """The cursor is on another row (``row`` None: the table is empty)."""

        def __init__(self, row: Row | None) -> None:
            self.row = row
            super().__init__()

    class HeaderClicked(Message):
        """A column title was clicked: ``index`` into the columns."""

        def __init__(self, index: int) -> None:
            self.index = index
            super().__init__()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: list[Row] = []
        self.columns: list[TuiColumn] = []
        self.grouped = False
        self.sort_index: int | None = None
        self.widths: list[int] = []
        self.cursor = 0
        self._cursor_key = None

    # -- data ------------------------------------------------------------------------------

    @property
    def cursor_row(self) -> Row | None:
        """The row under the cursor, or None."""
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def set_rows(self, rows: list[Row], columns: list[TuiColumn], *, grouped: bool = False,
                 sort_index: int | None = None, measure: bool = True) -> None:
        """Show ``rows``; the cursor stays on the row with the same key when there is one,
        else at the same position (clamped). ``measure`` False keeps the column widths (a
        filter keystroke: the rows are a subset of those measured)."""
        self.rows = rows
        if columns is not self.columns:
            self.columns = columns
        self.grouped = grouped
        self.sort_index = sort_index
        if measure or not self.widths:
            self._measure()
        else:
            self.virtual_size = Size(self.virtual_size.width, len(rows) + 1)
        index = None
        if self._cursor_key is not None:
            index = next((i for i, r in enumerate(rows) if r.key == self._cursor_key), None)
        self._place(self.cursor if index is None else index, notify=True)
        self.refresh()

    def _headers(self) -> list[tuple[str, str]]:
        heads = [(c.header, c.column.align) for c in self.columns]
        if self.grouped:
            heads += [(h, a) for _k, h, a in GROUP_HEADERS]
        return heads

    def _measure(self) -> None:
        heads = self._headers()
        widths = [cell_len(h) for h, _a in heads]
        limits = [c.width for c in self.columns] + [8, 8, 60][:len(heads) - len(self.columns)]
        for row in self.rows[:WIDTH_SAMPLE]:
            for i, text in enumerate(row_texts(row, self.columns, self.grouped)):
                if len(text) > widths[i]:
                    widths[i] = cell_len(text)
        self.widths = [min(w, limit) for w, limit in zip(widths, limits)]
        total = 2 + sum(self.widths) + GAP * max(len(self.widths) - 1, 0)
        self.virtual_size = Size(total, len(self.rows) + 1)

    # -- cursor ----------------------------------------------------------------------------

    def _place(self, index: int, notify: bool = False) -> None:
        index = max(0, min(index, len(self.rows) - 1))
        before = self._cursor_key
        self.cursor = index
        row = self.cursor_row
        self._cursor_key = row.key if row is not None else None
        body = max(self.scrollable_content_region.height - 1, 1)
        top = round(self.scroll_y)
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + body:
            self.scroll_to(y=index - body + 1, animate=False, immediate=True)
        self.refresh()
        if notify or before != self._cursor_key:
            self.post_message(self.CursorMoved(row))

    def select_key(self, key) -> bool:
        """Move the cursor to the row with ``key``; False when no row has it."""
        index = next((i for i, r in enumerate(self.rows) if r.key == key), None)
        if index is None:
            return False
        self._place(index)
        return True

    def action_cursor(self, delta: int) -> None:
        self._place(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._place(self.cursor + direction * max(self.scrollable_content_region.height - 2, 1))

    def action_edge(self, direction: int) -> None:
        self._place(0 if direction < 0 else len(self.rows) - 1)

    def action_pan(self, delta: int) -> None:
        self.scroll_to(x=max(self.scroll_x + delta, 0), animate=False)

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + round(self.scroll_x) - 2
            for i, width in enumerate(self.widths):
                if x < width + GAP:
                    if i < len(self.columns):
                        self.post_message(self.HeaderClicked(i))
                    return
                x -= width + GAP
            return
        self._place(round(self.scroll_y) + offset.y - 1)

    # -- drawing ---------------------------------------------------------------------------

    def _line(self, texts: Sequence[str], aligns: Sequence[str]) -> str:
        cells = []
        for text, width, align in zip(texts, self.widths, aligns):
            if cell_len(text) > width:
                text = set_cell_size(text, width - 1) + "…"
            cells.append(set_cell_size(text, width) if align == "left"
                         else " " * (width - cell_len(text)) + text)
        return (" " * GAP).join(cells)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        heads = self._headers()
        aligns = [a for _h, a in heads]
        if y == 0:
            segments = [Segment("  ", PLAIN)]
            for i, ((head, align), w) in enumerate(zip(heads, self.widths)):
                text = set_cell_size(head, w) if align == "left" else head.rjust(w)
                style = SORTED_STYLE if i == self.sort_index else HEADER_STYLE
                segments += [Segment(text, style), Segment(" " * GAP, PLAIN)]
            strip = Strip(segments)
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                return Strip.blank(width, self.rich_style)
            row = self.rows[index]
            style = MARK_STYLES[row.mark]
            if index == self.cursor:
                style = style + CURSOR_STYLE if self.has_focus else style + Style(underline=True)
            widths = tuple(self.widths)
            if row.line is None or row.line[0] != widths:
                row.line = (widths, MARKS[row.mark] + " " + self._line(
                    row_texts(row, self.columns, self.grouped), aligns))
            text = row.line[1]
            strip = Strip([Segment(text, style)])
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
