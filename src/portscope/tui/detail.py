"""The detail pane's text for a row: the ``explain`` words for its port, every holder with
exe, command line, start time, unit or container. Pure text, escaped (no Textual here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..explain import explain_pid, explain_port
from ..ports import HostPortRanges
from ..history.store import Holding
from ..render.columns import safe
from ..render.history import holding_row
from ..types import Owner, Proto, Snapshot
from .model import Row

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def holder_lines(owners: list[Owner]) -> list[str]:
    """Each distinct holder: pid, name, user, start time; exe; command line; unit or
    container."""
    lines = []
    for owner in {o.pid: o for o in owners}.values():
        p = owner.process
        started = p.started_at.strftime(TIME_FORMAT) if p.started_at else "?"
        lines.append(f"  pid {p.pid} {p.name or '?'}  user {p.user or '?'}  started {started}")
        lines.append(f"    exe  {p.exe or '?'}")
        lines.append(f"    cmd  {' '.join(p.cmdline) if p.cmdline else '?'}")
        if p.unit:
            lines.append(f"    unit {p.unit}")
        if p.container:
            lines.append(f"    container {p.container[:12]}")
    return lines


def detail_text(row: Row, port_snapshot: Snapshot | None, process_snapshot: Snapshot,
                ranges: HostPortRanges, name_of: Callable[[int, str], str | None],
                history: Sequence[Holding] | str | None = None) -> str:
    """The detail pane for ``row``.

    Args:
        row: the selected row (a socket, or a process in the grouped view).
        port_snapshot: every socket on the row's local port in its namespace (None: not
            applicable, e.g. a grouped row).
        process_snapshot: the view's snapshot (for a grouped row's process explanation).
        ranges: the host's port ranges; name_of: ``(port, proto) -> service name``.
        history: the port's last holdings from the history database (``portscope record``),
            a sentence why they could not be read, or None (no database).
    Returns:
        plain text, control characters escaped.
    """
    lines: list[str] = []
    if row.sockets:                      # a process row: every socket of it
        pid = row.sock.owners[0].pid
        explanation = explain_pid(process_snapshot, pid, ranges=ranges)
    elif port_snapshot is not None and row.sock.local.port and \
            row.sock.proto in (Proto.TCP, Proto.UDP):
        explanation = explain_port(port_snapshot, row.sock.local.port, proto=row.sock.proto,
                                   ranges=ranges, name_of=name_of)
    else:
        explanation = None
    if explanation is not None:
        lines.append(explanation.summary)
        for section in explanation.sections[:-1]:          # the last is the general "In short"
            lines += ["", section.title, *("  " + line for line in section.lines)]
    owners = [o for s in (row.sockets or (row.sock,)) for o in s.owners]
    lines += ["", "Holders:" if owners else
              f"Holders: none visible ({row.sock.owner_unknown or 'unknown'})"]
    lines += holder_lines(owners)
    if isinstance(history, str):
        lines += ["", f"History: {history}"]
    elif history is not None:
        lines += ["", f"History of port {row.sock.local.port} (portscope record):"
                  if history else f"History: nothing recorded on port {row.sock.local.port}"]
        lines += ["  " + "  ".join(holding_row(h)) for h in history]
    return "\n".join(safe(line) for line in lines).strip("\n")
