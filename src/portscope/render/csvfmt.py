"""CSV output: one row per socket, the column keys as header (RFC 4180, via the csv module).

Formula-safe (CWE-1236, as OWASP's "CSV Injection" page recommends): a cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a leading ``'``, so
that a spreadsheet shows it as text instead of evaluating it (a process named ``=1+1``, or
``@SUM(...)``). Plain numbers (``-1``) and the lone ``-`` that stands for "none" are left
as they are: a spreadsheet reads those as values, never as formulas.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from typing import TextIO

_FORMULA_START = frozenset("=+-@\t\r")
_PLAIN_VALUE = re.compile(r"-|[-+]?[0-9]+(\.[0-9]+)?")


def neutralised(cell: str) -> str:
    """``cell`` made inert for spreadsheets: prefixed with ``'`` when it would start a
    formula (see the module docstring)."""
    if cell[:1] in _FORMULA_START and not _PLAIN_VALUE.fullmatch(cell):
        return "'" + cell
    return cell


def write_rows(out: TextIO, keys: Sequence[str], rows: Iterable[Sequence[str]], *,
               header: bool = True) -> None:
    """Write ``rows`` as CSV with ``keys`` as the header line (unless ``header`` is False);
    every cell is ``neutralised``."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow([neutralised(k) for k in keys])
    writer.writerows([neutralised(cell) for cell in row] for row in rows)
