"""``portscope explain PORT|PID``: the process <-> socket <-> port relationship in plain words."""

from __future__ import annotations

import argparse
import json
import os
import sys

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
    parser.add_argument("--json", action="store_true", help="JSON (schema_version 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services, unixsock
    if args.kind is None and unixsock.is_unix_target(args.target):
        return run_unix(args)
    from ...explain import explain_pid, explain_port
    from ...filters import SocketFilter
    from ...ports import parse_endpoint
    from ...snapshot import take_snapshot
    from ...types import Proto
    protos = frozenset(p for p, on in ((Proto.TCP, args.tcp), (Proto.UDP, args.udp)) if on) \
        or frozenset({Proto.TCP, Proto.UDP})
    if args.kind == "pid":
        pid = common.parse_pid(args.target)
        address = None
    else:
        address, pid = parse_endpoint(args.target, services.resolve_service)
    snapshot = take_snapshot(SocketFilter(protos=protos))
    common.report_warnings(snapshot)
    proto = next(iter(protos)) if len(protos) == 1 else None
    explanation = None
    if args.kind != "pid":
        explanation = explain_port(snapshot, pid, address=address, proto=proto)
    numeric = args.target.isascii() and args.target.isdigit()
    if args.kind == "pid" or (args.kind is None and numeric and not explanation.found
                              and os.path.exists(f"/proc/{pid}")):
        explanation = explain_pid(snapshot, pid)
    from ...render import explain as render
    if args.json:
        print(json.dumps(render.explanation_json(explanation), indent=2))
    else:
        render.write_explanation(sys.stdout, explanation)
    return ExitStatus.answer(explanation.found)


def run_unix(args: argparse.Namespace) -> int:
    """``explain PATH|@NAME``."""
    from ... import namespaces, unixsock
    from ...explain import explain_unix
    from ...render import explain as render
    target = unixsock.parse_target(args.target)
    snapshot, file = unixsock.lookup(target,
                                     netns="all" if namespaces.may_enter() else "host")
    common.report_warnings(snapshot)
    explanation = explain_unix(snapshot, target, file)
    if args.json:
        print(json.dumps(render.explanation_json(explanation), indent=2))
    else:
        render.write_explanation(sys.stdout, explanation)
    return ExitStatus.answer(explanation.found)
