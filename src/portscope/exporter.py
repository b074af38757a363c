"""Prometheus metrics of this host's sockets: the collector behind ``portscope serve``.

The only module that imports ``prometheus_client`` (the ``serve`` extra). ``PortscopeCollector``
is a custom collector for a private ``CollectorRegistry`` (``registry()``): nothing is scanned
at import or registration, only when a scrape asks.

Metrics (no PID label and no per-connection series, so that the number of series follows the
number of listeners, not of connections or restarts):

==================================  =======  ==================================================
name                                type     labels
==================================  =======  ==================================================
portscope_listener_info             gauge    proto, family, address, port, scope, netns,
                                             process, exe, user, unit, container (value 1)
portscope_listener_connections      gauge    proto, family, address, port, netns, state
portscope_sockets                   gauge    proto, state
portscope_socket_owner_unknown      gauge    reason
portscope_audit_findings            gauge    rule, severity
portscope_baseline_drift            gauge    kind (new, changed, gone); with a baseline only
portscope_scan_duration_seconds     gauge    (none)
portscope_scan_complete             gauge    (none)
portscope_scrape_errors_total       counter  (none)
==================================  =======  ==================================================

A listener is a server socket as the audit sees it (TCP LISTEN or BOUND_INACTIVE, an unconnected
UDP socket outside the ephemeral range), one ``portscope_listener_info`` series per program
holding it; sockets that share every label (an SO_REUSEPORT group, forked workers) are one
series. The audit (``portscope.audit.judge``) and the baseline comparison cover the listeners of
the caller's own network namespace, as ``portscope audit`` does; the rules that take views of
their own (``PERIODIC_RULES``: hidden sockets, UNIX socket files) run at most every
``PERIODIC_EVERY_S``, and hidden-port (``--deep``) not at all.

Scans are cached for ``interval_s``: several scrapers share one scan, and a scrape waits at
most for one scan (the one running, or the one it starts).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import audit, namespaces
from .audit import facts, rules
from .audit.baseline import Baseline
from .identity import canonical_address, is_loopback, is_wildcard
from .errors import PortscopeError
from .filters import SocketFilter
from .ports import host_port_ranges
from .render.columns import container_name, safe
from .snapshot import accepted_connections, take_snapshot
from .types import NetNamespace, OwnerUnknown, Snapshot, Socket

DEFAULT_INTERVAL_S = 10.0
LISTENER_LABELS = ("proto", "family", "address", "port", "scope", "netns", "process", "exe",
                   "user", "unit", "container")
CONNECTION_LABELS = ("proto", "family", "address", "port", "netns", "state")
DRIFT_KINDS = {"baseline-new": "new", "baseline-changed": "changed", "baseline-gone": "gone"}
#: audit rules the exporter does not run: hidden-port trial-binds every port (seconds)
NOT_RUN = frozenset({"hidden-port"})
#: audit rules that take views of their own, costing more than the rest of a scan: the
#: hidden-socket comparison (two more full kernel dumps, netlink and /proc/net) and the UNIX
#: socket rules (a UNIX snapshot with owners, a walk of /run, /var/run and /tmp). They run at
#: most every PERIODIC_EVERY_S, their findings carried between.
PERIODIC_RULES = frozenset({"hidden-socket", "unix-world-writable", "unix-abstract-host",
                            "unix-stale-file"})
PERIODIC_EVERY_S = 300.0


def label_text(text: str | None) -> str:
    """``text`` (a process name, path, user or unit) as a label value: empty for None; control
    characters shown as ``\\xNN`` as on a terminal (``render.columns.safe``: label values reach
    terminals and dashboards); bytes that were not UTF-8 (kept by Python as lone surrogates) as
    ``\\xNN``, so that the exposition stays valid UTF-8."""
    if not text:
        return ""
    return safe(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def scope(sock: Socket) -> str:
    """Who can reach a listener: ``loopback`` (127.0.0.0/8, ::1), ``wildcard`` (every
    address of its family: ``0.0.0.0``, ``::``) or ``address`` (one non-loopback address)."""
    if is_loopback(sock.local.address):
        return "loopback"
    return "wildcard" if is_wildcard(sock.local.address) else "address"


def netns_label(inode: int | None, names: dict[int, str]) -> str:
    """A namespace's label value: its name (``host`` for the caller's own, ``ip netns`` or
    Docker names), else its inode number; empty when unknown."""
    if inode is None:
        return ""
    return names.get(inode) or str(inode)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """One scan's metric families and facts about it.

    Attributes:
        families: the metric families (without the error counter).
        duration_s: how long the scan took, in seconds.
        complete: False when some owners could not be read or the scan failed.
        warnings: the snapshot's and the audit's diagnostics, one line each, for people.
    """

    families: tuple[Metric, ...]
    duration_s: float
    complete: bool
    warnings: tuple[str, ...] = ()


def families(snapshot: Snapshot, listeners: Sequence[audit.Listener],
             report: audit.AuditReport | None, *, baseline: bool) -> list[Metric]:
    """The metric families of one scan (pure: no system access).

    Args:
        snapshot: every TCP and UDP socket of the covered namespaces, with owners.
        listeners: its server sockets, one ``Listener`` per holding program.
        report: the audit of the caller's namespace, None when that namespace is not covered.
        baseline: True when the report compared a baseline (``portscope_baseline_drift``).
    Returns:
        ``prometheus_client`` metric families, in the order of the module's table.
    """
    names = {ns.inode: ns.name for ns in snapshot.namespaces if ns.name}
    info = GaugeMetricFamily("portscope_listener_info",
                             "A listener (server socket) and the program holding it; 1 while "
                             "it exists.", labels=LISTENER_LABELS)
    seen: set[tuple[str, ...]] = set()
    for l in listeners:
        s = l.sock
        process = l.process
        labels = (s.proto.value, s.family.value, canonical_address(s.local.address),
                  str(s.local.port), scope(s), netns_label(s.netns, names),
                  label_text(process.name if process else None), label_text(l.exe_path),
                  label_text(l.user), label_text(process.unit if process else None),
                  label_text(container_name(s)))
        if labels not in seen:
            seen.add(labels)
            info.add_metric(labels, 1)
    connections = GaugeMetricFamily("portscope_listener_connections",
                                    "Connections accepted by a TCP listener and still held by "
                                    "a process, by state.", labels=CONNECTION_LABELS)
    counts: Counter[tuple[str, ...]] = Counter()
    by_netns: dict[int | None, list[Socket]] = {}
    for s in snapshot.sockets:
        by_netns.setdefault(s.netns, []).append(s)
    for part in by_netns.values():
        for i, accepted in accepted_connections(part).items():
            s = part[i]
            key = (s.proto.value, s.family.value, canonical_address(s.local.address),
                   str(s.local.port), netns_label(s.netns, names))
            counts[(*key, "ESTABLISHED")] += 0      # every listener has its ESTABLISHED series
            for c in accepted:
                counts[(*key, c.state.value)] += 1
    for labels, value in sorted(counts.items()):
        connections.add_metric(labels, value)
    sockets = GaugeMetricFamily("portscope_sockets", "TCP and UDP sockets by state.",
                                labels=("proto", "state"))
    for (proto, state), value in sorted(Counter((s.proto.value, s.state.value)
                                                for s in snapshot.sockets).items()):
        sockets.add_metric((proto, state), value)
    unknown = GaugeMetricFamily("portscope_socket_owner_unknown",
                                "Sockets without a visible owner, by reason (permission: "
                                "processes this user cannot read; kernel: TIME_WAIT and "
                                "orphans; vanished: closed during the scan).",
                                labels=("reason",))
    reasons = Counter(s.owner_unknown.value for s in snapshot.sockets if s.owner_unknown)
    for reason in OwnerUnknown:
        if reason is not OwnerUnknown.DNAT:
            unknown.add_metric((reason.value,), reasons.get(reason.value, 0))
    out: list[Metric] = [info, connections, sockets, unknown]
    if report is not None:
        findings = GaugeMetricFamily("portscope_audit_findings",
                                     "Findings of portscope audit's rules in this network "
                                     "namespace.", labels=("rule", "severity"))
        by_rule = Counter(f.rule for f in report.findings)
        for rule in rules.RULES:
            if rule.id not in DRIFT_KINDS and rule.id not in NOT_RUN:
                findings.add_metric((rule.id, rule.severity.value), by_rule.get(rule.id, 0))
        out.append(findings)
        if baseline:
            drift = GaugeMetricFamily("portscope_baseline_drift",
                                      "Listeners that differ from the baseline: new (no entry "
                                      "matches), changed (an entry's port served by another "
                                      "program, hash, user or scope), gone (a single-port "
                                      "entry nothing serves).", labels=("kind",))
            for rule_id, kind in DRIFT_KINDS.items():
                drift.add_metric((kind,), by_rule.get(rule_id, 0))
            out.append(drift)
    return out


class PortscopeCollector(Collector):
    """A ``prometheus_client`` collector that scans this host's sockets when scraped.

    Args:
        netns: ``--netns`` value: ``host`` or None (the caller's own), ``all``, a name or a
            PID (see ``namespaces.select``).
        interval_s: how long a scan is served from cache, in seconds (0: every scrape scans).
        baseline: compare the caller's namespace's listeners with it
            (``portscope_baseline_drift``).
        clock: monotonic time in seconds (for tests).
    Scrapes: ``collect()`` serves the cached scan while it is younger than ``interval_s``;
    otherwise the first scrape runs a scan and the others wait for it. A failed scan counts in
    ``portscope_scrape_errors_total``, and the scrape gets the scan metrics only
    (``portscope_scan_complete`` 0), never an error page.
    """

    def __init__(self, *, netns: str | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 baseline: Baseline | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._netns = netns
        self._interval_s = interval_s
        self._baseline = baseline
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: ScanResult | None = None
        self._scanned_at = 0.0
        self._errors = 0
        self._digests: dict = {}        # executable hashes, by file identity, kept across scans
        self._periodic: tuple[audit.Finding, ...] = ()   # the last PERIODIC_RULES findings
        self._periodic_at: float | None = None
        self.last_error: str | None = None

    def describe(self) -> list[Metric]:
        """Nothing: describing would need a scan (the registry is private, not auto-described)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics of the current scan (see the class doc)."""
        result, errors = self.current()
        yield from result.families
        duration = GaugeMetricFamily("portscope_scan_duration_seconds",
                                     "How long the last scan took, in seconds.")
        duration.add_metric((), result.duration_s)
        complete = GaugeMetricFamily("portscope_scan_complete",
                                     "1 when the last scan succeeded and read every socket's "
                                     "owner, else 0.")
        complete.add_metric((), 1 if result.complete else 0)
        failed = CounterMetricFamily("portscope_scrape_errors",
                                     "Scans that failed (the scrape then has no socket series).")
        failed.add_metric((), errors)
        yield from (duration, complete, failed)

    def current(self) -> tuple[ScanResult, int]:
        """``(the cached or a new scan, scan failures so far)``."""
        arrived = self._clock()
        with self._lock:
            # a scan that ended after this scrape arrived is fresh enough for it: a scrape
            # waits for at most one scan, even with interval 0
            if self._cached is None or (self._scanned_at < arrived and
                                        arrived - self._scanned_at >= self._interval_s):
                self._cached = self._scan()
                self._scanned_at = self._clock()
            return self._cached, self._errors

    def _scan(self) -> ScanResult:
        started = time.monotonic()
        try:
            snapshot, listeners, report = self.measure()
        except (PortscopeError, OSError) as exc:
            self._errors += 1
            self.last_error = str(exc)
            return ScanResult((), time.monotonic() - started, False)
        metrics = families(snapshot, listeners, report, baseline=self._baseline is not None)
        return ScanResult(tuple(metrics), time.monotonic() - started,
                          snapshot.complete and (report is None or report.complete),
                          report.warnings if report is not None else snapshot.warnings)

    def measure(self) -> tuple[Snapshot, list[audit.Listener], audit.AuditReport | None]:
        """One scan: ``(snapshot of every TCP and UDP socket, its listeners, the audit of the
        caller's namespace or None when it is not covered)``.

        Raises:
            BackendError: a socket dump failed; AccessDenied: a namespace cannot be entered.
        """
        snapshot = take_snapshot(SocketFilter(), netns=self._netns)
        inspector = facts.ExeInspector(digests=self._digests)
        ranges = host_port_ranges()
        listeners = [l for s in snapshot.sockets if rules.is_server_socket(s, ranges)
                     for l in audit.listeners_of(s, inspector)]
        own = namespaces.own_inode()
        if not any(ns.inode == own for ns in snapshot.namespaces):
            return snapshot, listeners, None
        mine = [l for l in listeners if l.sock.netns == own]
        view = Snapshot((), snapshot.taken_at, snapshot.hostname, snapshot.backend,
                        snapshot.complete, snapshot.warnings, (NetNamespace(own or 0),))
        now = self._clock()
        due = self._periodic_at is None or now - self._periodic_at >= PERIODIC_EVERY_S
        report = audit.judge(view, mine, ranges, baseline=self._baseline, inspector=inspector,
                             skip=() if due else PERIODIC_RULES)
        if due:
            self._periodic = tuple(f for f in report.findings if f.rule in PERIODIC_RULES)
            self._periodic_at = now
        else:
            report = dataclasses.replace(report, findings=report.findings + self._periodic)
        return snapshot, listeners, report


def registry(collector: PortscopeCollector) -> CollectorRegistry:
    """A private registry holding ``collector`` only (no process or platform metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (version 0.0.4), UTF-8."""
    from prometheus_client import generate_latest
    return generate_latest(reg)


def serve(reg: CollectorRegistry, address: str, port: int, *, certfile: str | None = None,
          keyfile: str | None = None) -> tuple[object, int]:
    """Serve ``/metrics`` of ``reg`` over HTTP (HTTPS with ``certfile``/``keyfile``) on
    ``address``:``port`` from a daemon thread.

    Returns:
        ``(the server, with .shutdown(), the port bound)``: ``port`` 0 lets the kernel choose.
    Raises:
        OSError: the address cannot be bound (in use, not on this host); ssl.SSLError: bad
            certificate or key.
    """
    from prometheus_client import start_http_server
    server, _thread = start_http_server(port, addr=address, registry=reg, certfile=certfile,
                                        keyfile=keyfile)
    return server, server.server_port


def write_textfile(reg: CollectorRegistry, path: str) -> None:
    """Write the metrics to ``path`` for node_exporter's textfile collector: a temporary file
    in the same directory renamed over ``path`` (readers see the old file or the new one).

    Raises:
        OSError: the directory is not writable.
    """
    from prometheus_client import write_to_textfile
    write_to_textfile(path, reg)

