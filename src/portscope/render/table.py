"""Rich tables for terminals (rich is imported only here, only when a table is drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO


def write_table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]],
                aligns: Sequence[str], *, header: bool = True,
                sections: Sequence[bool] | None = None, title: str | None = None) -> None:
    """Draw ``rows`` as a rich table on ``out``; ``sections[i]`` True draws a rule after row
    ``i`` (used to group rows by port). Cells are plain text, never rich markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=header, header_style="bold", box=None, pad_edge=False,
                  title=title, title_justify="left")
    for name, align in zip(headers, aligns):
        table.add_column(name, justify=align, overflow="fold")
    for i, row in enumerate(rows):
        table.add_row(*(Text(cell) for cell in row),
                      end_section=bool(sections and sections[i]))
    Console(file=out, soft_wrap=False, highlight=False).print(table)
