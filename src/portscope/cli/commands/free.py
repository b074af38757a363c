"""``portscope free``: pick port(s) that really bind now, outside the ephemeral range."""

from __future__ import annotations

import argparse
import sys

from ...ports import parse_port, parse_port_range
from ...render import listing
from .. import common
from ..status import ExitStatus

DESCRIPTION = """\
Print port(s) that bind now on IPv4 and IPv6 (or on --host), probed with real binds without
SO_REUSEADDR, held by no socket in any state (TIME_WAIT included), outside the ephemeral range
and reserved ports, preferring ports with no service name. One port per line.

The pick-then-use race: a printed port is free when portscope exits, not reserved; another
process may bind it first. A program that must not lose it should be handed a bound socket
(the library's portscope.freeport.bind_free_ports()) or retry on EADDRINUSE.

exit: 0 found --count ports, 1 fewer found, 2 bad input"""


def register(sub) -> None:
    parser = sub.add_parser(
        "free", help="pick free port(s) that really bind, outside the ephemeral range",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", default="1", metavar="N",
                        help="how many ports (default 1, at most 1000)")
    parser.add_argument("--range", dest="port_range", metavar="A-B",
                        help="search these ports (default 1024-65535)")
    parser.add_argument("--near", metavar="PORT", help="prefer ports closest to PORT")
    proto = parser.add_mutually_exclusive_group()
    proto.add_argument("-u", "--udp", action="store_true", help="UDP ports (default TCP)")
    proto.add_argument("--tcp-and-udp", action="store_true",
                       help="ports free for both TCP and UDP")
    parser.add_argument("--host", metavar="ADDR", help="probe this address only (default "
                        "0.0.0.0 and ::)")
    common.add_netns_option(parser, several=False)
    common.add_output_options(parser, csv=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import namespaces
    from ...errors import InvalidInput
    from ...freeport import MAX_COUNT, search_free_ports
    from ...ports import parse_address
    text = args.count
    if not (text.isascii() and text.isdigit() and len(text) <= 4
            and 1 <= int(text) <= MAX_COUNT):
        raise InvalidInput(f"invalid count {text!r}: expected a number 1-{MAX_COUNT}")
    count = int(text)
    port_range = parse_port_range(args.port_range) if args.port_range else None
    near = parse_port(args.near) if args.near else None
    host = parse_address(args.host) if args.host else None
    protos = ("tcp", "udp") if args.tcp_and_udp else ("udp",) if args.udp else ("tcp",)
    search = namespaces.run_in_one(args.netns, lambda: search_free_ports(
        count, port_range=port_range, near=near, protos=protos, host=host))
    for bound in search.ports:
        bound.close()
    ports = [bound.port for bound in search.ports]
    listing.write_ports(sys.stdout, ports, fmt=common.output_format(args))
    if len(ports) < count:
        common.warn(shortfall(search, count))
        return ExitStatus.NO
    return ExitStatus.OK


def shortfall(search, count: int) -> str:
    """Why fewer than ``count`` ports were found, from a ``freeport.PortSearch``: which
    ports of the range the ephemeral range, reserved ports, sockets and trial binds took."""
    low, high = search.port_range
    where = f"{low}" if low == high else f"{low}-{high}"
    total = high - low + 1
    eph_low, eph_high = search.ranges.ephemeral
    parts = []
    for n, what in (
            (search.ephemeral, f"lie in this host's ephemeral range {eph_low}-{eph_high} "
                               "(net.ipv4.ip_local_port_range: outgoing connections take "
                               "them, free never picks them)"),
            (search.reserved, "are reserved (net.ipv4.ip_local_reserved_ports)"),
            (search.in_use, "are held by a socket (portscope list -a --port "
                            f"{where} shows them)"),
            (search.bind_failed, "failed a trial bind (in use by a socket no dump shows, "
                                 "or privileged)")):
        if n:
            parts.append(f"{'all' if n == total else n} {what}")
    why = "; ".join(parts) if parts else f"the range has only {total} port(s)"
    return (f"only {len(search.ports)} of {count} port(s) free in {where} "
            f"({total} port(s)): {why}")
