"""``portscope kill PORT|ADDR:PORT``: stop every holder of a port safely, then prove it is free."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys

from ...render import columns as cols
from .. import EXIT_NO, EXIT_OK, EXIT_REFUSED, common

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
FIN_WAIT2, up to 60 s) are reported, never counted as freed.

exit: 0 the port is free, 1 still held (or declined), 2 bad input, 4 access denied,
5 refused (safety rule, supervisor, no terminal without --yes)"""

COMMAND_WIDTH = 60
_TIMEOUT_RE = re.compile(r"[0-9]{1,4}(\.[0-9]{1,3})?")


def register(sub) -> None:
    parser = sub.add_parser("kill", help="stop every holder of a port, then prove it is free",
                            description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="PORT|ADDR:PORT",
                        help="e.g. 8080, 127.0.0.1:8080, [::1]:8080, http-alt")
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
    from ... import services
    from ...errors import KillRefused
    from ...kill import plan_kill, plan_protos, refuse, terminate, verify_port
    from ...ports import parse_endpoint
    address, port = parse_endpoint(args.target, services.resolve_service)
    sig = parse_signal(args.signal)
    timeout_s = parse_timeout(args.timeout)
    protos = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or ["tcp", "udp"]
    doc: dict = {"schema_version": 1, "port": port, "address": address,
                 "signal": signal.Signals(sig).name, "dry_run": args.dry_run}
    with plan_kill(port, address, protos=protos, include_connected=args.all) as plan:
        doc["plan"] = _plan_json(plan)
        if not args.json:
            _write_plan(plan, sig)
        try:
            refuse(plan, force=args.force)     # AccessDenied goes on to main: exit 4
        except KillRefused as exc:
            return _finish(args, doc, EXIT_REFUSED, str(exc), refused=True)
        live = [t for t in plan.targets if not t.gone]
        if args.dry_run:
            return _finish(args, doc, EXIT_OK if live else EXIT_NO,
                           "dry run: nothing signalled" if live else "dry run: no process "
                           "to signal")
        if live and not args.yes:
            if not sys.stdin.isatty():
                return _finish(args, doc, EXIT_REFUSED, "refusing without a terminal to ask "
                               "on: pass --yes to proceed", refused=True)
            if not _confirm(f"send {signal.Signals(sig).name} to {len(live)} process(es)? "
                            "[y/N] "):
                return _finish(args, doc, EXIT_NO, "declined: nothing signalled")
        outcomes = terminate(plan, sig=sig, timeout_s=timeout_s, force=args.force)
        check = verify_port(port, address, plan_protos(plan))
    doc["outcomes"] = [_json(o) for o in outcomes]
    doc.update(_check_json(check, address))
    if not args.json:
        for outcome in outcomes:
            signals = ", ".join(outcome.signals) or "no signal"
            detail = f": {outcome.detail}" if outcome.detail else ""
            print(cols.safe(f"pid {outcome.pid} ({outcome.name}): {outcome.result} "
                            f"[{signals}]{detail}"))
        _write_check(port, check)
    return _finish(args, doc, EXIT_OK if check.freed else EXIT_NO, None)


def _confirm(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _finish(args, doc: dict, code: int, message: str | None, refused: bool = False) -> int:
    if message:
        doc["message"] = message
    doc["refused"] = refused
    if args.json:
        print(json.dumps(doc, indent=2))
    elif message:
        common.warn(("refused: " if refused else "") + cols.safe(message))
    return code


def _json(value):
    from ...render import jsonfmt
    return jsonfmt.jsonable(value)


def _socket_list(sockets) -> list:
    from ...render import jsonfmt
    processes: dict = {}
    addresses: dict = {}
    return [json.loads(jsonfmt.socket_json(s, processes, addresses)) for s in sockets]


def _plan_json(plan) -> dict:
    return {
        "targets": [{"pid": t.pid, "process": _json(t.process), "start_ticks": t.start_ticks,
                     "sockets": _socket_list(t.sockets), "refusal": t.refusal,
                     "respawner": _json(t.respawner), "gone": t.gone} for t in plan.targets],
        "hidden": _socket_list(plan.hidden),
        "kernel_held": _socket_list(plan.kernel_held),
        "unplanned": _socket_list(plan.unplanned),
    }


def _check_json(check, address) -> dict:
    from .check import diagnosis_json
    return {"freed": check.freed, "kernel_held": _socket_list(check.kernel_held),
            "still_held": _socket_list(check.still_held),
            "reuseaddr_bindable": check.reuseaddr_bindable,
            "checks": [diagnosis_json(c, address) for c in check.checks]}


def _write_plan(plan, sig: int) -> None:
    from ...render import text
    where = f"{plan.address}:{plan.port}" if plan.address else f"port {plan.port}"
    live = [t for t in plan.targets if not t.gone]
    if live:
        print(f"{where}: {len(plan.sockets)} socket(s) held by {len(live)} process(es); "
              f"plan: {signal.Signals(sig).name} each")
    else:
        print(f"{where}: no process to signal")
    if plan.targets:
        headers = ["PID", "User", "Started", "Process", "Sockets", "Note", "Command"]
        rows = []
        for t in plan.targets:
            started = t.process.started_at.strftime("%Y-%m-%d %H:%M:%S") \
                if t.process.started_at else "?"
            socks = ", ".join(f"{s.proto.value} {s.state.value} {cols.endpoint_text(*s.local)}"
                              for s in t.sockets)
            note = t.refusal or t.gone or (t.respawner.detail if t.respawner else "")
            command = cols.safe(" ".join(t.process.cmdline or ()))
            if len(command) > COMMAND_WIDTH:
                command = command[:COMMAND_WIDTH - 3] + "..."
            rows.append([str(t.pid), t.process.user or "?", started,
                         cols.safe(t.process.name or "?"), socks, note, command])
        text.write_rows(sys.stdout, headers, rows, ["right"] + ["left"] * 6)
    for sock in plan.kernel_held:
        print(f"kernel-held, no process to signal: {sock.proto.value} {sock.state.value} "
              f"{cols.endpoint_text(*sock.local)} (gone within 60 s)")
    for sock in plan.unplanned:
        print(f"not planned (connected; -a plans it): {sock.proto.value} {sock.state.value} "
              f"{cols.endpoint_text(*sock.local)} held by {cols.owner_pids(sock)}")
    sys.stdout.flush()


def _write_check(port: int, check) -> None:
    for diagnosis in check.checks:
        binds = " and ".join(diagnosis.binds)
        if diagnosis.bindable:
            print(f"{diagnosis.proto.value} port {port} is free: {binds} binds")
    if check.freed:
        return
    if check.still_held:
        print(f"port {port} is still held by {len(check.still_held)} socket(s):")
        for sock in check.still_held:
            print(cols.safe(f"  {sock.proto.value} {sock.state.value} "
                            f"{cols.endpoint_text(*sock.local)} pid {cols.owner_pids(sock)} "
                            f"({cols.owner_names(sock)})"))
    if check.kernel_held:
        states = ", ".join(sorted({s.state.value for s in check.kernel_held}))
        print(f"port {port} is NOT free yet: no process holds it, but the kernel still holds "
              f"{len(check.kernel_held)} closed connection(s) ({states}) for up to 60 s")
        if check.reuseaddr_bindable:
            print("  a server that sets SO_REUSEADDR can bind it now (its predecessor had it)")
        elif check.reuseaddr_bindable is False:
            print("  SO_REUSEADDR does not help: the old listener did not set it")
