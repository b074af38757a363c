"""Option groups shared by the subcommands, declared once; argument parsers; diagnostics on
stderr. Output is written by ``render/``."""

from __future__ import annotations

import argparse
import functools
import pwd
import sys
from collections.abc import Callable
from typing import TypeVar

from .. import backends
from ..errors import InvalidInput
from ..filters import ALL_FAMILIES, ALL_PROTOS
from ..ports import shown
from ..render.escape import safe
from ..types import Family, Proto, Snapshot, State

TYPE_CHECKING = False
if TYPE_CHECKING:               # not at run time: commands without sockets skip snapshot
    from ..snapshot import SnapshotStream
T = TypeVar("T")


def option_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` (text -> value, raising ``InvalidInput``) as an argparse ``type=``: its
    ``InvalidInput`` becomes ``argparse.ArgumentTypeError``, whose message argparse reports as
    it is, after the option's name (``argument --state: unknown state 'x': use ...``), where
    a ``ValueError`` would read "invalid parse_state value"."""
    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def add_output_options(parser: argparse.ArgumentParser, *, csv: bool = True) -> None:
    """``--json``, ``--csv`` (listings) and ``-H/--no-header``."""
    group = parser.add_argument_group("output")
    fmt = group.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON (schema_version 1)")
    if csv:
        fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    group.add_argument("-H", "--no-header", action="store_true",
                       help="omit the header line")


def add_socket_options(parser: argparse.ArgumentParser) -> None:
    """``-t -u -x -4 -6`` and ``--backend`` (the letters mean what they mean to ss)."""
    group = parser.add_argument_group("sockets")
    group.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    group.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    group.add_argument("-x", "--unix", action="store_true",
                       help="UNIX domain sockets (alone: only them; with -t or -u: beside them)")
    group.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    group.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    group.add_argument("--backend", choices=backends.BACKENDS,
                       help="socket source (default: netlink on Linux, psutil elsewhere)")
    add_netns_option(group, several=True)


#: what --netns means, said once for every command (views read many, the others act in one)
NETNS_VIEW_HELP = ("network namespaces to read: all, host (this process's own), a name (ip "
                   "netns, Docker) or a PID living in one (default: all when this user may "
                   "enter them, else this one, said on stderr); with several, listener "
                   "views look for BOUND_INACTIVE sockets in this one only (that walks the "
                   "kernel's bind hash, shared by all namespaces). Cost: each namespace adds "
                   "a read of its socket counts (sockstat, about 0.1 ms) and a kernel dump "
                   "only where it holds sockets: a listener dump (about 2 ms on a host with "
                   "200,000 sockets), or, for a full listing or a port as root with BPF, "
                   "one only for what no process descriptor holds (TIME_WAIT, connections "
                   "not yet accepted), found by comparing those counts with the descriptor "
                   "walk's; such dumps walk hash tables that all namespaces share (about "
                   "30 ms each there: README, Many namespaces)")
NETNS_ONE_HELP = ("the network namespace to answer for and act in: host (this process's "
                  "own, the default), a name (ip netns, Docker) or a PID living in it; a "
                  "bind, a signal or a baseline belongs to one namespace, so not all")


def add_netns_option(parser, *, several: bool) -> None:
    """``--netns``, declared here for every command that reads sockets.

    ``several``: the command is a view that may cover many namespaces (``all|host|NAME|PID``,
    default ``netns_choice``); else it answers for one namespace (``host|NAME|PID``, default
    the caller's own; ``namespaces.run_in_one`` runs it there). Suggested commands carry the value
    (``namespaces.netns_flag``).
    """
    if several:
        parser.add_argument("--netns", metavar="all|host|NAME|PID", help=NETNS_VIEW_HELP)
    else:
        parser.add_argument("--netns", metavar="host|NAME|PID", help=NETNS_ONE_HELP)


def add_listing_options(parser: argparse.ArgumentParser) -> None:
    """The options of every socket listing: ``add_socket_options``, ``-n/--no-owners`` and
    ``add_output_options``."""
    add_socket_options(parser)
    parser.add_argument("-n", "--no-owners", action="store_true",
                        help="skip the owner scan (no PID, process or user)")
    add_output_options(parser)


def netns_choice(args: argparse.Namespace) -> str:
    """The ``--netns`` value, or the default: every namespace when the caller may enter them
    (CAP_SYS_ADMIN), else its own; the fallback is said on stderr when others exist."""
    if args.netns:
        return args.netns
    from .. import namespaces
    if namespaces.may_enter():
        return "all"
    if len(namespaces.discover()) > 1:
        warn("showing this network namespace only: entering the others needs root "
             "(CAP_SYS_ADMIN in the host's user namespace)")
    return "host"


def netns_scope(args: argparse.Namespace) -> dict[str, object]:
    """A view's ``netns`` and ``must_enter`` (``take_snapshot``'s): ``netns_choice``; one
    namespace named alone (``--netns NAME|PID``) must be entered, so that when it cannot be
    (setns refused by a sandbox) the view is access denied (exit 4), never an empty answer;
    with ``all``, those that could not be read are said on stderr."""
    choice = netns_choice(args)
    return {"netns": choice, "must_enter": choice not in ("all", "host")}


def protos_families(args: argparse.Namespace) -> tuple[frozenset, frozenset]:
    """The protocol and family sets chosen by ``-t -u -x -4 -6`` (none given: TCP and UDP
    over IPv4 and IPv6; ``-x`` alone: UNIX sockets only)."""
    chosen = ((Proto.TCP, args.tcp), (Proto.UDP, args.udp),
              (Proto.UNIX, getattr(args, "unix", False)))
    protos = frozenset(p for p, on in chosen if on)
    families = frozenset(f for f, on in ((Family.IPV4, args.ipv4), (Family.IPV6, args.ipv6))
                         if on)
    return protos or ALL_PROTOS, families or ALL_FAMILIES


def parse_state(text: str) -> frozenset[State]:
    """``--state`` value: comma-separated state names, any case, ``-`` or ``_``
    (``time-wait``), plus ss's groups ``listening``, ``connected``, ``all``.

    Raises:
        InvalidInput: an unknown name (the message lists the valid ones).
    """
    result: set[State] = set()
    for part in text.split(","):
        name = part.strip().upper().replace("-", "_")
        if name == "LISTENING":
            result |= {State.LISTEN, State.BOUND_INACTIVE, State.UNCONN}
        elif name == "CONNECTED":
            result |= CONNECTED_STATES
        elif name == "ALL":
            result |= set(State)
        elif name == "ESTAB":
            result.add(State.ESTABLISHED)
        elif name in State.__members__:
            result.add(State[name])
        else:
            names = ", ".join(s.value.lower().replace("_", "-") for s in State)
            raise InvalidInput(f"unknown state {shown(part)}: use {names}, or a group: "
                               "listening, connected, all")
    return frozenset(result)


#: ss's default view: connected sockets, without TIME_WAIT and SYN_RECV.
CONNECTED_STATES = frozenset(State) - {State.LISTEN, State.BOUND_INACTIVE, State.UNCONN,
                                       State.CLOSE, State.TIME_WAIT, State.SYN_RECV}

#: the largest uid: uid_t is 32 bits and (uid_t)-1 means "no uid" to the kernel
UID_MAX = 0xFFFFFFFE
#: the largest PID that can exist: Linux's PID_MAX_LIMIT (the ceiling of kernel.pid_max on
#: 64-bit kernels); elsewhere pid_t's range
PID_MAX = 4194304 if sys.platform.startswith("linux") else 0x7FFFFFFF


def parse_user(text: str) -> int:
    """A user name or numeric uid (0 to ``UID_MAX``) -> uid.

    Raises:
        InvalidInput: an unknown name or a number out of range.
    """
    if text.isascii() and text.isdigit():
        if len(text) > 10 or int(text) > UID_MAX:
            raise InvalidInput(f"invalid user {shown(text)}: a uid is 0-{UID_MAX}")
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except (KeyError, ValueError):          # ValueError: an embedded NUL
        raise InvalidInput(f"unknown user {shown(text)}: give a user name of this system "
                           f"or a uid 0-{UID_MAX}") from None


def parse_pid(text: str) -> int:
    """A PID: ASCII digits, 1 to ``PID_MAX``.

    Raises:
        InvalidInput: anything else, with the valid range.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 10 \
            or not 1 <= int(text) <= PID_MAX:
        raise InvalidInput(f"invalid pid {shown(text)}: a PID is 1-{PID_MAX}")
    return int(text)


def pid_max() -> int:
    """The largest PID plus one that this PID namespace hands out (``/proc/sys/kernel/
    pid_max``: 32768 by default, up to 4194304); 4194304 when it cannot be read."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4194304          # the kernel's PID_MAX_LIMIT on 64-bit


def confirm(question: str) -> bool:
    """Ask ``question`` on stderr (escaped, as by ``warn``) and read the answer from stdin:
    True for y or yes."""
    sys.stderr.write(safe(question))
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def warn(message: str) -> None:
    """One diagnostic line on stderr, ``portscope: MESSAGE``: every diagnostic goes through
    here, so ``message`` is escaped here (``render.escape.safe``) whatever it quotes: a
    network namespace's name (any bytes ``ip netns add`` took), a process name, a path, the
    user's input. An escaped part stays as it is (escaping twice changes nothing)."""
    print(f"portscope: {safe(message)}", file=sys.stderr)


#: what one-shot commands leave behind when the process ends at once (``keep``)
_kept: list[object] | None = None


def end_at_once() -> None:
    """From now on, ``keep`` keeps: the process will end with ``os._exit`` once the command
    has answered (``cli.run``, the ``portscope`` command)."""
    global _kept
    _kept = []


def keep(value: object) -> None:
    """Leave ``value`` (a command's large snapshot) alive to the end of a process that ends at
    once (``end_at_once``): freeing it object by object, then tearing down the interpreter,
    would cost about 25 ms at 50,000 sockets for nothing. A caller of ``cli.main`` in its own
    process keeps nothing."""
    if _kept is not None:
        _kept.append(value)


def report_warnings(snapshot: Snapshot | SnapshotStream) -> None:
    """Print the snapshot's warnings on stderr, one line each."""
    for message in snapshot.warnings:
        warn(message)


def output_format(args: argparse.Namespace) -> str:
    """The listing form ``add_output_options`` chose: ``"json"``, ``"csv"`` or ``"auto"``
    (see ``render.listing``)."""
    if getattr(args, "json", False):
        return "json"
    return "csv" if getattr(args, "csv", False) else "auto"
