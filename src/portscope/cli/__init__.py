"""The command line: ``main(argv) -> exit code``, the code an ``ExitStatus`` (``status.py``);
``main`` maps the library's errors to it, in one place."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import sys
from typing import NoReturn

from .. import __version__
from ..errors import (AccessDenied, BackendError, BaselineError, HistoryError, InvalidInput,
                      KillRefused, PortscopeError, ProcessGone)
from . import streams
from .status import ExitStatus


#: subcommand modules in cli/commands/, in help order; each has register(subparsers).
COMMANDS = ("listeners", "who", "list", "explain", "check", "free", "kill", "services", "audit",
            "watch", "record", "history", "serve", "tui", "completion")
DEFAULT_COMMAND = "listeners"
_NEGATIVE_NUMBER = re.compile(r"-[0-9]")

DESCRIPTION = """\
Which processes use which ports.

  portscope               listeners (TCP and UDP, IPv4 and IPv6) with every owning process
  portscope PORT          who is on a port: PORT, ADDR:PORT, [IPV6]:PORT or a service name
  portscope list [...]    any sockets, filtered as ss filters them
  portscope explain X     a port or a PID in plain words: process, socket, port, connections
  portscope check PORT    can it be bound? if not: which rule, which socket, which process
  portscope free          pick free ports that really bind, outside the ephemeral range
  portscope kill PORT     stop every holder safely, then prove the port is free
  portscope services Q    the IANA registry and /etc/services, by port or by name
  portscope audit         listeners judged against rules and a baseline
  portscope watch         live changes: opened, closed, owners-changed, state-changed
  portscope record        record the changes into a history database (SQLite)
  portscope history PORT  who held a port when (--since, --until, --at TIME)
  portscope serve         Prometheus metrics, alerting rules and a Grafana dashboard
  portscope tui           a live TCPView-like terminal UI (pip install 'portscope[tui]')
  portscope completion S  shell completions for bash, zsh or fish (printed or --install)

