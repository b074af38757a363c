"""``portscope audit``: every server socket judged by rules, and compared with a baseline.

- ``audit()`` takes an inventory (a listener snapshot with every owner), reads the facts about
  each holding program's executable, runs the rules of ``audit.rules``, compares two kernel
  views for hidden sockets, with ``deep`` probes every port by binding it, and with a baseline
  reports new, changed and gone listeners.
- ``write_baseline()`` records today's listeners by identity (``audit.baseline``).

Exit codes are the CLI's business: this package returns findings and raises
``BaselineError``, ``BackendError``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .. import services
from ..errors import BackendError
from ..filters import SocketFilter
from ..owners.process import user_name
from ..ports import HostPortRanges, host_port_ranges
from ..snapshot import take_snapshot
from ..types import Owner, Proto, Snapshot, Socket, State
from . import baseline as baseline_mod
from . import facts, rules
from .baseline import Baseline
from .rules import RULES, AuditContext, Finding, Listener, Severity

__all__ = ["AuditReport", "Baseline", "Finding", "Listener", "RULES", "Severity", "audit",
           "inventory", "judge", "listeners_of", "write_baseline"]

#: Extra comparisons of the two kernel views before a difference counts as hidden (churn
#: between dumps disappears in the next round).
RECHECK_ROUNDS = 2
#: Trial-bind sweeps (the first over every port, then over the candidates only).
PROBE_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of ``audit()``.

    Attributes:
        findings: most severe first, then by port.
        listeners: the server sockets judged (one per holding program).
        taken_at: when the inventory was taken (aware UTC).
        hostname: this host's name.
        complete: False when some holders could not be read (see ``warnings``).
        warnings: one line each, for people.
        unverified: listeners compared with the baseline without their program's identity.
    """

    findings: tuple[Finding, ...]
    listeners: tuple[Listener, ...]
    taken_at: datetime
    hostname: str
    complete: bool
    warnings: tuple[str, ...]
    unverified: int = 0

    def at_least(self, severity: Severity) -> tuple[Finding, ...]:
        """The findings of ``severity`` or worse."""
        return tuple(f for f in self.findings if f.severity.rank >= severity.rank)


def listeners_of(sock: Socket, inspector: facts.ExeInspector) -> list[Listener]:
    """The ``Listener`` records of one socket: one per holding program (executable, name,
    uid), or one without a program when no holder is visible."""
    if not sock.owners:
        return [Listener(sock, None, None, (), user_name(sock.uid))]
    groups: dict[tuple, list[Owner]] = {}
    for owner in sock.owners:
        p = owner.process
        groups.setdefault((p.exe, p.name, p.uid), []).append(owner)
    out = []
    for owners in groups.values():
        process = owners[0].process
        out.append(Listener(sock, process, inspector.facts(process),
                            tuple(sorted({o.pid for o in owners})), process.user,
                            first=not out))
    return out


def inventory(inspector: facts.ExeInspector | None = None, ranges: HostPortRanges | None = None
              ) -> tuple[Snapshot, list[Listener]]:
    """Today's server sockets with their programs' executable facts.

    Args:
        inspector: reads executable facts (a new one by default).
        ranges: this host's port ranges (read by default), to tell UDP clients from servers.
    Returns:
        ``(listener snapshot, listeners)``: the snapshot's server sockets (``is_server_socket``)
        as ``Listener`` records, in socket order.
    Raises:
        BackendError: the socket dump failed.
    """
    inspector = inspector or facts.ExeInspector()
    ranges = ranges or host_port_ranges()
    snapshot = take_snapshot(SocketFilter.listeners())
    listeners = [l for s in snapshot.sockets if rules.is_server_socket(s, ranges)
                 for l in listeners_of(s, inspector)]
    return snapshot, listeners


