"""The time axis on screen: watch's event lines and JSON lines, history's holdings table.

Process names, paths and command lines are escaped (``columns.safe``) before a terminal sees
them. JSON carries ISO 8601 UTC times; terminal lines show local times.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TextIO

from ..history.diff import Event, EventKind
from ..history.store import Holding
from ..ports import endpoint_text
from ..types import ProcessInfo
from .columns import safe

_COLOURS = {EventKind.OPENED: "\x1b[32m", EventKind.CLOSED: "\x1b[31m",
            EventKind.OWNERS_CHANGED: "\x1b[33m", EventKind.STATE_CHANGED: "\x1b[33m"}
_RESET = "\x1b[0m"

HOLDING_HEADERS = ("From", "To", "Duration", "Process", "PID", "User", "Exe", "Address",
                   "Source")
HOLDING_KEYS = ("from", "to", "duration_s", "process", "pid", "user", "exe", "address",
                "source")
HOLDING_ALIGNS = ("left", "left", "right", "left", "right", "left", "left", "left", "left")


def use_colour(out: TextIO) -> bool:
    """Colours on a terminal, unless ``NO_COLOR`` is set or ``TERM`` is ``dumb``."""
    return (out.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.") + \
        f"{moment.astimezone().microsecond // 1000:03d}"


def _who(owners: tuple[ProcessInfo, ...]) -> str:
    if not owners:
        return "(no visible owner)"
    return ", ".join(f"{safe(p.name or '?')} (pid {p.pid}"
                     f"{', ' + safe(p.user) if p.user else ''})" for p in owners)


def event_line(event: Event, *, colour: bool = False) -> str:
    """One line for a person: time, kind, socket, state, owners, and what timed it."""
    key, item = event.key, event.item
    proto = f"{key.proto}{'6' if item.family == 'ipv6' else ''}"
    where = safe(endpoint_text(key.address, key.port)) if key.port is not None or \
        key.proto != "unix" else safe(key.address)
    if key.is_connections:
        peer = endpoint_text(key.remote_address, key.remote_port) \
            if key.remote_port is not None else key.remote_address
        where += f" <- {safe(peer)} ({item.connections} connection(s))"
    state = str(item.state)
    if event.kind is EventKind.STATE_CHANGED:
        state = f"{event.old_state} -> {item.state}"
    who = _who(item.owners)
    if event.kind is EventKind.OWNERS_CHANGED:
        parts = []
        if event.added:
            parts.append(f"+ {_who(event.added)}")
        if event.removed:
            parts.append(f"- {_who(event.removed)}")
        who = "; ".join(parts)
    if event.after is None:
        timing = f"[{event.source}]"
    else:
        timing = f"[{event.source}: between {_clock(event.after)} and {_clock(event.at)}]"
    if event.pid is not None:
        timing = f"{timing[:-1]}, pid {event.pid}]"
    kind = f"{event.kind:<14}"
    if colour:
        kind = f"{_COLOURS[event.kind]}{kind}{_RESET}"
    return f"{_clock(event.at)}  {kind} {proto:<5} {where}  {state}  {who}  {timing}"


SCHEMA_VERSION = 1        # render.jsonfmt's (not imported: it loads the snapshot machinery)


def _process(process: ProcessInfo) -> dict:
    return {"pid": process.pid, "ppid": process.ppid, "name": process.name,
            "exe": process.exe,
            "cmdline": None if process.cmdline is None else list(process.cmdline),
            "user": process.user, "uid": process.uid,
            "started_at": None if process.started_at is None else
            process.started_at.isoformat(), "unit": process.unit,
            "container": process.container}


def event_json(event: Event) -> dict:
    """An event as a JSON object (``schema_version`` 1, the data model's field names;
    undecodable bytes as ``\\xNN``: strict JSON, see ``jsonfmt.jsonable``)."""
    from .jsonfmt import jsonable
    key, item = event.key, event.item
    return jsonable({
        "schema_version": SCHEMA_VERSION,
        "kind": str(event.kind), "at": event.at.isoformat(),
        "after": None if event.after is None else event.after.isoformat(),
        "source": str(event.source), "pid": event.pid,
        "proto": str(key.proto), "family": str(item.family), "netns": key.netns,
        "local": {"address": key.address, "port": key.port}, "inode": key.inode,
        "remote": None if key.remote_address is None else
        {"address": key.remote_address, "port": key.remote_port},
        "state": str(item.state),
        "old_state": None if event.old_state is None else str(event.old_state),
        "uid": item.uid, "v6only": item.v6only, "connections": item.connections,
        "owners": [_process(p) for p in item.owners],
        "added": [_process(p) for p in event.added],
        "removed": [_process(p) for p in event.removed],
    })


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _span(at: datetime | None, after: datetime | None) -> str:
    if at is None:
        return "(still held)"
    if after is None:
        return _clock(at)
    return f"{_clock(after)}..{_clock(at)[11:]}" if after.date() == at.date() else \
        f"{_clock(after)}..{_clock(at)}"


def holding_row(h: Holding, *, csv: bool = False) -> tuple[str, ...]:
    """A holding as cells: times local (for CSV: ISO 8601 UTC), names escaped (for CSV:
    left to the CSV writer, csvfmt)."""
    p = h.process
    address = endpoint_text(h.address, h.port)
    if h.remote_address is not None:
        address += f" <- {h.remote_address}"
    source = str(h.from_source) if h.to_source is None else f"{h.from_source}/{h.to_source}"
    if csv:
        return (h.from_at.isoformat(), "" if h.to_at is None else h.to_at.isoformat(),
                "" if h.duration_s is None else f"{h.duration_s:.3f}", p.name or "",
                str(p.pid), p.user or "", p.exe or "", address, source)
    return (_span(h.from_at, h.from_after), _span(h.to_at, h.to_after),
            _duration(h.duration_s), safe(p.name or "?"), str(p.pid), safe(p.user or "?"),
            safe(p.exe or "?"), safe(address), source)


def holding_json(h: Holding) -> dict:
    """A holding as a JSON object."""
    return {
        "from": h.from_at.isoformat(),
        "from_after": None if h.from_after is None else h.from_after.isoformat(),
        "from_source": str(h.from_source),
        "to": None if h.to_at is None else h.to_at.isoformat(),
        "to_after": None if h.to_after is None else h.to_after.isoformat(),
        "to_source": None if h.to_source is None else str(h.to_source),
        "duration_s": h.duration_s, "process": _process(h.process),
        "proto": str(h.proto), "family": str(h.family), "netns": h.netns,
        "local": {"address": h.address, "port": h.port}, "inode": h.inode,
        "remote_address": h.remote_address, "state": str(h.state),
        "connections": h.connections,
    }
