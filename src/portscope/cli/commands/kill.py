"""``portscope kill PORT|ADDR:PORT``: stop every holder of a port safely, then prove it is free."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable

from ...render import jsonfmt
from .. import common
from ..status import ExitStatus

DESCRIPTION = """\
Stop every process holding a socket whose LOCAL port matches (listeners and bound sockets; with
-a also connected ones; never clients whose remote port matches), then prove the port is free.

First the plan is printed. On a terminal portscope asks; without a terminal it refuses unless
--yes. Each holder is signalled through a pidfd opened at scan time, after re-checking that it
is the same process (pid + start time) and still holds the socket. Survivors after --timeout
are reported; SIGKILL only with --force. PID 1, kernel threads, portscope and its ancestors
are never signalled. A holder that a supervisor would restart (systemd Restart=, a container,
docker-proxy, supervisord, pm2) is not signalled without --force: the command that stops it
for good is printed instead. Sockets the kernel keeps after the processes exit (TIME_WAIT,
FIN_WAIT2, up to 60 s) are reported, never counted as freed. Holders hidden from this user,
or a network namespace that cannot be entered (--netns NAME, or any namespace a socket file
is looked for in), are access denied: nothing is signalled.

exit: 0 the port is free, 1 still held (or declined), 2 bad input, 4 access denied,
5 refused (safety rule, supervisor, no terminal without --yes)"""

_TIMEOUT_RE = re.compile(r"[0-9]{1,4}(\.[0-9]{1,3})?")


def register(sub) -> None:
    parser = sub.add_parser("kill", help="stop every holder of a port, then prove it is free",
                            description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="PORT|ADDR:PORT|PATH|@NAME",
                        help="e.g. 8080, 127.0.0.1:8080, [::1]:8080, http-alt; a UNIX socket "
                             "file (by its inode) or @abstract name: the holders of its "
                             "listener")
    parser.add_argument("-t", "--tcp", action="store_true", help="TCP sockets only")
    parser.add_argument("-u", "--udp", action="store_true", help="UDP sockets only")
    parser.add_argument("-a", "--all", action="store_true",
                        help="also holders of connected TCP sockets on the local port")
    parser.add_argument("--signal", default="TERM", metavar="SIG",
                        help="TERM (default), INT, HUP, QUIT or KILL")
    parser.add_argument("--timeout", default="5", metavar="S",
                        help="seconds to wait for holders to exit (default 5)")
    parser.add_argument("--force", action="store_true",
                        help="SIGKILL survivors after the timeout; signal supervised holders")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, signal nothing")
    common.add_netns_option(parser, several=False)
    parser.add_argument("--json", action="store_true", help="JSON (schema_version 1)")
    parser.set_defaults(run=run)


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``term`` ... from ``kill.SIGNALS``; numbers are refused."""
    from ...errors import InvalidInput
    from ...kill import SIGNALS
    name = text.upper().removeprefix("SIG") if text.isascii() else ""
    if name not in SIGNALS:
        raise InvalidInput(f"invalid signal {text!r}: use one of {', '.join(SIGNALS)}")
    return SIGNALS[name]


def parse_timeout(text: str) -> float:
    """Seconds: a plain decimal number, more than 0 and at most 3600."""
    from ...errors import InvalidInput
    if not _TIMEOUT_RE.fullmatch(text) or not 0 < float(text) <= 3600:
        raise InvalidInput(f"invalid timeout {text!r}: expected seconds, 0 < S <= 3600")
    return float(text)


def run(args: argparse.Namespace) -> int:
    from ... import services, unixsock
    if unixsock.is_unix_target(args.target):
        return run_unix(args)
    from ...kill import plan_kill, plan_protos, terminate, verify_port
    from ...ports import parse_endpoint
    from ...render import kill as render
    address, port = parse_endpoint(args.target, services.resolve_service)
    sig = parse_signal(args.signal)
    timeout_s = parse_timeout(args.timeout)
    protos = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or ["tcp", "udp"]
    signal_name = signal.Signals(sig).name
    with plan_kill(port, address, protos=protos, include_connected=args.all,
                   netns=args.netns) as plan:
        finish = _finisher(args, port, address, signal_name, plan)
        ended = _authorise(args, plan, signal_name, finish)
        if ended is not None:
            return ended
        outcomes = terminate(plan, sig=sig, timeout_s=timeout_s, force=args.force)
        check = verify_port(port, address, plan_protos(plan), args.netns)
    if not args.json:
        render.write_outcomes(sys.stdout, outcomes)
        render.write_check(sys.stdout, port, check)
    return finish(ExitStatus.answer(check.freed), None, outcomes=outcomes, check=check)


