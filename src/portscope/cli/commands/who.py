"""``portscope PORT`` (``portscope who``): every socket on a local port and every holder."""

from __future__ import annotations

import argparse
import sys

from ...filters import SocketFilter
from ...ports import parse_endpoint, port_class
from ...render import columns as cols
from ...render import listing
from ...snapshot import accepted_connections, at_address, take_snapshot
from ...types import LISTENER_STATES, State
from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "who", help="who is on a port (also: portscope PORT)",
        description="Every socket whose LOCAL port matches (never the remote port), every "
                    "process holding it, and for each listener the connections accepted from "
                    "it. A port a container runtime publishes names its container, where it "
                    "forwards to and who serves it there (PUBLISHED when only NAT rules "
                    "forward it). Exit 0 when any socket is on the port (kernel-held "
                    "TIME_WAIT included) or a container publishes it, 1 when none is. "
                    "A path or @name means a UNIX socket: the sockets bound to that socket "
                    "file (matched by its inode, so a renamed file still finds them) or "
                    "abstract name, their holders and every connected client process.")
    parser.add_argument("target", metavar="PORT|ADDR:PORT|[IPV6]:PORT|SERVICE|PATH|@NAME",
                        help="e.g. 8080, 127.0.0.1:8080, [::1]:8080, https, "
                             "/run/docker.sock, @name")
    common.add_listing_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services, unixsock
    if unixsock.is_unix_target(args.target):
        return run_unix(args)
    address, port = parse_endpoint(args.target, services.resolve_service)
    protos, families = common.protos_families(args)
    # the whole port: a listener's accepted connections are counted whatever their address
    snapshot = take_snapshot(SocketFilter(protos=protos, families=families,
                                          port_range=(port, port)),
                             backend=args.backend, owners=not args.no_owners,
                             **common.netns_scope(args), published=True)
    counts = {id(snapshot.sockets[i]): len(conns)
              for i, conns in accepted_connections(snapshot.sockets).items()}
    # listeners (and published ports) first, then the rest in kernel order
    sockets = sorted(at_address(snapshot.sockets, address),
                     key=lambda s: s.state not in LISTENER_STATES
                     and s.state is not State.PUBLISHED)
    accepted = {i: counts[id(s)] for i, s in enumerate(sockets) if id(s) in counts}
    name = services.service_name(port, "tcp") or services.service_name(port, "udp")
    where = f"{address}:{port}" if address else f"port {port}"
    listing.write_port_view(sys.stdout, snapshot, sockets, accepted, address=address,
                            port=port, service=name, port_class=port_class(port),
                            fmt=common.output_format(args), header=not args.no_header,
                            owners=not args.no_owners)
    common.report_warnings(snapshot)
    if not sockets:
        spaces = len(snapshot.namespaces)
        common.warn(f"no socket on local {where} " + (
            f"in any of the {spaces} network namespaces looked at" if spaces > 1
            else "in this network namespace"))
        return ExitStatus.NO
    return ExitStatus.OK



def run_unix(args: argparse.Namespace) -> int:
    """``portscope PATH|@NAME``: the sockets bound to a socket file or abstract name, their
    holders and the processes connected to them."""
    from ... import unixsock
    from ...render import unix as render
    target = unixsock.parse_target(args.target)
    snapshot, file = unixsock.lookup(target, backend=args.backend, owners=not args.no_owners,
                                     **common.netns_scope(args))
    sockets = snapshot.sockets
    where = cols.safe(target)
    if args.json:
        fields = {"query": {"unix": target, "file": render.file_json(file)}}
        listing.write_listing(sys.stdout, snapshot, sockets, (), fmt="json", fields=fields)
    elif sockets:
        if sys.stdout.isatty() and not args.no_header:
            print(f"{where} ({render.file_sentence(file)}): {len(sockets)} socket(s)")
        columns = cols.UNIX_LIST_COLUMNS if not args.no_owners else cols.NO_OWNER_COLUMNS
        listing.write_listing(sys.stdout, snapshot, sockets, columns,
                              fmt=common.output_format(args), header=not args.no_header)
        if sys.stdout.isatty() and not args.no_owners:
            print(f"connected processes: {render.peer_owners_text(sockets)}")
    common.report_warnings(snapshot)
    if not sockets:
        verdict = unixsock.unbound_verdict(target, file, sockets)
        if verdict is not None and not verdict.stale:
            common.warn(f"{where}: a socket file not proven stale: "
                        + "; ".join(text for _code, text in verdict.reasons))
        elif verdict is not None:
            common.warn(f"no socket is bound to {where}: a stale socket file "
                        f"(portscope check --clean {where} removes it)")
        elif file is not None and file.error is None:
            common.warn(f"{where} is not a socket file")
        else:
            common.warn(f"no UNIX socket on {where} in this network namespace")
        return ExitStatus.NO
    if file is not None and not file.is_socket:
        common.warn(f"{where}: {render.file_sentence(file)}; these sockets were bound with that "
                    "name and their file was removed or replaced")
    return ExitStatus.OK
