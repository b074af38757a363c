"""``portscope`` (``portscope listeners``): every listener grouped by port, with all owners."""

from __future__ import annotations

import argparse
import sys

from ...filters import SocketFilter
from ...render import columns as cols
from ...render import listing
from ...snapshot import take_snapshot
from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "listeners", help="listening sockets with every owner (the default)",
        description="TCP LISTEN and BOUND_INACTIVE sockets and bound unconnected UDP sockets, "
                    "grouped by port, with service names and every process holding each "
                    "(with -x: UNIX listeners and bound datagram sockets, as ss -xl lists "
                    "them, with the processes connected to them). "
                    "Sockets of containers name their container; a port a container runtime "
                    "publishes shows where it forwards to and who serves it there, and a port "
                    "published by NAT rules alone (no host socket) is listed as PUBLISHED.")
    common.add_listing_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services
    protos, families = common.protos_families(args)
    snapshot = take_snapshot(SocketFilter.listeners(protos=protos, families=families),
                             backend=args.backend, owners=not args.no_owners,
                             **common.netns_scope(args), published=True)
    sockets = sorted(snapshot.sockets,
                     key=lambda s: (s.local.port or 0, s.proto, s.family, s.local.address))
    columns = cols.listener_columns(services.service_name, owners=not args.no_owners,
                                    unix=any(s.unix is not None for s in sockets))
    listing.write_listing(sys.stdout, snapshot, sockets, columns, fmt=common.output_format(args),
                          header=not args.no_header)
    common.report_warnings(snapshot)
    return ExitStatus.OK
