"""``portscope serve``: Prometheus metrics over HTTP or into a node_exporter textfile, and the
alerting rules and Grafana dashboard shipped with them.

Exit codes: 0 stopped by SIGTERM/SIGINT, or the textfile/rules/dashboard written; 2 usage error
(bad --listen, a non-loopback address without --allow-remote); 3 the address cannot be bound
(in use), the first scan failed, prometheus_client is missing; 4 a namespace cannot be entered.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from importlib import resources

from ...errors import BackendError, InvalidInput
from ...ports import parse_endpoint, shown
from .. import common
from ..status import ExitStatus

DEFAULT_LISTEN = "127.0.0.1:9623"
RULES_FILE = "prometheus-rules.yml"
DASHBOARD_FILE = "grafana-dashboard.json"
MAX_INTERVAL_S = 86400.0

DESCRIPTION = f"""\
Serve this host's listeners, their programs and connection counts, socket counts, audit
findings and baseline drift as Prometheus metrics on http://{DEFAULT_LISTEN}/metrics (no PID
labels, no per-connection series). A scan is cached for --interval seconds, so several scrapers
cost one scan; a scrape waits at most for one scan. Audit findings and --baseline drift cover
the network namespace portscope runs in (use ip netns exec for another).

Loopback only unless --allow-remote: put TLS (--tls-cert/--tls-key) or a reverse proxy with
authentication in front of a non-loopback address.

  portscope serve                          # http://{DEFAULT_LISTEN}/metrics
  portscope serve --textfile /var/lib/prometheus/node-exporter/portscope.prom
  portscope serve --print-rules > /etc/prometheus/rules.d/portscope.yml

exit: 0 stopped by SIGTERM/SIGINT (or the file written), 2 bad input, 3 cannot bind or scan,
4 a namespace cannot be entered"""


def register(sub) -> None:
    parser = sub.add_parser(
        "serve", help="Prometheus metrics, alerting rules and a Grafana dashboard",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                        help=f"address to serve /metrics on (default {DEFAULT_LISTEN}; port 0: "
                             "the kernel picks one, said on stderr)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --listen address (anyone who reaches it "
                             "sees every listener and program of this host)")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    parser.add_argument("--interval", default="10", metavar="S",
                        help="serve a scan from cache for S seconds (default 10)")
    parser.add_argument("--baseline", metavar="FILE",
                        help="export portscope_baseline_drift against this audit baseline "
                             "(portscope audit --write-baseline)")
    common.add_netns_option(parser, several=True)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--textfile", metavar="PATH",
                     help="write the metrics once to PATH (atomic rename) for node_exporter's "
                          "textfile collector, and exit; run it from a timer")
    out.add_argument("--print-rules", action="store_true",
                     help="print the Prometheus alerting rules and exit")
    out.add_argument("--print-dashboard", action="store_true",
                     help="print the Grafana dashboard (JSON) and exit")
    parser.set_defaults(run=run)


def parse_interval(text: str) -> float:
    """``--interval``: seconds, a decimal number 0-86400."""
    try:
        value = float(text) if text.strip() == text and text.isascii() else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_INTERVAL_S:       # also rejects nan and inf
        raise InvalidInput(f"invalid interval {shown(text)}: expected seconds, 0-86400")
    return value


def parse_listen(text: str, allow_remote: bool) -> tuple[str, int]:
    """``--listen ADDR:PORT`` (or ``PORT`` on 127.0.0.1): a loopback address unless
    ``allow_remote``."""
    import ipaddress
    address, port = parse_endpoint(text, allow_zero=True)
    address = address or "127.0.0.1"
    ip = ipaddress.ip_address(address.partition("%")[0])
    if not ip.is_loopback and not allow_remote:
        raise InvalidInput(f"--listen {shown(text)} is not a loopback address: add "
                           "--allow-remote (and TLS or a reverse proxy with authentication)")
    return address, port


def shipped_text(name: str) -> str:
    """A file shipped in ``portscope/data``."""
    return resources.files("portscope").joinpath("data", name).read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    if args.print_rules or args.print_dashboard:
        sys.stdout.write(shipped_text(RULES_FILE if args.print_rules else DASHBOARD_FILE))
        return ExitStatus.OK
    interval_s = parse_interval(args.interval)
    address, port = parse_listen(args.listen, args.allow_remote)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together")
    for path in filter(None, (args.tls_cert, args.tls_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        from ... import exporter
    except ImportError:
        raise BackendError("portscope serve needs prometheus_client: "
                           "pip install 'portscope[serve]'") from None
    from ... import namespaces
    from ...audit import baseline as baseline_file
    spec = common.netns_choice(args)
    namespaces.require_entry(namespaces.select(spec))      # bad name: exit 2; no right: 4
    loaded = baseline_file.load(args.baseline) if args.baseline is not None else None
    collector = exporter.PortscopeCollector(netns=spec, interval_s=interval_s, baseline=loaded)
    reg = exporter.registry(collector)
    if args.textfile is not None:
        first = _first_scan(collector)
        try:
            exporter.write_textfile(reg, args.textfile)
        except OSError as exc:
            raise BackendError(f"cannot write {args.textfile}: {exc.strerror or exc}") from None
        _report_warnings(first)
        return ExitStatus.OK
    try:
        server, bound = exporter.serve(reg, address, port, certfile=args.tls_cert,
                                       keyfile=args.tls_key)
    except ssl.SSLError as exc:
        # prometheus_client re-raises with its message as the only argument
        why = exc.args[0] if len(exc.args) == 1 else getattr(exc, "reason", None) or exc
        raise BackendError(f"cannot use --tls-cert/--tls-key: {why}") from None
    except OSError as exc:
        raise BackendError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        first = _first_scan(collector)
        host = f"[{address}]" if ":" in address else address
        scheme = "https" if args.tls_cert else "http"
        common.warn(f"serving {scheme}://{host}:{bound}/metrics (a scan is cached for "
                    f"{interval_s:g} s)")
        _report_warnings(first)
        stop.wait()
    finally:
        server.shutdown()
    return ExitStatus.OK


def _first_scan(collector):
    """Scan once, so that a scan that cannot work fails at start, not at every scrape."""
    first, _ = collector.current()
    if collector.last_error is not None:
        raise BackendError(f"scan failed: {collector.last_error}")
    return first


def _report_warnings(scan) -> None:
    """The first scan's diagnostics (owners that cannot be read, and why), once at start."""
    for message in scan.warnings:
        common.warn(message)