def _namespace(snapshot: Snapshot) -> tuple[int | None, int | None]:
    """``(the snapshot's namespace inode, the inode to record in baselines)``: the second is
    None for PID 1's namespace or when that cannot be told."""
    netns = snapshot.namespaces[0].inode if snapshot.namespaces else None
    return netns, netns if facts.is_initial_netns(netns) is False else None


def _proc_net(sock: Socket) -> str:
    return f"/proc/net/{sock.proto}{'6' if sock.family == 'ipv6' else ''} (netstat)"


def _hidden_socket_findings(netns: int | None, inspector: facts.ExeInspector,
                            warnings: list[str]) -> list[Finding]:
    """Compare the netlink and /proc/net views, re-checking differences (see
    ``rules.hidden_sockets``), and describe the sockets one of them keeps hiding."""
    candidates = None
    dump_warnings: list[str] = []
    try:
        for _ in range(1 + RECHECK_ROUNDS):
            first, first_warnings = facts.kernel_view("netlink", netns)
            second, second_warnings = facts.kernel_view("procfs", netns)
            dump_warnings = first_warnings + second_warnings
            candidates = rules.hidden_sockets(candidates, first, second)
            if not any(candidates):
                break
    except BackendError as exc:      # e.g. /proc/net unreadable in a hardened container
        warnings.append(f"hidden-socket rule skipped: {exc}")
        return []
    warnings.extend(dump_warnings)
    netlink = "netlink (ss)"
    hidden = [(s, netlink, _proc_net(s)) for s in candidates[0].values()] + \
             [(s, _proc_net(s), netlink) for s in candidates[1].values()]
    owners = facts.owners_of_inodes(s.inode for s, _, _ in hidden)
    return [rules.hidden_socket(listeners_of(s._replace(owners=owners.get(s.inode)),
                                             inspector)[0], shown_in, hidden_from,
                                1 + RECHECK_ROUNDS)
            for s, shown_in, hidden_from in hidden]


def _hidden_port_findings(netns: int | None, warnings: list[str]) -> list[Finding]:
    """Trial-bind every port; re-probe the refusals no visible socket explains."""
    refused, denied = facts.refused_binds()
    if denied:
        warnings.append(f"--deep: {denied} trial bind(s) were denied (ports below "
                        "ip_unprivileged_port_start need root) and not judged")
    visible, _ = facts.kernel_view("netlink", netns)
    candidates = rules.unexplained_refusals(refused, visible)
    for _ in range(PROBE_ROUNDS - 1):
        if not candidates:
            break
        refused, _ = facts.refused_binds(sorted(candidates))
        visible, _ = facts.kernel_view("netlink", netns)
        candidates &= rules.unexplained_refusals(refused, visible)
    return [rules.hidden_port(r, PROBE_ROUNDS) for r in sorted(candidates)]


#: where stale socket files are looked for (each walked to this depth, at most this many entries)
STALE_DIRS = ("/run", "/var/run", "/tmp")
STALE_DEPTH = 3
STALE_MAX_ENTRIES = 20000


