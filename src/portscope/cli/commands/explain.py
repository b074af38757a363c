"""``portscope explain PORT|PID``: the process <-> socket <-> port relationship in plain words."""

from __future__ import annotations

import argparse
import sys

from ...render import jsonfmt
from .. import common
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "explain", help="explain a port or a process: its sockets, holders and connections",
        description="Explain, from a real snapshot, what uses a port (its listeners and their "
                    "scope, every holder and why several can hold one port, accepted "
                    "connections, clients, kernel-held TIME_WAIT) or every socket of a process. "
                    "A number is a port when a socket uses that port, else a PID when such a "
                    "process exists; --port and --pid decide. A path or @name explains a UNIX "
                    "socket: its listener and holders, the socket file's mode and owner and "
                    "who may therefore connect, and the connected clients. Exit 0 when "
                    "something was found, 1 when not.")
    parser.add_argument("target", metavar="PORT|ADDR:PORT|PID|PATH|@NAME",
                        help="8080, 127.0.0.1:8080, [::1]:8080, https, a PID, "
                             "/run/docker.sock or @name")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--port", dest="kind", action="store_const", const="port",
                      help="TARGET is a port")
    kind.add_argument("--pid", dest="kind", action="store_const", const="pid",
                      help="TARGET is a PID")
    parser.add_argument("-t", "--tcp", action="store_true", help="TCP sockets only")
    parser.add_argument("-u", "--udp", action="store_true", help="UDP sockets only")
    common.add_netns_option(parser, several=True)
    parser.add_argument("--json", action="store_true", help="JSON (schema_version 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services, unixsock
    if args.kind is None and unixsock.is_unix_target(args.target):
        return run_unix(args)
    from ...errors import InvalidInput
    from ...explain import explain_pid, explain_port
    from ...filters import SocketFilter
    from ...ports import parse_endpoint
    from ...owners.visibility import process_exists
    from ...snapshot import missing_owners_note, open_snapshot
    from ...types import OwnerUnknown, Proto
    protos = frozenset(p for p, on in ((Proto.TCP, args.tcp), (Proto.UDP, args.udp)) if on) \
        or frozenset({Proto.TCP, Proto.UDP})
    numeric = args.target.isascii() and args.target.isdigit() and len(args.target) <= 10
    if args.kind is None and numeric and int(args.target) > 65535:
        # no port is that high: a PID (pid_max may be up to 4194304), or neither
        if int(args.target) >= common.pid_max():
            raise InvalidInput(f"invalid port or PID {args.target!r}: neither a port "
                               f"(1-65535) nor a PID (1-{common.pid_max() - 1})")
        args.kind = "pid"
    if args.kind == "pid":
        pid = common.parse_pid(args.target)
        address = None
    else:
        address, pid = parse_endpoint(args.target, services.resolve_service)
    stream = open_snapshot(SocketFilter(protos=protos), **common.netns_scope(args))
    snapshot = stream.to_snapshot(list(stream))
    for message in stream.other_warnings:    # the missing owners: of the sockets explained only
        common.warn(message)
    proto = next(iter(protos)) if len(protos) == 1 else None
    explanation = None
    if args.kind != "pid":
        explanation = explain_port(snapshot, pid, address=address, proto=proto)
    if args.kind == "pid" or (args.kind is None and numeric and not explanation.found
                              and process_exists(pid)):
        explanation = explain_pid(snapshot, pid)
    hidden = sum(1 for section in explanation.sections for s in section.sockets
                 if s.owner_unknown is OwnerUnknown.PERMISSION)
    if hidden:
        common.warn(missing_owners_note(hidden, snapshot.unreadable, snapshot.backend))
    from ...render import explain as render
    if args.json:
        print(jsonfmt.dumps(render.explanation_json(explanation)))
    else:
        render.write_explanation(sys.stdout, explanation)
    return ExitStatus.answer(explanation.found)


def run_unix(args: argparse.Namespace) -> int:
    """``explain PATH|@NAME``."""
    from ... import unixsock
    from ...explain import explain_unix
    from ...render import explain as render
    target = unixsock.parse_target(args.target)
    snapshot, file = unixsock.lookup(target, **common.netns_scope(args))
    common.report_warnings(snapshot)
    explanation = explain_unix(snapshot, target, file,
                               unixsock.unbound_verdict(target, file, snapshot.sockets))
    if args.json:
        print(jsonfmt.dumps(render.explanation_json(explanation)))
    else:
        render.write_explanation(sys.stdout, explanation)
    return ExitStatus.answer(explanation.found)
