"""Audit rules: one pure function per rule, each under a stable id with a severity and a fix.

A rule judges a ``Listener``: one server socket (TCP LISTEN or BOUND_INACTIVE, a bound UDP
server) as seen through one of the programs holding it, with the facts gathered about that
program's executable (``ExeFacts``). Nothing here reads the system: the facts, the second kernel
view and the trial binds are gathered by ``portscope.audit.facts`` and passed in.

Rules and severities (``RULES`` is the registry; ``portscope audit --list-rules`` prints it):

=========================  ======  ============================================================
id                         sev.    flags
=========================  ======  ============================================================
exposed-all-interfaces     medium  a wildcard bind (``0.0.0.0``, ``::``; dual-stack ``::``
                                   counts for both families)
exposed-address            low     a bind to one non-loopback address
exe-deleted                high    the running executable has no file on disk (deleted, memfd)
exe-replaced               medium  another file now has the running executable's path
exe-temp-dir               high    the executable lives in /tmp, /var/tmp, /dev/shm or a
                                   world-writable place
exe-hidden-dir             medium  the executable lives in a hidden folder of a home directory
shell-listener             high    a shell or relay tool (bash, nc, socat...) on a non-loopback
                                   address
interpreter-listener       medium  a script interpreter (python, perl...) on a non-loopback
                                   address
kthread-impersonation      high    a user-space process named like a kernel thread
                                   (``[kworker/0:1]``)
name-mismatch              medium  the process name matches neither its executable nor its
                                   command line
unexpected-program         high    a well-known port (``EXPECTED_PROGRAMS``) served by another
                                   program
unauthorized-use-port      medium  IANA reports unauthorized use of the port
ephemeral-port-listener    low     a TCP listener inside the ephemeral range
hidden-socket              high    one kernel view shows a socket that the other hides
hidden-port                high    (``--deep``) a port refuses a trial bind, no socket explains it
baseline-new               high    a listener the baseline does not know
baseline-changed           high    a baselined port now served by another binary, hash, user or
                                   scope
baseline-gone              low     a baselined listener is not running
unix-world-writable        high    a root-held UNIX socket file any user may connect to (mode
                                   o+w, as a ``0666`` docker.sock)
unix-abstract-host         medium  an abstract UNIX listener of a root process in the host's
                                   network namespace: reachable from every container sharing
                                   it (the CVE-2020-15257 pattern)
unix-stale-file            low     a socket file under /run, /var/run or /tmp no socket is
                                   bound to
=========================  ======  ============================================================

Rules marked ``baselinable`` judge only what a baseline entry records (program, hash, user,
port, scope): for a listener that matches an entry they are not reported again.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .. import identity
from ..identity import canonical_address
from ..ports import HostPortRanges
from ..types import Family, Proto, ProcessInfo, Socket, State, _StrEnum


class Severity(_StrEnum):
    """How bad a finding is; ``rank`` orders them (low < medium < high)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for low, 1 for medium, 2 for high."""
        return _RANKS[self.value]


_RANKS = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one listener (or baseline entry, or port).

    Attributes:
        rule: the rule id (``RULES``).
        severity: ``Severity``.
        proto: ``"tcp"`` or ``"udp"``.
        address: the local address (``"0.0.0.0"``, ``"::"``), None when the rule has none.
        port: the local port.
        pid: the first holder's PID, None without a visible holder.
        exe: the holder's executable path (without `` (deleted)``), None if unknown.
        user: the holder's user name; without a visible holder, the socket's owning uid's.
        message: one line saying what was found.
        fix: one line saying what to do.
    """

    rule: str
    severity: Severity
    proto: str | None
    address: str | None
    port: int | None
    pid: int | None
    exe: str | None
    user: str | None
    message: str
    fix: str


@dataclass(frozen=True, slots=True)
class ExeFacts:
    """What is known about a running program's executable file.

    Attributes:
        path: the path the process was started from, as ``/proc/PID/exe`` names it, without
            the kernel's `` (deleted)`` mark; ``/memfd:NAME`` for an anonymous memory file.
        sha256: hex SHA-256 of the running image (read through ``/proc/PID/exe``), None when
            unreadable.
        deleted: the running image has no name on disk any more (its link count is 0).
        on_disk: what ``path`` names now: ``"same"`` (the running file, or an identical copy),
            ``"missing"`` (nothing), ``"other"`` (a different file), ``"unknown"`` (unreadable).
        world_writable: any user may replace the file: it, its directory, or an ancestor
            directory without the sticky bit is world-writable.
    """

    path: str
    sha256: str | None
    deleted: bool = False
    on_disk: str = "same"
    world_writable: bool = False