def _unix_findings(skip: Collection[str], warnings: list[str]) -> list[Finding]:
    """The UNIX socket rules: root-held world-writable socket files, root's abstract listeners
    in the host network namespace, stale socket files under ``STALE_DIRS``. Socket files are
    matched to sockets by inode over every namespace this caller may enter; without that
    privilege, or when a namespace cannot be entered (setns refused by a sandbox), the
    stale-file rule is not run (another namespace may hold a file) and a warning says so.
    Stale files are looked for only when the caller's namespace is the host's (the files are
    the host's, whichever namespace is audited)."""
    from .. import namespaces, unixsock
    every = namespaces.may_enter()
    snapshot, unread = unixsock.read_everywhere(lambda strict: take_snapshot(
        SocketFilter(protos=frozenset({Proto.UNIX})), netns="all" if every else "host",
        must_enter=strict))
    host = _host_netns()
    findings: list[Finding] = []
    bound: set[tuple[int, int]] = set()
    own = namespaces.own_inode()
    for sock in snapshot.sockets:
        info = sock.unix
        if info.vfs_inode is not None:
            bound.add((info.vfs_dev, info.vfs_inode))
        if sock.netns != own:
            continue                    # another namespace's listeners: not this audit's
        if sock.state is not State.LISTEN and not (info.type == "dgram"
                                                   and info.peer_inode is None):
            continue
        if "unix-abstract-host" not in skip:
            finding = rules.unix_abstract_host(sock, sock.netns == host)
            if finding:
                findings.append(finding)
        if "unix-world-writable" not in skip and info.vfs_inode is not None \
                and sock.local.address.startswith("/"):
            file = unixsock.socket_file(sock.local.address)
            if file.bound_by(sock):
                finding = rules.unix_world_writable(sock, sock.local.address, file.mode)
                if finding:
                    findings.append(finding)
    if "unix-stale-file" in skip or host != own:
        return findings                 # socket files belong to the host's audit
    if unread is not None:
        warnings.append(f"unix-stale-file not run: {unread} (it may hold socket files)")
        return findings
    if not every and len(namespaces.discover()) > 1:
        warnings.append("unix-stale-file not run: other network namespaces, which may hold "
                        "socket files, need root to be read")
        return findings
    for path in _socket_files(STALE_DIRS):
        file = unixsock.socket_file(path)
        if file.is_socket and (file.dev, file.inode & 0xFFFFFFFF) not in bound:
            findings.append(rules.unix_stale_file(path))
    return findings


def _host_netns() -> int | None:
    """The host's network namespace: PID 1's; when that cannot be read (a sandbox), the
    caller's own unless it has a name in /run/netns (``ip netns``: not the host's)."""
    from .. import namespaces
    try:
        return os.stat("/proc/1/ns/net").st_ino
    except OSError:
        own = namespaces.own_inode()
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return own
    for name in names:
        try:
            if os.stat(os.path.join("/run/netns", name)).st_ino == own:
                return None
        except OSError:
            continue                    # deleted since it was listed
    return own


def _socket_files(roots: Sequence[str]) -> list[str]:
    """Socket files under ``roots`` (symbolic links not followed, each real directory once,
    ``STALE_DEPTH`` levels, ``STALE_MAX_ENTRIES`` entries at most)."""
    found: list[str] = []
    seen: set[str] = set()
    entries = 0
    stack = [(root, 0) for root in reversed(roots)]
    while stack and entries < STALE_MAX_ENTRIES:
        path, depth = stack.pop()
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(path) as it:
                for entry in it:
                    entries += 1
                    try:
                        if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                            found.append(entry.path)
                        elif depth < STALE_DEPTH and entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, depth + 1))
                    except OSError:
                        continue       # gone since it was listed
        except OSError:
            continue                   # missing, or not readable by this user
    return found


def audit(*, baseline: Baseline | None = None, deep: bool = False,
          expected_programs: Mapping[tuple[int, str], Collection[str]] | None = None,
          skip: Collection[str] = ()) -> AuditReport:
    """Audit the caller's network namespace.

    Args:
        baseline: compare with these expected listeners (``baseline.load()``).
        deep: also trial-bind every port (``hidden-port``; takes seconds, see
            ``facts.refused_binds``).
        expected_programs: ``(port, proto)`` -> program names, replacing the entries of
            ``rules.EXPECTED_PROGRAMS`` for those ports (an empty collection turns the check
            off for that port).
        skip: rule ids not to run.
    Returns:
        an ``AuditReport``.
    Raises:
        ValueError: an unknown rule id in ``skip``.
        BackendError: a socket dump failed.
    Privileges: as root every holder and executable is read; otherwise other users' programs
    are unknown (``complete`` is False) and their rules cannot fire.
    """
    check_skip(skip)
    inspector = facts.ExeInspector()
    ranges = host_port_ranges()
    snapshot, listeners = inventory(inspector, ranges)
    return judge(snapshot, listeners, ranges, baseline=baseline, deep=deep,
                 expected_programs=expected_programs, skip=skip, inspector=inspector)


