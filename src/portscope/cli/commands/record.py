"""``portscope record``: the recorder, a foreground daemon writing the change stream to SQLite."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from ...history import store
from ...history.when import parse_duration_s, parse_size_bytes
from ...render import history as render
from .. import common, stream
from ..status import ExitStatus

HEARTBEAT_S = 10        # an idle recorder stores "still looking" this often
PRUNE_S = 3600          # retention runs at start and this often


def register(sub) -> None:
    parser = sub.add_parser(
        "record", help="record the changes into a history database (SQLite)",
        description="Record every change of the listeners (as watch shows them) into an "
                    "SQLite database, until SIGTERM, SIGHUP or Ctrl-C. Each event is committed "
                    "(WAL, synchronous=FULL) before it is printed on stdout. At start, what "
                    "changed while nothing was recording is stored with source 'startup' "
                    "(closed while not recording). One recorder per database. Query it with "
                    "portscope history.")
    stream.add_stream_options(parser)
    store_group = parser.add_argument_group("store")
    store_group.add_argument(
        "--db", metavar="PATH",
        help="the database (default: /var/lib/portscope/history.db as root, else "
             "$XDG_STATE_HOME/portscope/history.db)")
    store_group.add_argument("--keep", default="30d",
                             metavar="DURATION",
                             help="delete what ended longer ago than this (default 30d)")
    store_group.add_argument("--max-size", default="1G", metavar="SIZE",
                             help="then delete the oldest ended records while the database "
                                  "is larger (default 1G)")
    store_group.add_argument("--cmdline", choices=store.CMDLINE_MODES, default="name",
                             help="how much of a command line to store: full, name (the "
                                  "program only: arguments can hold secrets; the default) "
                                  "or none")
    parser.add_argument("--json", action="store_true",
                        help="print the recorded events as JSON lines")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="do not print the recorded events")
    parser.add_argument("--print-unit", action="store_true",
                        help="print the systemd unit shipped with portscope (ExecStart set "
                             "to this installation) and exit")
    parser.set_defaults(run=run)


def unit_text() -> str:
    """The shipped ``portscope-record.service`` with ExecStart pointing at this
    installation (the ``portscope`` script that runs, or ``python -m portscope``)."""
    from importlib import resources
    text = resources.files("portscope").joinpath("data/portscope-record.service").read_text()
    if os.path.basename(sys.argv[0]) == "portscope":
        command = os.path.abspath(sys.argv[0])
    else:
        command = f"{sys.executable} -m portscope"
    return text.replace("/usr/local/bin/portscope", command)


def run(args: argparse.Namespace) -> int:
    if args.print_unit:
        sys.stdout.write(unit_text())
        return ExitStatus.OK
    path = args.db or store.default_path()
    args.keep = parse_duration_s(args.keep)
    args.max_size = parse_size_bytes(args.max_size)
    with store.Writer(path, cmdline=args.cmdline) as writer:
        writer.prune(keep_s=args.keep, max_bytes=args.max_size)
        feed = stream.open_feed(args)
        previous = {sig: signal.signal(sig, lambda *_: feed.stop())
                    for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            initial, seen_at = writer.stored_view()
            banner = f"recording to {path} (sources: {', '.join(map(str, feed.sources))})"
            _record(args, writer, feed, initial, seen_at, banner)
        finally:
            feed.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return ExitStatus.OK


def _record(args, writer: store.Writer, feed, initial, seen_at, banner: str) -> None:
    out = sys.stdout
    stored_at = pruned_at = time.monotonic()
    last = None
    for batch in feed.run(initial, seen_at):
        now = time.monotonic()
        first = last is None
        last = batch.seen_at
        if not first and not batch.events and now - stored_at < HEARTBEAT_S:
            continue
        writer.write(batch.events, batch.seen_at)        # committed: now they count
        stored_at = now
        if first:                   # the first poll is stored: from now on it is recording
            common.warn(banner)
        if not args.quiet:
            for event in batch.events:
                out.write((json.dumps(render.event_json(event)) if args.json
                           else render.event_line(event)) + "\n")
            out.flush()
        if now - pruned_at >= PRUNE_S:
            writer.prune(keep_s=args.keep, max_bytes=args.max_size)
            pruned_at = now
    if last is not None:
        writer.write((), last)          # stopped: how long it was looking