@dataclass(frozen=True, slots=True)
class Listener:
    """A server socket seen through one program holding it.

    A socket held by several programs (systemd socket activation and the daemon) gives one
    ``Listener`` per program; forked copies of one program are one ``Listener`` (``pids``).

    Attributes:
        sock: the socket.
        process: the first holder of this program, None when no holder is visible.
        exe: facts about its executable, None when unreadable or without a holder.
        pids: every holder PID of this program, ascending.
        user: the holder's user name, or the name of the socket's uid without a holder.
        first: True for the first ``Listener`` of its socket (socket-level rules run once).
    """

    sock: Socket
    process: ProcessInfo | None
    exe: ExeFacts | None
    pids: tuple[int, ...]
    user: str | None
    first: bool = True

    @property
    def verified(self) -> bool:
        """True when the program's identity (executable and hash) was read."""
        return self.exe is not None and self.exe.sha256 is not None

    @property
    def exe_path(self) -> str | None:
        """The executable path, from the facts or else from the process record."""
        if self.exe is not None:
            return self.exe.path
        if self.process is not None and self.process.exe:
            return self.process.exe.removesuffix(" (deleted)")
        return None

    @property
    def program(self) -> str | None:
        """The program's name for name-based rules: the executable's file name, or the process
        name when the executable is unknown or a multi-call binary (busybox)."""
        path = self.exe_path
        base = posixpath.basename(path) if path else None
        if base and base not in MULTI_CALL:
            return base
        return self.process.name if self.process else base