def check_skip(skip: Collection[str]) -> None:
    """Raise ``ValueError`` naming the first id in ``skip`` that is not a rule id."""
    unknown = sorted(set(skip) - rules.RULE_BY_ID.keys())
    if unknown:
        raise ValueError(f"unknown rule {unknown[0]!r}")


def judge(snapshot: Snapshot, listeners: Sequence[Listener], ranges: HostPortRanges, *,
          baseline: Baseline | None = None, deep: bool = False,
          expected_programs: Mapping[tuple[int, str], Collection[str]] | None = None,
          skip: Collection[str] = (), inspector: facts.ExeInspector | None = None
          ) -> AuditReport:
    """Judge the ``listeners`` of a snapshot of the caller's network namespace (the
    ``audit()`` after its inventory; the exporter calls it with the listeners of its own
    snapshot).

    Args:
        snapshot: the snapshot the listeners come from (its first namespace, time, host name,
            completeness and warnings go into the report).
        listeners: its server sockets as ``Listener`` records (``listeners_of``).
        ranges: this host's port ranges.
        inspector: reads the executable facts of hidden sockets' holders (a new one by
            default).
        baseline, deep, expected_programs, skip: as for ``audit()`` (``skip`` is not checked
            here: ``check_skip``).
    Returns:
        an ``AuditReport``.
    Raises:
        BackendError: a socket dump of the hidden-socket or hidden-port rule failed.
    """
    inspector = inspector or facts.ExeInspector()
    netns, netns_key = _namespace(snapshot)
    warnings = list(snapshot.warnings)
    expected = {**rules.EXPECTED_PROGRAMS,
                **{key: frozenset(names) for key, names in (expected_programs or {}).items()}}
    ctx = AuditContext(ranges, expected, services.is_unauthorized_use)
    comparison = None
    if baseline is not None:
        comparison = baseline_mod.compare(baseline, listeners, netns_key)
    findings = rules.evaluate(listeners, ctx, skip=skip,
                              accepted=comparison.accepted if comparison else ())
    if "hidden-socket" not in skip:
        findings += _hidden_socket_findings(netns, inspector, warnings)
    if deep and "hidden-port" not in skip:
        findings += _hidden_port_findings(netns, warnings)
    if comparison is not None:
        findings += [f for f in comparison.findings if f.rule not in skip]
    if not {"unix-world-writable", "unix-abstract-host", "unix-stale-file"} <= set(skip):
        findings += _unix_findings(skip, warnings)
    findings.sort(key=lambda f: (-f.severity.rank, f.port or 0, f.proto or "", f.address or "",
                                 f.rule, f.pid or 0))
    return AuditReport(tuple(findings), tuple(listeners), snapshot.taken_at, snapshot.hostname,
                       snapshot.complete, tuple(warnings),
                       comparison.unverified if comparison else 0)


def write_baseline(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Record today's listeners as a baseline file at ``path`` (atomically, see
    ``baseline.save``).

    Returns:
        ``(entries written, entries without a program identity)``: listeners whose program
        could not be read are recorded by protocol, port and address only.
    Raises:
        BaselineError: the file could not be written (an existing one is left as it was).
        BackendError: the socket dump failed.
    """
    snapshot, listeners = inventory()
    _, netns = _namespace(snapshot)
    recorded = []
    for l in listeners:
        note = None
        if l.process is not None:
            note = l.process.name or ""
            if l.process.unit:
                note += f" ({l.process.unit})"
        recorded.append((baseline_mod.identity(l, netns), note))
    text = baseline_mod.render(recorded, host=snapshot.hostname,
                               when=snapshot.taken_at.isoformat(timespec="seconds"))
    baseline_mod.save(path, text)
    idents = {ident for ident, _ in recorded}
    return len(idents), sum(1 for i in idents if not i.verified)