exit codes: 0 yes/success, 1 no (e.g. nothing on that port), 2 usage error, 3 runtime error,
4 access denied, 5 refused by a safety rule, 130 interrupted
"""


class Parser(argparse.ArgumentParser):
    """argparse, with every parse error one line on stderr, escaped (``render.escape.safe``:
    argparse quotes unrecognized arguments as they are), and exit 2. An option value is
    rejected in the user's words (what was wrong, what is valid) by its ``type=``, a parser
    wrapped in ``common.option_type``."""

    def error(self, message: str):
        from ..render.escape import safe
        self.exit(ExitStatus.USAGE,
                  f"{self.prog}: error: {safe(message)} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: with every subcommand registered, or with ``only`` that one
    (importing a command module and declaring its options costs a few ms each)."""
    parser = Parser(
        prog="portscope", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"portscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only in COMMANDS else COMMANDS:
        importlib.import_module(f".commands.{name}", __name__).register(sub)
    return parser


def _route(argv: list[str]) -> list[str]:
    """Insert the implied subcommand: ``who`` when the arguments hold a target (a port,
    endpoint, service name or path: ``portscope 8080``, ``portscope --netns NS 8080``,
    ``portscope -- 8080``), else ``listeners``."""
    if not argv:
        return [DEFAULT_COMMAND]
    first = argv[0]
    if first in ("-h", "--help", "-V", "--version") or first in COMMANDS:
        return argv
    if "--" in argv[:-1] or not first.startswith("-"):
        return ["who", *argv]
    target = _implied_target(argv)
    if target is None:
        return [DEFAULT_COMMAND, *argv]
    if _NEGATIVE_NUMBER.match(target):             # a negative port: let the parser reject it
        at = len(argv) - 1 - argv[::-1].index(target)
        return ["who", *argv[:at], *argv[at + 1:], "--", target]
    return ["who", *argv]


def _implied_target(argv: list[str]) -> str | None:
    """The target among ``argv`` (options first): the first argument that the options
    ``listeners`` and ``who`` share (``common.add_listing_options``) do not take, so that an
    option's value (``--netns NS``) is never taken for it; a negative number is one too
    (``-4`` and ``-6`` are options). None: options only. Arguments those options reject
    (``--backend nope``) are left to the command's parser to report; only a leading
    negative number is then taken for the target (``-45`` is no ``-4 5``)."""
    from . import common
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    common.add_listing_options(parser)
    parser.add_argument("-h", "--help", action="store_true")    # -h 8080: who's help
    try:
        rest = parser.parse_known_args(argv)[1]
    except argparse.ArgumentError:
        rest = argv[:1]
    return next((arg for arg in rest
                 if not arg.startswith("-") or _NEGATIVE_NUMBER.match(arg)), None)


#: commands that run until stopped: they keep the cycle collector
_LONG_RUNNING = frozenset({"serve", "record", "watch", "tui"})


def _prefetch(argv: list[str]) -> None:
    """Start, on other CPUs, what the command will wait for while the parser and the
    command's modules load (about 40 ms), when ``argv`` (as the user gave it, before
    ``_route``) runs a listing: the unix_diag dump of the caller's network namespace, when
    it asks for UNIX sockets with ``-x`` (``backends._netlink_ahead``: a forked child,
    started first, while this process has no other thread; not for a UNIX path or
    ``@name``, whose lookup decodes a few sockets: there the child's dump beside the walk
    cost more than it spared, 176 against 164 ms at 50,000 sockets); the BPF fd scan
    (``owners.bpf.prefetch``), unless it asks for no owners."""
    if argv and argv[0] in COMMANDS and argv[0] not in ("listeners", "who", "list"):
        return
    owners = True
    for arg in argv:
        if arg.startswith("--backend") or arg in ("--help", "--version", "--"):
            return
        if arg[:1] == "-" and arg[1:2] != "-":
            if "h" in arg or "V" in arg:
                return                          # -h or -V, alone or combined
            owners &= "n" not in arg            # -n (no owners)
    owners &= "--no-owners" not in argv
    if _protos_asked(argv)[0] and sys.platform.startswith("linux"):
        from ..backends import _netlink_ahead
        _netlink_ahead.prefetch_unix()
    if owners:
        from ..owners import bpf
        if bpf.usable():
            bpf.prefetch(_port_asked(argv), not _unix_only(argv))


def _protos_asked(argv: list[str]) -> tuple[bool, bool]:
    """Whether ``argv`` (as the user gave it) has ``-x`` (alone or combined: ``-xa``), and
    whether ``-t`` or ``-u``."""
    unix = inet = False
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--"):
            unix |= arg == "--unix"
            inet |= arg in ("--tcp", "--udp")
        elif arg.startswith("-"):
            unix |= "x" in arg
            inet |= "t" in arg or "u" in arg
    return unix, inet


def _unix_only(argv: list[str]) -> bool:
    """True when ``argv`` (as the user gave it) asks for UNIX sockets alone: ``-x`` without
    ``-t`` or ``-u`` (alone or combined: ``-xa``), or a UNIX path or ``@name`` target; the
    walk then reads descriptors only. A guess only, ``take_prefetched`` checks it."""
    unix, inet = _protos_asked(argv)
    if unix:
        return not inet
    argv = _route(argv)
    from .. import unixsock
    return argv[0] == "who" and len(argv) > 1 and unixsock.is_unix_target(argv[1])


def _port_asked(argv: list[str]) -> int | None:
    """The port that ``argv`` (as the user gave it) looks up with ``who``, when its target
    comes first (``portscope 8080 ...``, ``portscope who https --json``): the BPF scan then
    reads that port's sockets only (``bpf.IterScan``). None otherwise, or for a UNIX path or
    a target the command will reject: a guess only, ``take_prefetched`` checks it."""
    argv = _route(argv)
    if argv[0] != "who" or len(argv) < 2:
        return None
    target = argv[1]
    if target.isascii() and target.isdigit():       # the usual case, without an import
        return int(target) if len(target) <= 5 and 1 <= int(target) <= 65535 else None
    from .. import ports, services, unixsock
    if target.startswith("-") or unixsock.is_unix_target(target):
        return None
    try:
        return ports.parse_endpoint(target, services.resolve_service)[1]
    except Exception:  # noqa: BLE001 - the command says what is wrong with it
        return None


def _say(what: str, exc: BaseException) -> None:
    """One line on stderr: ``portscope: WHAT: message``, the message escaped
    (``render.escape.safe``: it may quote a process name, a path or the user's input)."""
    from ..render.escape import safe
    print(f"portscope: {what}: {safe(str(exc))}", file=sys.stderr)


def run() -> NoReturn:
    """The ``portscope`` command (console script, ``python -m portscope``): ``main()`` on
    ``sys.argv``, its output flushed, then the process ends at once (``os._exit``) with
    main's exit code. The interpreter's teardown would free every object a command kept
    (``common.keep``: a large snapshot) one at a time, for nothing: about 25 ms at 50,000
    sockets. Nothing portscope runs needs an exit handler."""
    from . import common
    common.end_at_once()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:      # None: started with the descriptor closed
                stream.flush()
        except (OSError, ValueError):   # a reader gone, a closed stream: nothing to lose
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run portscope with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    The exit code is the answer's whatever happens to stdout: a reader that leaves early
    (``portscope kill 8080 --yes | head -1``) or a closed descriptor changes nothing
    (``streams.guarded``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    collecting = gc.isenabled()
    try:
        with streams.guarded():
            return _run(argv)
    finally:
        ahead = sys.modules.get("portscope.backends._netlink_ahead")
        if ahead is not None:       # a UNIX dump started by _prefetch that was not taken
            ahead.drop()
        if collecting:              # _run turns it off for a one-shot command
            gc.enable()


def _run(argv: list[str]) -> int:
    """Parse ``argv``, run the command, map its errors to exit codes."""
    try:
        _prefetch(argv)
        argv = _route(argv)
        if argv[0] not in _LONG_RUNNING:
            # one answer, then exit: the cycle collector would only re-walk the snapshot's
            # objects, which hold no cycles (measured 25 ms at 50,000 UNIX sockets)
            gc.disable()
        args = build_parser(argv[0]).parse_args(argv)
        return args.run(args)
    except InvalidInput as exc:
        _say("error", exc)
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except AccessDenied as exc:
        _say("access denied", exc)
        return ExitStatus.ACCESS
    except (KillRefused, ProcessGone) as exc:
        _say("refused", exc)
        return ExitStatus.REFUSED
    except (BackendError, BaselineError, HistoryError, PortscopeError) as exc:
        _say("error", exc)
        return ExitStatus.RUNTIME
    except Exception as exc:  # noqa: BLE001 - the one catch-all: a bug, said in one line
        _say(f"internal error: {type(exc).__name__}", exc)
        return ExitStatus.RUNTIME