class Hit(NamedTuple):
    """A rule function's positive answer: the message, and a fix when the rule's default one
    does not fit."""

    message: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Host facts the rules need, gathered once.

    Attributes:
        ranges: this host's ephemeral and reserved port ranges.
        expected_programs: ``(port, proto)`` -> program names allowed to serve it
            (``EXPECTED_PROGRAMS`` merged with the user's overrides).
        unauthorized_use: ``(port, proto) -> bool``, IANA's unauthorized-use reports.
    """

    ranges: HostPortRanges
    expected_programs: Mapping[tuple[int, str], frozenset[str]]
    unauthorized_use: Callable[[int, str], bool]


# --- names ---------------------------------------------------------------------------------------

#: Shells and network relay tools: holding a server socket on a non-loopback address, these are
#: a bind shell or a port relay far more often than a service.
SHELLS_AND_RELAYS = frozenset({
    "sh", "ash", "bash", "rbash", "dash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "fish",
    "csh", "tcsh", "nc", "ncat", "netcat", "nc.openbsd", "nc.traditional", "socat", "cryptcat",
})

#: Script interpreters (an optional version suffix is allowed: python3.11, perl5.36).
INTERPRETER_RE = re.compile(
    r"(python|pypy|perl|ruby|php|php-cgi|lua|luajit|tclsh|wish|expect|gawk|mawk|nawk|awk)"
    r"[0-9.]*")

#: Executables that are many programs; the process name tells which one runs.
MULTI_CALL = frozenset({"busybox", "toybox"})

#: Programs that may hold any port for another: socket activation and container forwarders.
PORT_HOLDERS = frozenset({
    "systemd", "init", "inetd", "xinetd", "docker-proxy", "rootlessport", "rootlesskit",
    "slirp4netns", "pasta", "passt", "conmon",
})

_WEB = frozenset({"nginx", "apache2", "httpd", "caddy", "haproxy", "traefik", "envoy", "lighttpd",
                  "varnishd", "h2o", "hitch", "openresty"})
_DNS = frozenset({"named", "unbound", "dnsmasq", "systemd-resolved", "systemd-resolve",
                  "coredns", "pdns_server", "pdns_recursor", "knotd", "kresd", "nsd",
                  "dnscrypt-proxy", "stubby", "cloudflared", "AdGuardHome", "pihole-FTL"})
_MAIL = frozenset({"master", "exim", "exim4", "sendmail", "smtpd", "opensmtpd"})
_IMAP = frozenset({"dovecot", "imap-login", "pop3-login", "cyrus-master"})

#: The curated map of well-known ports to the programs expected to serve them, by executable
#: file name (the process name for a multi-call binary). ``--expect PORT/PROTO=NAME,...``
#: replaces an entry; ``PORT_HOLDERS`` are accepted on every port.
EXPECTED_PROGRAMS: Mapping[tuple[int, str], frozenset[str]] = {
    (21, "tcp"): frozenset({"vsftpd", "proftpd", "pure-ftpd", "in.ftpd"}),
    (22, "tcp"): frozenset({"sshd", "dropbear"}),
    (23, "tcp"): frozenset({"in.telnetd", "telnetd"}),
    (25, "tcp"): _MAIL,
    (53, "tcp"): _DNS,
    (53, "udp"): _DNS,
    (67, "udp"): frozenset({"dhcpd", "dnsmasq", "kea-dhcp4", "udhcpd"}),
    (68, "udp"): frozenset({"dhclient", "dhcpcd", "NetworkManager", "systemd-networkd",
                            "udhcpc"}),
    (80, "tcp"): _WEB,
    (110, "tcp"): _IMAP,
    (111, "tcp"): frozenset({"rpcbind", "portmap"}),
    (111, "udp"): frozenset({"rpcbind", "portmap"}),
    (123, "udp"): frozenset({"ntpd", "chronyd", "ntpsec", "systemd-timesyncd"}),
    (143, "tcp"): _IMAP,
    (389, "tcp"): frozenset({"slapd"}),
    (443, "tcp"): _WEB,
    (443, "udp"): _WEB,
    (465, "tcp"): _MAIL,
    (587, "tcp"): _MAIL,
    (631, "tcp"): frozenset({"cupsd"}),
    (636, "tcp"): frozenset({"slapd"}),
    (993, "tcp"): _IMAP,
    (995, "tcp"): _IMAP,
    (3306, "tcp"): frozenset({"mysqld", "mariadbd"}),
    (5432, "tcp"): frozenset({"postgres", "postmaster"}),
    (6379, "tcp"): frozenset({"redis-server"}),
    (11211, "tcp"): frozenset({"memcached"}),
    (27017, "tcp"): frozenset({"mongod", "mongos"}),
}

#: Temporary directories: anyone may write there, and they are where droppers land.
TEMP_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/")
_HOME_RE = re.compile(r"/(?:home/[^/]+|root)/(?:[^/]+/)*?\.[^/]+/")

_REACHABLE = frozenset({State.LISTEN, State.UNCONN})   # BOUND_INACTIVE refuses connections


# --- helpers -------------------------------------------------------------------------------------

def is_loopback(sock: Socket) -> bool:
    """True when ``sock`` is bound to a loopback address (``127.0.0.0/8``, ``::1``, or
    ``::ffff:127.x.y.z``): reachable from this host only."""
    return identity.is_loopback(sock.local.address)


def is_server_socket(sock: Socket, ranges: HostPortRanges) -> bool:
    """True for a socket the audit judges: TCP LISTEN or BOUND_INACTIVE, or an unconnected UDP
    socket that is not an ephemeral client.

    An unconnected UDP socket on a port of the ephemeral range (and not reserved) is taken for a
    client that ``sendto()`` bound automatically (DNS, QUIC, mDNS queries): the kernel does not
    say whether the port was chosen by the program, so a UDP server deliberately bound inside
    the ephemeral range is not audited (``hidden-socket`` still compares it).
    """
    port = sock.local.port
    if not port or sock.proto not in (Proto.TCP, Proto.UDP):
        return False
    if sock.proto is Proto.TCP:
        return sock.state in (State.LISTEN, State.BOUND_INACTIVE)
    if sock.state is not State.UNCONN:
        return False
    return not ranges.is_ephemeral(port) or ranges.is_reserved(port)


def _reachable_from_outside(l: Listener) -> bool:
    return l.sock.state in _REACHABLE and not is_loopback(l.sock)


# --- per-listener rules --------------------------------------------------------------------------

def exposed_all_interfaces(l: Listener, ctx: AuditContext) -> Hit | None:
    """A wildcard bind: every address of the family (both families for a dual-stack ``::``)."""
    sock = l.sock
    if sock.state not in _REACHABLE or not identity.is_wildcard(sock.local.address):
        return None
    if identity.ip_address(sock.local.address).version == 4:    # 0.0.0.0, ::ffff:0.0.0.0
        reach = f"every IPv4 address ({sock.local.address})"
    elif sock.v6only:
        reach = "every IPv6 address ([::], v6only)"
    elif sock.v6only is False:
        reach = "every IPv6 and every IPv4 address (dual-stack [::], v6only off)"
    else:
        reach = "every IPv6 address, and IPv4 too unless v6only is set ([::])"
    return Hit(f"accepts traffic on {reach}{_published_for(sock)}")


def exposed_address(l: Listener, ctx: AuditContext) -> Hit | None:
    """A bind to one specific non-loopback address."""
    sock = l.sock
    if sock.state not in _REACHABLE:
        return None
    ip = identity.ip_address(sock.local.address)
    if ip.is_unspecified or ip.is_loopback:
        return None
    kind = ("link-local" if ip.is_link_local else "private" if ip.is_private
            else "public")
    return Hit(f"accepts traffic on {kind} address {sock.local.address}{_published_for(sock)}")


def _published_for(sock: Socket) -> str:
    """Where a host port published for a container goes, as a clause (empty otherwise): the
    exposure is the host socket's; the container's own listener stays in its namespace."""
    published = sock.published
    if published is None:
        return ""
    name = published.container.name or published.container.id[:12]
    port = "" if published.port is None else f" port {published.port}"
    return f", published for container {name}{port}"


def exe_deleted(l: Listener, ctx: AuditContext) -> Hit | None:
    """The running executable is gone from disk (or never was: memfd)."""
    exe = l.exe
    if exe is None or not exe.deleted or exe.on_disk != "missing":
        return None
    if exe.path.startswith("/memfd:"):
        return Hit("the program runs from an anonymous memory file, never from disk")
    return Hit("the program's executable was deleted after it started")


def exe_replaced(l: Listener, ctx: AuditContext) -> Hit | None:
    """The path of the running executable now names another file."""
    exe = l.exe
    if exe is None or not exe.deleted or exe.on_disk not in ("other", "unknown"):
        return None
    what = "a different file" if exe.on_disk == "other" else "a file that could not be read"
    return Hit(f"the program's executable was replaced on disk by {what}")


def exe_temp_dir(l: Listener, ctx: AuditContext) -> Hit | None:
    """The executable runs from a temporary or world-writable place."""
    path = l.exe_path
    if path is None:
        return None
    for temp in TEMP_DIRS:
        if path.startswith(temp):
            return Hit(f"the program runs from the temporary directory {temp.rstrip('/')}")
    if l.exe is not None and l.exe.world_writable:
        return Hit("any user may replace the program's executable (world-writable file or "
                   "directory)")
    return None


def exe_hidden_dir(l: Listener, ctx: AuditContext) -> Hit | None:
    """The executable lives in a hidden folder of a home directory (``~/.cache/x``)."""
    path = l.exe_path
    match = _HOME_RE.match(path) if path is not None else None
    if match is None:
        return None
    return Hit(f"the program runs from the hidden folder {match.group(0).rstrip('/')}")


def shell_listener(l: Listener, ctx: AuditContext) -> Hit | None:
    """A shell or relay tool serving a non-loopback address: a bind shell or a port relay."""
    program = l.program
    if program not in SHELLS_AND_RELAYS or not _reachable_from_outside(l):
        return None
    return Hit(f"served by the shell or relay tool {program} on a non-loopback address")


def interpreter_listener(l: Listener, ctx: AuditContext) -> Hit | None:
    """A script interpreter serving a non-loopback address."""
    program = l.program
    if program is None or not INTERPRETER_RE.fullmatch(program) or not _reachable_from_outside(l):
        return None
    return Hit(f"served by the script interpreter {program} on a non-loopback address")


def kthread_impersonation(l: Listener, ctx: AuditContext) -> Hit | None:
    """A socket holder named like a kernel thread: kernel threads hold no descriptors, so a
    ``[name]`` holding a socket is a user-space process hiding in ``ps`` output."""
    name = l.process.name if l.process else None
    if not name or not (name.startswith("[") and name.endswith("]")):
        return None
    where = f" (executable {l.exe_path})" if l.exe_path else ""
    return Hit(f"a user-space process calls itself {name}, like a kernel thread{where}")


def _names_agree(name: str, exe_path: str, cmdline: Sequence[str]) -> bool:
    """True when the process name ``name`` (``comm``, at most 15 characters) matches the file
    name of the executable, of ``argv[0]`` or of ``argv[1]`` (a script run by an interpreter),
    allowing for truncation and version suffixes (``python3`` for ``python3.11``)."""
    candidates = [posixpath.basename(exe_path)]
    candidates += [posixpath.basename(arg.split(" ", 1)[0]) for arg in cmdline[:2] if arg]
    candidates += [arg[:15] for arg in cmdline[:1]]          # a rewritten title (setproctitle)
    return any(c[:15] == name or (len(name) >= 3 and c.startswith(name)) for c in candidates)


def name_mismatch(l: Listener, ctx: AuditContext) -> Hit | None:
    """The process name matches neither its executable nor its command line: it renamed itself
    (``prctl(PR_SET_NAME)``) to look like something else."""
    process, path = l.process, l.exe_path
    if process is None or not process.name or path is None or process.cmdline is None:
        return None
    name = process.name
    if name.startswith("[") and name.endswith("]"):
        return None                        # kthread-impersonation says it
    if posixpath.basename(path) in MULTI_CALL or _names_agree(name, path, process.cmdline):
        return None
    return Hit(f"the process calls itself {name!r}, but its executable is "
               f"{posixpath.basename(path)}")


def unexpected_program(l: Listener, ctx: AuditContext) -> Hit | None:
    """A well-known port of the curated map served by a program not listed for it."""
    port, proto = l.sock.local.port, l.sock.proto.value
    expected = ctx.expected_programs.get((port, proto))
    program = l.program
    if not expected or program is None or l.sock.state not in _REACHABLE:
        return None
    if program in expected or program in PORT_HOLDERS:
        return None
    names = ", ".join(sorted(expected))
    return Hit(f"served by {program}, not by a program expected on {port}/{proto} ({names})",
               f"if {program} is meant to serve {port}/{proto}, say so with --expect "
               f"{port}/{proto}={program}; otherwise find out what started it and stop it")


def unauthorized_use_port(l: Listener, ctx: AuditContext) -> Hit | None:
    """IANA's registry reports unauthorized use of the port (a malware or tool default)."""
    sock = l.sock
    if sock.state not in _REACHABLE or not ctx.unauthorized_use(sock.local.port, sock.proto.value):
        return None
    return Hit("uses a port for which IANA reports unauthorized use")


def ephemeral_port_listener(l: Listener, ctx: AuditContext) -> Hit | None:
    """A TCP listener inside the ephemeral range: outgoing connections may take its port while
    it is down, and it then cannot restart."""
    sock = l.sock
    port = sock.local.port
    if sock.state is not State.LISTEN or not ctx.ranges.is_ephemeral(port) \
            or ctx.ranges.is_reserved(port):
        return None
    low, high = ctx.ranges.ephemeral
    return Hit(f"listens inside the ephemeral range {low}-{high}")


# --- rules over whole kernel views ---------------------------------------------------------------

#: States the two kernel views name differently or only one of them shows by design:
#: BOUND_INACTIVE is dumped by netlink only; request sockets are NEW_SYN_RECV in netlink and
#: SYN_RECV in /proc/net.
VIEW_BLIND_STATES = frozenset({State.BOUND_INACTIVE, State.NEW_SYN_RECV, State.SYN_RECV})

ViewKey = tuple


def view_key(sock: Socket) -> ViewKey:
    """The identity of a socket across two kernel views: ``(proto, family, local, remote,
    state, inode)`` with the addresses in one spelling (zone ids dropped, the IPv4-mapped form
    fixed: /proc/net cannot print a zone)."""
    local, remote = sock.local, sock.remote
    return (sock.proto.value, sock.family.value, (canonical_address(local.address, zone=False), local.port),
            None if remote is None else (canonical_address(remote.address, zone=False),
                                       remote.port),
            sock.state.value, sock.inode)


def view_differences(first: Iterable[Socket], second: Iterable[Socket]
                     ) -> tuple[dict[ViewKey, Socket], dict[ViewKey, Socket]]:
    """Sockets one view shows and the other does not.

    Sockets without a descriptor (inode 0: TIME_WAIT, orphans) belong to no process, so there
    is nothing to hide; they and the states of ``VIEW_BLIND_STATES`` are not compared.

    Args:
        first, second: two dumps of the same network namespace (e.g. netlink, then /proc/net).
    Returns:
        ``(only_first, only_second)``: ``view_key`` -> socket.
    """
    blind = VIEW_BLIND_STATES
    # by inode (an int hashes in C; an enum's hash is Python code), then the fields as the
    # backends wrote them, (proto, family, local, remote, state, inode), compared as a slice
    a = {s.inode: s for s in first if s.inode}
    b = {s.inode: s for s in second if s.inode}
    only_a = {view_key(s): s for i, s in a.items()
              if ((t := b.get(i)) is None or t[:6] != s[:6]) and s.state not in blind}
    only_b = {view_key(s): s for i, s in b.items()
              if ((t := a.get(i)) is None or t[:6] != s[:6]) and s.state not in blind}
    # the few leftovers may differ only in how an address is written
    common = only_a.keys() & only_b.keys()
    return ({k: s for k, s in only_a.items() if k not in common},
            {k: s for k, s in only_b.items() if k not in common})


#: Sockets one view showed and the other did not: ``(only first, only second)`` by view key.
HiddenCandidates = tuple[dict[ViewKey, Socket], dict[ViewKey, Socket]]


def hidden_sockets(previous: HiddenCandidates | None, first: Iterable[Socket],
                   second: Iterable[Socket]) -> HiddenCandidates:
    """One round of the hidden-socket comparison: the differences of this round's dumps that
    were also differences, the same way round, in every earlier round.

    A round is ``(first view dump, second view dump)`` taken in that order, rounds one after
    the other. A socket created or closed between two dumps differs in one round only: a
    socket shown by the first view in round 1 and again in a later round has lived through
    the second view's round-1 dump (an inode is not reused while its socket lives), so its
    absence there means it was hidden; the same holds the other way round.

    Args:
        previous: the result of the earlier rounds, None for the first round.
        first, second: this round's dumps.
    Returns:
        ``(shown only by the first view, shown only by the second view)``.
    """
    a, b = view_differences(first, second)
    if previous is None:
        return a, b
    return ({k: s for k, s in previous[0].items() if k in a},
            {k: s for k, s in previous[1].items() if k in b})


def hidden_socket(l: Listener, shown_in: str, hidden_from: str, rounds: int) -> Finding:
    """The ``hidden-socket`` finding for a socket that ``shown_in`` showed and ``hidden_from``
    hid in each of ``rounds`` comparisons."""
    rule = RULE_BY_ID["hidden-socket"]
    sock = l.sock
    return make_finding(rule, l, Hit(
        f"{sock.state.value} socket (inode {sock.inode}) is in the {shown_in} view but missing "
        f"from {hidden_from}, {rounds} times in a row"))


#: A trial bind refused with EADDRINUSE: ``(proto, family, port)``.
Refusal = tuple[str, str, int]


def unexplained_refusals(refused: Iterable[Refusal], visible: Iterable[Socket]) -> set[Refusal]:
    """Trial binds refused although no visible socket of that protocol uses the port.

    Any visible socket on the same protocol and port explains a refusal, whatever its family,
    address or state (a dual-stack ``::`` socket blocks IPv4, a TIME_WAIT may block, ...): the
    rule looks for ports held by sockets no view shows, not for bind-semantics subtleties.
    """
    used = {(s.proto.value, s.local.port) for s in visible}
    return {r for r in refused if (r[0], r[2]) not in used}


def hidden_port(refusal: Refusal, rounds: int) -> Finding:
    """The ``hidden-port`` finding for a trial bind refused in each of ``rounds`` tries."""
    proto, family, port = refusal
    rule = RULE_BY_ID["hidden-port"]
    address = identity.WILDCARDS[Family(family)]
    return Finding(rule.id, rule.severity, proto, address, port, None, None, None,
                   f"refuses a trial bind (address in use) {rounds} times, yet no visible socket "
                   "uses the port", rule.fix)


# --- UNIX sockets --------------------------------------------------------------------------------

def _unix_finding(rule_id: str, sock: Socket | None, address: str, message: str) -> Finding:
    rule = RULE_BY_ID[rule_id]
    owner = sock.owners[0] if sock is not None and sock.owners else None
    return Finding(rule.id, rule.severity, "unix", address, None,
                   owner.pid if owner else None,
                   (owner.process.exe or "").removesuffix(" (deleted)") or None if owner else None,
                   owner.process.user if owner else None, message, rule.fix)


def unix_world_writable(sock: Socket, path: str, mode: int) -> Finding | None:
    """``unix-world-writable``: a UNIX listener held by root (uid 0) whose socket file at
    ``path`` has mode ``mode`` with write permission for all users."""
    if not mode & 0o002 or not sock.owners or sock.owners[0].process.uid != 0:
        return None
    return _unix_finding("unix-world-writable", sock, path,
                         f"socket file mode {mode:04o}: every local user may connect to a "
                         "root process")


def unix_abstract_host(sock: Socket, host_netns: bool) -> Finding | None:
    """``unix-abstract-host``: an abstract UNIX listener (``@name``) held by root in the
    host's network namespace (``host_netns``)."""
    if not host_netns or not sock.local.address.startswith("@") or not sock.owners \
            or sock.owners[0].process.uid != 0:
        return None
    return _unix_finding("unix-abstract-host", sock, sock.local.address,
                         "abstract socket of a root process in the host network namespace: no "
                         "file permissions guard it; every container sharing the namespace "
                         "may connect")


def unix_stale_file(path: str) -> Finding:
    """``unix-stale-file``: a socket file at ``path`` that no socket is bound to."""
    return _unix_finding("unix-stale-file", None, path,
                         "a socket file that no socket is bound to (a server that exited "
                         "without removing it): the next bind() there fails with EADDRINUSE")


# --- registry ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """A rule's stable description.

    Attributes:
        id: stable identifier (JSON ``rule``, SARIF ``ruleId``).
        severity: ``Severity`` of its findings.
        title: one line saying what it flags.
        fix: the default one-line fix.
        check: the per-listener function, None for rules evaluated over whole views
            (hidden-socket, hidden-port) or against a baseline.
        socket_level: True when the rule judges the socket alone (run once per socket, not
            once per holding program).
        baselinable: a matching baseline entry accepts what this rule flags.
    """

    id: str
    severity: Severity
    title: str
    fix: str
    check: Callable[[Listener, AuditContext], Hit | None] | None = None
    socket_level: bool = False
    baselinable: bool = False


HIGH, MEDIUM, LOW = Severity.HIGH, Severity.MEDIUM, Severity.LOW

RULES: tuple[Rule, ...] = (
    Rule("exposed-all-interfaces", MEDIUM,
         "listens on every address of a family (wildcard bind; dual-stack counts for both)",
         "bind to 127.0.0.1/::1 or to the one address that must serve, or firewall the port",
         exposed_all_interfaces, socket_level=True, baselinable=True),
    Rule("exposed-address", LOW, "listens on a specific non-loopback address",
         "bind to loopback if only this host needs it, or firewall the port",
         exposed_address, socket_level=True, baselinable=True),
    Rule("exe-deleted", HIGH, "the listening program's executable is no longer on disk",
         "restart the service if a package upgrade removed the file; otherwise treat it as a "
         "fileless implant: save /proc/PID/exe, then stop the process",
         exe_deleted),
    Rule("exe-replaced", MEDIUM, "the listening program's executable was replaced on disk",
         "restart the service so it runs the file on disk (an upgrade); if nothing was upgraded, "
         "compare the file's hash with the package's (dpkg --verify)",
         exe_replaced),
    Rule("exe-temp-dir", HIGH,
         "the listening program runs from a temporary or world-writable place",
         "install the program in a root-owned directory (/usr/local/bin, /opt); if nobody put "
         "it there on purpose, treat it as a dropped implant",
         exe_temp_dir, baselinable=True),
    Rule("exe-hidden-dir", MEDIUM,
         "the listening program runs from a hidden folder of a home directory",
         "check who installed it; move real services out of hidden folders",
         exe_hidden_dir, baselinable=True),
    Rule("shell-listener", HIGH,
         "a shell or relay tool (bash, nc, ncat, socat) listens on a non-loopback address",
         "stop it unless it is a deliberate, temporary relay; a listening shell is a backdoor",
         shell_listener, baselinable=True),
    Rule("interpreter-listener", MEDIUM,
         "a script interpreter (python, perl, ruby, php) listens on a non-loopback address",
         "check the script it runs (the command line); bind development servers to 127.0.0.1",
         interpreter_listener, baselinable=True),
    Rule("kthread-impersonation", HIGH,
         "a user-space process named like a kernel thread ([kworker/0:1]) holds a socket",
         "kernel threads hold no sockets: treat the process as malicious and inspect "
         "/proc/PID/exe and /proc/PID/cmdline",
         kthread_impersonation),
    Rule("name-mismatch", MEDIUM,
         "the process name matches neither its executable nor its command line",
         "look at /proc/PID/exe and /proc/PID/cmdline to see what really runs",
         name_mismatch),
    Rule("unexpected-program", HIGH,
         "a well-known port is served by a program not expected there (22 not sshd, ...)",
         "find out what started the program and stop it, or declare it with --expect",
         unexpected_program, baselinable=True),
    Rule("unauthorized-use-port", MEDIUM,
         "the port is one for which IANA reports unauthorized use",
         "move the service to another port, or confirm what the program is",
         unauthorized_use_port, socket_level=True, baselinable=True),
    Rule("ephemeral-port-listener", LOW, "a TCP listener sits inside the ephemeral port range",
         "move the service outside ip_local_port_range, or add its port to "
         "net.ipv4.ip_local_reserved_ports",
         ephemeral_port_listener, socket_level=True, baselinable=True),
    Rule("hidden-socket", HIGH,
         "a socket one kernel view shows is missing from the other (netlink vs /proc/net)",
         "treat the host as compromised (a rootkit hides sockets from netstat-style tools): "
         "check kernel modules and taint, then examine it from trusted media"),
    Rule("hidden-port", HIGH,
         "a port refuses a trial bind while no visible socket uses it (--deep)",
         "treat the host as compromised (a socket hidden from every kernel view): examine it "
         "from trusted media"),
    Rule("baseline-new", HIGH, "a listener that the baseline does not list",
         "if it is expected, add it to the baseline (review, then --write-baseline or edit the "
         "file); otherwise stop the program"),
    Rule("baseline-changed", HIGH,
         "a baselined port is now served by another binary, hash, user or scope",
         "if the change is an upgrade or a deliberate reconfiguration, update the baseline "
         "entry; otherwise investigate the binary"),
    Rule("baseline-gone", LOW, "a baselined listener is not running",
         "start the service if it should run, or remove its entry from the baseline"),
    Rule("unix-world-writable", HIGH,
         "a root-held UNIX socket file is writable by every user (e.g. a 0666 docker.sock)",
         "make the socket file 0660 with a group of the users who need it (chmod/chgrp, or "
         "the service's SocketMode=/SocketGroup=)"),
    Rule("unix-abstract-host", MEDIUM,
         "an abstract UNIX socket of a root process in the host network namespace "
         "(reachable from containers sharing it: CVE-2020-15257)",
         "serve on a socket file with restrictive permissions instead, and do not run "
         "containers with the host's network namespace"),
    Rule("unix-stale-file", LOW, "a socket file under /run, /var/run or /tmp that no socket "
         "is bound to", "check it is not needed, then remove it: portscope check --clean PATH"),
)
RULE_BY_ID: Mapping[str, Rule] = {rule.id: rule for rule in RULES}


def make_finding(rule: Rule, l: Listener, hit: Hit) -> Finding:
    """A ``Finding`` of ``rule`` about listener ``l``."""
    sock = l.sock
    return Finding(rule.id, rule.severity, sock.proto.value, sock.local.address, sock.local.port,
                   l.pids[0] if l.pids else None, l.exe_path, l.user, hit.message,
                   hit.fix or rule.fix)


def evaluate(listeners: Iterable[Listener], ctx: AuditContext, *,
             skip: Iterable[str] = (), accepted: Iterable[Listener] = ()) -> list[Finding]:
    """Run every per-listener rule on every listener.

    Args:
        listeners: the listeners to judge.
        ctx: host facts.
        skip: rule ids not to run.
        accepted: listeners a baseline entry matched; ``baselinable`` rules skip them.
    Returns:
        the findings, in listener order, then rule order.
    """
    skipped = frozenset(skip)
    known = frozenset(accepted)
    active = [r for r in RULES if r.check is not None and r.id not in skipped]
    findings = []
    for l in listeners:
        baselined = l in known
        for rule in active:
            if (rule.socket_level and not l.first) or (rule.baselinable and baselined):
                continue
            hit = rule.check(l, ctx)
            if hit is not None:
                findings.append(make_finding(rule, l, hit))
    return findings
