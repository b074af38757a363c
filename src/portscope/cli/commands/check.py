"""``portscope check [ADDR:]PORT``: could a new socket bind it? If not: which rule, which socket."""

from __future__ import annotations

import argparse
import sys

from ...render import jsonfmt
from .. import common
from ..status import ExitStatus

EPILOG = """\
reason codes: in-use, wildcard-overlap, dual-stack-overlap, time-wait, bound-inactive,
  reuseaddr-vs-listener, reuseaddr-not-inherited, reuseaddr-mismatch, reuseport-mismatch,
  reuseport-other-user, privileged-port, address-not-available, zone-required, trial-failed
warning codes: ephemeral-range, reserved-port, options-unknown, rules-trial-disagree,
  owners-hidden
UNIX socket paths (check PATH): in-use, stale-file, not-a-socket, parent-missing, permission,
  path-too-long; --clean removes a stale socket file after proving it stale (asks on a
  terminal; --yes, --dry-run)
exit: 0 bindable (--clean: removed), 1 not bindable, 2 bad input, 5 --clean refused
"""


def register(sub) -> None:
    parser = sub.add_parser(
        "check", help="can ADDR:PORT be bound? which rule and socket block it",
        description="Answer whether a new socket with these options could bind (TCP: bind and "
                    "listen, as a server; UDP: bind) in this network namespace, by Linux's "
                    "rules, naming the rule and every blocking socket with its holders, then "
                    "confirm with a trial bind where that is safe. Without ADDR: every address "
                    "(the IPv6 wildcard, dual-stack unless --v6only or net.ipv6.bindv6only=1, "
                    "then 0.0.0.0 and [::] separately).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="[ADDR:]PORT|PATH",
                        help="8080, 127.0.0.1:8080, [::1]:8080, [fe80::1%%eth0]:8080, https; "
                             "a path: could a UNIX socket be bound there (decided by the "
                             "socket file's inode, never by connecting)")
    parser.add_argument("--clean", action="store_true",
                        help="PATH: remove the socket file if, and only if, it is proven stale")
    parser.add_argument("-y", "--yes", action="store_true", help="--clean: do not ask")
    parser.add_argument("--dry-run", action="store_true",
                        help="--clean: prove, remove nothing")
    parser.add_argument("-u", "--udp", action="store_true", help="a UDP socket (default TCP)")
    parser.add_argument("--reuseaddr", action="store_true", help="the new socket sets "
                        "SO_REUSEADDR")
    parser.add_argument("--reuseport", action="store_true", help="the new socket sets "
                        "SO_REUSEPORT")
    v6 = parser.add_mutually_exclusive_group()
    v6.add_argument("--v6only", dest="v6only", action="store_const", const=True,
                    help="an IPv6 wildcard sets IPV6_V6ONLY")
    v6.add_argument("--dual-stack", dest="v6only", action="store_const", const=False,
                    help="an IPv6 wildcard also covers IPv4 (IPV6_V6ONLY off)")
    parser.add_argument("--user", type=common.option_type(common.parse_user), metavar="USER",
                        help="evaluate as this user (name or uid): SO_REUSEPORT's uid rule, "
                             "privileged ports; the trial bind runs as USER only when the "
                             "caller is root")
    parser.add_argument("--no-trial", action="store_true", help="rules only, no trial bind")
    common.add_netns_option(parser, several=False)
    common.add_output_options(parser, csv=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import namespaces, services, unixsock
    if unixsock.is_unix_target(args.target) or args.clean:
        return run_unix(args)
    from ...bindcheck import check_bind
    from ...ports import parse_endpoint
    address, port = parse_endpoint(args.target, services.resolve_service)
    uid = args.user
    proto = "udp" if args.udp else "tcp"
    # in a thread inside that namespace: its dumps and trial binds are that namespace's
    diagnosis = namespaces.run_in_one(args.netns, lambda: check_bind(
        port, address, proto=proto, reuseaddr=args.reuseaddr, reuseport=args.reuseport,
        v6only=args.v6only, uid=uid, trial=not args.no_trial, scope=args.netns))
    from ...render import check as render
    if args.json:
        print(jsonfmt.dumps(render.diagnosis_json(diagnosis, address)))
    else:
        render.write_diagnosis(sys.stdout, diagnosis, header=not args.no_header)
    return ExitStatus.answer(diagnosis.bindable)


def run_unix(args: argparse.Namespace) -> int:
    """``check PATH`` and ``check --clean PATH``."""
    from ... import namespaces, unixsock
    from ...errors import InvalidInput
    from ...render import unix as render
    path = args.target
    if path.startswith("@") or not unixsock.is_unix_target(path):
        raise InvalidInput(f"check {'--clean ' if args.clean else ''}needs a socket file path "
                           f"(with a /), not {path!r}: abstract names have no file")
    if "\0" in path:
        raise InvalidInput("a UNIX socket path cannot hold a NUL byte")
    import os
    if os.path.isdir(path):
        raise InvalidInput(f"{path} is a directory, not a socket file")
    diagnosis = namespaces.run_in_one(args.netns, lambda: unixsock.check_path(path))
    removed = None
    message = None
    code = ExitStatus.answer(diagnosis.bindable)
    if args.clean:
        removed = False
        if not diagnosis.stale:
            message = "not removed: only a stale socket file is removed"
            code = ExitStatus.NO
        elif args.dry_run:
            message = "dry run: the file is stale; nothing removed"
            code = ExitStatus.OK
        elif not args.yes and not sys.stdin.isatty():
            message = "refusing without a terminal to ask on: pass --yes to proceed"
            code = ExitStatus.REFUSED
        elif not args.yes and not common.confirm(f"remove stale socket file {path}? "
                                                 "[y/N] "):
            message = "declined: nothing removed"
            code = ExitStatus.NO
        else:
            from ...errors import AccessDenied
            try:
                diagnosis = namespaces.run_in_one(args.netns,
                                                  lambda: unixsock.remove_stale(path))
            except PermissionError as exc:
                raise AccessDenied(f"cannot remove {path}: {exc.strerror}") from None
            removed = diagnosis.stale
            code = ExitStatus.answer(removed)
            message = None if removed else "not removed: the file changed and is not stale"
    if args.json:
        print(jsonfmt.dumps(render.diagnosis_json(diagnosis, removed)))
    else:
        render.write_diagnosis(sys.stdout, diagnosis)
        if removed:
            print(f"removed {render.cols.safe(path)}")
    if message:
        common.warn(message)
    return code

