"""Rich tables for terminals (rich is imported only here, only when a table is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO


def write_table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]],
                aligns: Sequence[str], *, header: bool = True, title: str | None = None) -> None:
    """Draw ``rows`` as a rich table on ``out``. Cells are plain text, never rich markup.

    Cells are never cut or folded: on a terminal narrower than the table, lines run on.
    """
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=header, header_style="bold", box=None, pad_edge=False,
                  title=title, title_justify="left")
    natural = 0
    for i, (name, align) in enumerate(zip(headers, aligns)):
        widest = max([cell_len(row[i]) for row in rows] + [cell_len(name) if header else 0])
        table.add_column(name, justify=align, no_wrap=True, min_width=widest)
        natural += widest + 2
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console = Console(file=out, highlight=False)
    # wider than the terminal (or than the 80 columns rich assumes for TERM=dumb): the lines
    # run on, never a column dropped or a cell cut (both sizes set, or rich ignores them)
    console.size = (max(console.width, natural), console.height)
    console.print(table)
