"""``portscope services 443|https``: the IANA registry and /etc/services, both directions."""

from __future__ import annotations

import argparse
import sys

from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "services", help="look up a port or service name (IANA registry, /etc/services)",
        description="Every registry entry for a port number (all protocols) or a service "
                    "name, with its source, the port's class and this host's ranges.")
    parser.add_argument("query", metavar="PORT|NAME")
    common.add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services
    from ...ports import host_port_ranges
    from ...render import services as render
    entries = services.lookup(args.query)
    ranges = host_port_ranges()
    if args.json:
        from ...render import jsonfmt
        print(jsonfmt.dumps(render.services_json(args.query, services.REGISTRY_DATE, entries,
                                                 ranges)))
    else:
        render.write_services(sys.stdout, entries, ranges, fmt=common.output_format(args),
                              header=not args.no_header)
    if not entries:
        port = int(args.query) if args.query.isdigit() else None     # lookup took it
        common.warn(f"no registry entry for {args.query!r}"
                    + ("" if port is None else f": {render.port_facts(port, ranges)}"))
        return ExitStatus.NO
    return ExitStatus.OK
