"""Plain aligned text for pipes: one line per row, columns separated by at least two spaces.

Widths are taken from the first ``WIDTH_SAMPLE`` rows so that output streams (a longer value
later simply pushes its line wider, as ss does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

WIDTH_SAMPLE = 1000


def write_rows(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[str]],
               aligns: Sequence[str], *, header: bool = True) -> None:
    """Write ``rows`` (sequences of cell text) aligned under ``headers`` to ``out``."""
    iterator = iter(rows)
    sample = []
    for row in iterator:
        sample.append(row)
        if len(sample) >= WIDTH_SAMPLE:
            break
    widths = [len(h) if header else 0 for h in headers]
    for row in sample:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if aligns[i] == "right":
                parts.append(cell.rjust(widths[i]))
            elif i == last:
                parts.append(cell)
            else:
                parts.append(cell.ljust(widths[i]))
        return "  ".join(parts).rstrip() + "\n"

    if header:
        out.write(line(headers))
    out.writelines(line(r) for r in sample)
    batch = []
    for row in iterator:
        batch.append(line(row))
        if len(batch) >= 4096:
            out.writelines(batch)
            batch.clear()
    out.writelines(batch)
