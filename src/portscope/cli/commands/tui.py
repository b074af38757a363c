"""``portscope tui``: the live terminal UI (Textual, an optional extra)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys

from .. import common
from ..status import ExitStatus

INSTALL_HINT = "portscope tui needs Textual: pip install 'portscope[tui]'"
_INTERVAL_RE = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")

DESCRIPTION = """\
A live table of sockets with every owning process, like TCPView: refreshed in the background
(new rows green '+', closed red '-' for one refresh, changed yellow '*'), views (1 listeners,
2 all, 3 connections, 4 UDP, 5 UNIX, 6 by process), a filter bar (/) with port: process: pid: user:
state: proto: netns: container: and free text, '!' negates; sort (s, S or a click on a column
title), a detail pane (Enter) with the explanation and every holder; k kills the holders of
the selected port with the safety of 'portscope kill' (plan shown, confirmation, identity
re-checked at the moment of acting, port proven free), c checks it, f finds a free port near
it, y copies the row as JSON, e exports the view (JSON or CSV); p pauses, +/- change the
interval, q quits. The header says when the snapshot was taken, what it cost, which network
namespaces it covers and whether every owner could be read.

Needs Textual: pip install 'portscope[tui]'  (exit 3 without it)"""


def register(sub) -> None:
    parser = sub.add_parser("tui", help="a live TCPView-like terminal UI (needs portscope[tui])",
                            description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", default="1", metavar="S",
                        help="seconds between refreshes, 0.5-60 (default 1)")
    parser.add_argument("--view", default="listeners",
                        choices=("listeners", "all", "connections", "udp", "unix", "processes"),
                        help="the first view (default listeners)")
    parser.add_argument("--no-mouse", action="store_true",
                        help="leave the mouse to the terminal (select and paste as usual)")
    common.add_netns_option(parser, several=True)
    parser.add_argument("--db", metavar="PATH",
                        help="the history database (portscope record) whose holdings of the "
                             "selected port the detail pane shows (default: its default "
                             "path, when one is there)")
    parser.set_defaults(run=run)


def parse_interval(text: str) -> float:
    """Seconds between refreshes: a plain decimal number, 0.5-60."""
    from ...errors import InvalidInput
    if not _INTERVAL_RE.fullmatch(text) or not 0.5 <= float(text) <= 60:
        raise InvalidInput(f"invalid interval {text!r}: expected seconds, 0.5 <= S <= 60")
    return float(text)


def run(args: argparse.Namespace) -> ExitStatus:
    interval_s = parse_interval(args.interval)
    if importlib.util.find_spec("textual") is None:
        print(f"portscope: error: {INSTALL_HINT}", file=sys.stderr)
        return ExitStatus.RUNTIME
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        print("portscope: error: portscope tui needs a terminal (for a listing in a pipe: "
              "portscope --json)", file=sys.stderr)
        return ExitStatus.RUNTIME
    from ...tui.app import PortscopeApp
    app = PortscopeApp(interval_s=interval_s, view=args.view, netns=common.netns_choice(args),
                       history_path=args.db)
    app.run(mouse=not args.no_mouse)
    return ExitStatus.OK if app.return_code in (0, None) else ExitStatus.RUNTIME
