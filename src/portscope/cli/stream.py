"""Options shared by ``watch`` and ``record`` (the change stream), declared once."""

from __future__ import annotations

import argparse

from ..filters import SocketFilter
from ..history.sources import Feed
from ..ports import parse_port_range
from . import common


def _interval(text: str) -> float:
    from ..errors import InvalidInput
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.05 <= value <= 3600:
        raise InvalidInput(f"--interval: not a number of seconds from 0.05 to 3600: {text!r}")
    return value


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """``list``'s filters (``-t -u -x -4 -6 --netns --port --process --user``), and
    ``--connections``, ``--interval``, ``--poll-only``."""
    common.add_socket_options(parser)
    group = parser.add_argument_group("selection")
    group.add_argument("--port", type=common.option_type(parse_port_range), metavar="N|A-B",
                       help="local port or range")
    group.add_argument("--process", metavar="NAME", help="held by a process of this name")
    group.add_argument("--user", type=common.option_type(common.parse_user), metavar="USER",
                       help="held by this user (name or uid)")
    group.add_argument("--connections", action="store_true",
                       help="also established connections, one item per listener and remote "
                            "address (accepted) or per remote endpoint (outgoing)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--interval", default="1", metavar="SECONDS",
                        help="seconds between polls (default 1)")
    timing.add_argument("--poll-only", action="store_true",
                        help="poll only: no tracepoint, no sock_diag destroy reports")


def open_feed(args: argparse.Namespace) -> Feed:
    """The ``Feed`` the options describe; its notes (sources not available) go to stderr."""
    protos, families = common.protos_families(args)
    flt = SocketFilter(protos=protos, families=families, port_range=args.port,
                       process=args.process,
                       uids=None if args.user is None else frozenset({args.user}))
    feed = Feed(flt, connections=args.connections, netns=common.netns_choice(args),
                interval_s=_interval(args.interval), exact=not args.poll_only,
                backend=args.backend)
    for note in feed.notes:
        common.warn(note)
    return feed
