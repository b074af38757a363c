"""``portscope list``: any sockets, with ss's letters and filters."""

from __future__ import annotations

import argparse
import sys

from ...errors import InvalidInput
from ...filters import SocketFilter
from ...ports import parse_port_range
from ...render import columns as cols
from ...render import listing
from ...snapshot import open_snapshot
from ...types import LISTENER_STATES, Proto
from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "list", help="list sockets (connected by default; -l listeners, -a all)",
        description="List sockets with every owner. Without -l or -a, connected sockets "
                    "(as ss shows them: no listeners, no TIME_WAIT).")
    common.add_listing_options(parser)
    states = parser.add_argument_group("selection")
    which = states.add_mutually_exclusive_group()
    which.add_argument("-l", "--listening", action="store_true",
                       help="listeners only (and ports published by NAT rules alone, as "
                            "PUBLISHED)")
    which.add_argument("-a", "--all", action="store_true", help="every state")
    which.add_argument("--state", type=common.option_type(common.parse_state),
                       metavar="STATE[,STATE]",
                       help="these states (listen, established, time-wait, bound-inactive, "
                            "unconn, ...; groups: listening, connected, all)")
    states.add_argument("--port", type=common.option_type(parse_port_range), metavar="N|A-B",
                        help="local port or range")
    states.add_argument("--pid", type=common.option_type(common.parse_pid), action="append",
                        metavar="PID",
                        help="held by this process (repeatable)")
    states.add_argument("--process", metavar="NAME", help="held by a process of this name")
    states.add_argument("--user", type=common.option_type(common.parse_user), metavar="USER",
                        help="held by this user (name or uid)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    protos, families = common.protos_families(args)
    if args.all:
        states = None
    elif args.listening:
        states = LISTENER_STATES
    else:
        states = args.state or common.CONNECTED_STATES
    needs_owners = args.pid or args.process or args.user is not None
    if args.no_owners and needs_owners:
        raise InvalidInput("--pid, --process and --user need owners: drop -n")
    flt = SocketFilter(protos=protos, families=families, states=states, port_range=args.port,
                       pids=frozenset(args.pid) if args.pid else None, process=args.process,
                       uids=None if args.user is None else frozenset({args.user}))
    stream = open_snapshot(flt, backend=args.backend, owners=not args.no_owners,
                           **common.netns_scope(args), published=args.listening)
    columns = cols.NO_OWNER_COLUMNS if args.no_owners else (
        cols.UNIX_LIST_COLUMNS if Proto.UNIX in protos else cols.LIST_COLUMNS)
    listing.write_listing(sys.stdout, stream, stream, columns, fmt=common.output_format(args),
                          header=not args.no_header)
    common.report_warnings(stream)
    common.keep(stream)
    return ExitStatus.OK
