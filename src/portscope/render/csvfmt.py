"""CSV output: one row per socket, the column keys as header (RFC 4180, via the csv module)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import TextIO


def write_rows(out: TextIO, keys: Sequence[str], rows: Iterable[Sequence[str]], *,
               header: bool = True) -> None:
    """Write ``rows`` as CSV with ``keys`` as the header line (unless ``header`` is False)."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(keys)
    writer.writerows(rows)
