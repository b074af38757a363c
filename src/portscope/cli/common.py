"""Option groups shared by the subcommands, declared once, and the output plumbing."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO, TypeVar

from .. import backends
from ..errors import AccessDenied, InvalidInput
from ..filters import ALL_FAMILIES, ALL_PROTOS, SocketFilter
from ..snapshot import SnapshotStream
from ..types import Family, Proto, Snapshot, Socket, State
from ..render import columns as cols

T = TypeVar("T")
TABLE_MAX_ROWS = 2000   # beyond this a terminal gets plain aligned text (a rich table is slow)


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
    """``-t -u -4 -6`` and ``--backend`` (the letters mean what they mean to ss)."""
    group = parser.add_argument_group("sockets")
    group.add_argument("-t", "--tcp", action="store_true", help="TCP sockets")
    group.add_argument("-u", "--udp", action="store_true", help="UDP sockets")
    group.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    group.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    group.add_argument("--backend", choices=backends.BACKENDS,
                       help="socket source (default: netlink on Linux, psutil elsewhere)")
    add_netns_option(group, "all|host|NAME|PID", "network namespaces to cover (default: all "
                     "when this user may enter them, else this one); with several, listener "
                     "views look for BOUND_INACTIVE sockets in this one only (that walks the "
                     "kernel's bind hash, shared by all namespaces)")


def add_netns_option(parser, metavar: str = "host|NAME|PID",
                     help_text: str = "answer for this network namespace (default: this "
                                      "process's own): a name (ip netns, Docker) or a PID "
                                      "living in it") -> None:
    """``--netns``: which network namespace(s); ``run_in_netns`` runs a one-namespace
    command there."""
    parser.add_argument("--netns", metavar=metavar, help=help_text)


def run_in_netns(spec: str | None, work: Callable[[], T]) -> T:
    """``work()`` run inside the one network namespace ``--netns spec`` names (in a thread
    that entered it: sockets it creates and dumps it takes are that namespace's); in the
    caller's own when ``spec`` is None.

    Raises:
        InvalidInput: ``all``, an unknown name or PID.
        AccessDenied: the namespace cannot be entered (needs CAP_SYS_ADMIN).
    """
    if spec is None:
        return work()
    from .. import namespaces
    if spec == "all":
        raise InvalidInput("--netns all: this command answers for one network namespace: "
                           "give host, a name or a PID")
    entries = namespaces.select(spec)
    namespaces.require_entry(entries)
    (result,) = namespaces.run_in(entries, lambda _entry: work())
    if isinstance(result, OSError):
        raise AccessDenied(f"--netns {spec}: cannot enter that network namespace: "
                           f"{result.strerror or result}")
    return result


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
             "(CAP_SYS_ADMIN)")
    return "host"


def protos_families(args: argparse.Namespace) -> tuple[frozenset, frozenset]:
    """The protocol and family sets chosen by ``-t -u -4 -6`` (none given: all)."""
    protos = frozenset(p for p, on in ((Proto.TCP, args.tcp), (Proto.UDP, args.udp)) if on)
    families = frozenset(f for f, on in ((Family.IPV4, args.ipv4), (Family.IPV6, args.ipv6))
                         if on)
    return protos or ALL_PROTOS, families or ALL_FAMILIES


def parse_state(text: str) -> frozenset[State]:
    """``--state`` value: comma-separated state names, any case, ``-`` or ``_``
    (``time-wait``), plus ss's groups ``listening``, ``connected``, ``all``."""
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
            raise InvalidInput(f"unknown state {part!r}: use e.g. listen, established, "
                               "time-wait, bound-inactive, unconn")
    return frozenset(result)


#: ss's default view: connected sockets, without TIME_WAIT and SYN_RECV.
CONNECTED_STATES = frozenset(State) - {State.LISTEN, State.BOUND_INACTIVE, State.UNCONN,
                                       State.CLOSE, State.TIME_WAIT, State.SYN_RECV}


def parse_user(text: str) -> int:
    """A user name or numeric uid -> uid."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise InvalidInput(f"unknown user {text!r}") from None


def parse_pid(text: str) -> int:
    """A PID: ASCII digits, 1 or more."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) < 1:
        raise InvalidInput(f"invalid pid {text!r}: expected a positive number")
    return int(text)


def warn(message: str) -> None:
    """One diagnostic line on stderr."""
    print(f"portscope: {message}", file=sys.stderr)


def report_warnings(snapshot: Snapshot | SnapshotStream) -> None:
    """Print the snapshot's warnings on stderr, one line each."""
    for message in snapshot.warnings:
        warn(message)


def use_table(out: TextIO, rows: int) -> bool:
    """True when a rich table fits: ``out`` is a terminal and the listing is not huge."""
    return rows <= TABLE_MAX_ROWS and out.isatty()


#: a netlink dump this large (about 15,000 sockets) is decoded and written as JSON by two
#: processes, each half of it (200,000 sockets: 0.9 s of decoding and formatting, halved)
SHARED_JSON_BYTES = 2 << 20


def fork_allowed() -> bool:
    """True when a second CPU and fork() are there to share work with."""
    from ..owners.fdscan import default_workers
    return default_workers() > 0


def _write_json_in_two(out: TextIO, stream: SnapshotStream, fields: dict | None) -> None:
    """Write a large streamed listing as JSON, the second half of the sockets decoded and
    formatted by a forked child into a memfd, which is then copied after the first half.
    A child that fails is not waited on for its half: the parent writes it itself."""
    from ..render import jsonfmt
    jsonfmt.write_head(out, stream, fields)
    out.flush()
    items = os.memfd_create("portscope-json", os.MFD_CLOEXEC)
    stats = os.memfd_create("portscope-json-stats", os.MFD_CLOEXEC)
    child = os.fork()
    if child == 0:                          # the child: its half, then leave without cleanup
        status = 1
        try:
            with open(items, "w", encoding="utf-8", closefd=False) as f:
                jsonfmt.write_items(f, stream.share(1, 2), lead=",\n  ")
            os.write(stats, json.dumps(stream.share_result()).encode())
            status = 0
        finally:
            os._exit(status)
    try:
        written = jsonfmt.write_items(out, stream.share(0, 2))
        out.flush()
        _, status = os.waitpid(child, 0)
        child = 0
        if status != 0:
            jsonfmt.write_items(out, stream.share(1, 2), lead=",\n  " if written else "\n  ")
        else:
            size = os.fstat(items).st_size
            offset = 1 if size and not written else 0     # its first item opens with a comma
            while offset < size:
                offset += os.sendfile(out.fileno(), items, offset, size - offset)
            stream.add_share_result(*json.loads(os.pread(stats, os.fstat(stats).st_size, 0)))
        jsonfmt.write_tail(out, stream)
    finally:
        if child:                           # interrupted (closed pipe, ^C): end the child
            os.kill(child, 9)
            os.waitpid(child, 0)
        os.close(items)
        os.close(stats)


def write_listing(args: argparse.Namespace, meta: Snapshot | SnapshotStream,
                  sockets: Iterable[Socket], columns: Sequence[cols.Column], *,
                  extras: dict | None = None,
                  fields: dict | None = None) -> None:
    """Write sockets as JSON, CSV, a table (terminal) or plain text (pipe), per ``args``.

    ``sockets`` may be a stream: it is consumed once, as it is written (a table needs at most
    ``TABLE_MAX_ROWS`` of them in memory). The Container and "Forwards to" columns are added
    when one of the first ``TABLE_MAX_ROWS`` sockets has a container or a published port.
    """
    out = sys.stdout
    if args.json:
        from ..render import jsonfmt
        if (isinstance(meta, SnapshotStream) and sockets is meta and meta.divisible
                and meta.dump_bytes >= SHARED_JSON_BYTES and not extras and fork_allowed()):
            _write_json_in_two(out, meta, fields)
        else:
            jsonfmt.write_snapshot(out, meta, sockets, extras=extras, fields=fields)
        return
    if len(meta.namespaces) > 1:
        columns = (cols.netns_column(meta.namespaces), *columns)
    sockets = iter(sockets)
    first = list(itertools.islice(sockets, TABLE_MAX_ROWS + 1))
    # container columns only when the first rows have something to show in them
    if any(s.container is not None for s in first):
        columns = (*columns, cols.CONTAINER)
    if any(s.published is not None for s in first):
        columns = (*columns, cols.PUBLISHED)
    getters: list[Callable[[Socket], str]] = [c.get for c in columns]
    if getattr(args, "csv", False):
        from ..render import csvfmt
        csvfmt.write_rows(out, [c.key for c in columns],
                          ([get(s) for get in getters] for s in itertools.chain(first, sockets)),
                          header=not args.no_header)
        return
    headers = [c.header for c in columns]
    aligns = [c.align for c in columns]
    if use_table(out, len(first)):
        from ..render import table
        table.write_table(out, headers, [[get(s) for get in getters] for s in first], aligns,
                          header=not args.no_header)
        return
    from ..render import text
    text.write_rows(out, headers, ([get(s) for get in getters]
                                   for s in itertools.chain(first, sockets)),
                    aligns, header=not args.no_header)