def run_unix(args: argparse.Namespace) -> int:
    """``kill PATH|@NAME``: as ``kill PORT``, for the holders of a UNIX listener; then proves
    that no socket is bound to it any more (its file stays: ``check --clean`` removes it)."""
    from ... import unixsock
    from ...kill import plan_kill_unix, terminate, verify_unix
    from ...render import kill as render
    target = unixsock.parse_target(args.target)
    sig = parse_signal(args.signal)
    timeout_s = parse_timeout(args.timeout)
    signal_name = signal.Signals(sig).name
    with plan_kill_unix(target, include_connected=args.all, netns=args.netns) as plan:
        finish = _finisher(args, 0, target, signal_name, plan)
        ended = _authorise(args, plan, signal_name, finish,
                           nothing=f"no process holds a UNIX socket on {target}")
        if ended is not None:
            return ended
        outcomes = terminate(plan, sig=sig, timeout_s=timeout_s, force=args.force)
    still = verify_unix(target, include_connected=args.all, netns=args.netns)
    if not args.json:
        render.write_outcomes(sys.stdout, outcomes)
        render.write_unix_check(sys.stdout, target, still)
    return finish(ExitStatus.answer(not still), None, outcomes=outcomes, still_held=still)


def _finisher(args: argparse.Namespace, port: int, address: str | None, signal_name: str,
              plan) -> Callable[..., ExitStatus]:
    """``finish(code, message, refused=False, **done)``: write the JSON document (``done``:
    ``kill_json``'s ``outcomes``, ``check``, ``still_held``) or the message on stderr, and
    return ``code``. The plan's JSON is taken now, while its holders are known."""
    from ...render import kill as render
    plan_doc = render.plan_json(plan)

    def finish(code: ExitStatus, message: str | None, refused: bool = False,
               **done) -> ExitStatus:
        if args.json:
            print(jsonfmt.dumps(render.kill_json(port, address, signal_name, args.dry_run,
                                              plan_doc, message=message, refused=refused,
                                              **done)))
        elif message:
            common.warn(("refused: " if refused else "") + message)
        return code

    return finish


def _authorise(args: argparse.Namespace, plan, signal_name: str,
               finish: Callable[..., ExitStatus], nothing: str | None = None
               ) -> ExitStatus | None:
    """Print the plan, then refuse it, stop at a dry run, or ask on the terminal: the exit
    status when the kill ends here, None when its holders may be signalled. ``nothing``: the
    message (exit 1) when no live and no hidden holder is planned."""
    from ...errors import KillRefused
    from ...kill import refuse
    from ...render import kill as render
    if not args.json:
        render.write_plan(sys.stdout, plan, signal_name)
    try:
        refuse(plan, force=args.force)     # AccessDenied goes on to main: exit 4
    except KillRefused as exc:
        return finish(ExitStatus.REFUSED, str(exc), refused=True)
    live = [t for t in plan.targets if not t.gone]
    if args.dry_run:
        return finish(ExitStatus.answer(bool(live)),
                      "dry run: nothing signalled" if live else "dry run: no process "
                      "to signal")
    if nothing and not live and not plan.hidden:
        return finish(ExitStatus.NO, nothing)
    if live and not args.yes:
        if not sys.stdin.isatty():
            return finish(ExitStatus.REFUSED, "refusing without a terminal to ask on: "
                          "pass --yes to proceed", refused=True)
        if not common.confirm(f"send {signal_name} to {len(live)} process(es)? [y/N] "):
            return finish(ExitStatus.NO, "declined: nothing signalled")
    return None

