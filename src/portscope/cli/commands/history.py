"""``portscope history``: who held a port (or what a process held) when, from the recorder's
database."""

from __future__ import annotations

import argparse
import sys

from ... import history
from ...errors import InvalidInput
from ...history.when import parse_moment
from ...ports import parse_port
from ...render import history as render
from ...render import jsonfmt, listing
from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "history", help="who held a port when (from portscope record's database)",
        description="Who held PORT when (or what process PID, or processes named NAME, "
                    "held), from the database portscope record writes: one row per process "
                    "and socket, from when to when, with what timed each end (poll: some "
                    "time between the two times shown; tracepoint, sock-destroy: exact; "
                    "startup: while nothing was recording). --at TIME: the listeners at "
                    "that moment. Exit 1 when nothing matches.")
    parser.add_argument("target", nargs="?", metavar="PORT|PID|NAME",
                        help="a port (1-65535), pid:N for a process id, or a process name")
    parser.add_argument("--since", metavar="TIME",
                        help="from this time: 2h (ago), yesterday, 2026-12-01 03:00 (local), "
                             "ISO 8601")
    parser.add_argument("--until", metavar="TIME", help="up to this time (same forms)")
    parser.add_argument("--at", metavar="TIME",
                        help="the listener set at this moment (same forms)")
    parser.add_argument("--connections", action="store_true",
                        help="include connection groups recorded with record --connections")
    parser.add_argument("--db", metavar="PATH",
                        help="the database (default: as portscope record)")
    common.add_output_options(parser)
    parser.set_defaults(run=run)


def _target(text: str | None) -> dict:
    if text is None:
        return {}
    if text.startswith("pid:"):
        return {"pid": common.parse_pid(text[4:])}
    if text[:1].isascii() and text[:1].isdigit():
        return {"port": parse_port(text)}
    if not text or len(text) > 64:
        raise InvalidInput(f"not a port, pid:N or process name: {text!r}")
    return {"name": text}


def run(args: argparse.Namespace) -> int:
    target = _target(args.target)
    if args.at and (args.since or args.until):
        raise InvalidInput("--at is one moment: drop --since and --until")
    since = parse_moment(args.since) if args.since else None
    until = parse_moment(args.until) if args.until else None
    if since and until and since > until:
        raise InvalidInput("--since is after --until")
    with history.open(args.db) as db:
        if args.at:
            rows = db.at(parse_moment(args.at), connections=args.connections)
            rows = [h for h in rows if _wanted(h, target)]
        else:
            rows = db.holdings(since=since, until=until, connections=args.connections,
                               **target)
    if args.json:
        doc = {"schema_version": 1, "database": db.path,
               "at": parse_moment(args.at).isoformat() if args.at else None,
               "since": since and since.isoformat(), "until": until and until.isoformat(),
               "holdings": [render.holding_json(h) for h in rows]}
        sys.stdout.write(jsonfmt.dumps(doc) + "\n")
    else:
        fmt = common.output_format(args)
        listing.write_rows(sys.stdout, render.HOLDING_HEADERS,
                           [render.holding_row(h, csv=fmt == "csv") for h in rows],
                           render.HOLDING_ALIGNS, keys=render.HOLDING_KEYS, fmt=fmt,
                           header=not args.no_header)
    return ExitStatus.answer(bool(rows))


def _wanted(h, target: dict) -> bool:
    return (h.port == target.get("port", h.port) and h.process.pid == target.get("pid",
            h.process.pid) and h.process.name == target.get("name", h.process.name))
