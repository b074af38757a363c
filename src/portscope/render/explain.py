"""``explain``'s answer (an ``Explanation``): its JSON document and its paragraphs."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import TextIO

from . import columns as cols
from . import jsonfmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..explain import Explanation


def explanation_json(explanation: Explanation) -> dict:
    """``{"schema_version", "kind", "subject", "found", "complete", "summary", "sections":
    [{"title",
    "lines", "sockets": [inventory socket objects]}]}``."""
    processes: dict = {}
    addresses: dict = {}
    return {
        "schema_version": jsonfmt.SCHEMA_VERSION, "kind": explanation.kind,
        "subject": explanation.subject, "found": explanation.found,
        "complete": explanation.complete, "summary": explanation.summary,
        "sections": [{"title": s.title, "lines": list(s.lines),
                      "sockets": [json.loads(jsonfmt.socket_json(x, processes, addresses))
                                  for x in s.sockets]} for s in explanation.sections],
    }


def write_explanation(out: TextIO, explanation: Explanation) -> None:
    """Paragraphs; wrapped to the terminal's width on a terminal, one line each in a pipe.
    Every line is escaped (process names may hold control characters)."""
    width = shutil.get_terminal_size().columns if out.isatty() else 0

    def emit(text: str, indent: str = "") -> None:
        text = cols.safe(text)
        if width > 20 and not text.startswith("  "):
            out.write(textwrap.fill(text, width - 1, initial_indent=indent,
                                    subsequent_indent=indent) + "\n")
        else:
            out.write(indent + text + "\n")

    emit(explanation.summary)
    for section in explanation.sections:
        out.write("\n")
        emit(section.title)
        for line in section.lines:
            emit(line, "  ")
