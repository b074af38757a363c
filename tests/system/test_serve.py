"""``portscope serve`` against real components: real sockets, the real exporter process, a real
Prometheus server and promtool (Debian's prometheus package; ``.ci/run`` extracts it and sets
``PORTSCOPE_PROMETHEUS_BIN`` and ``PORTSCOPE_REQUIRE_PROMETHEUS``).

One Prometheus is started per session on a kernel-chosen loopback port, with a private data
directory and rules derived from the shipped ones (``offset 1h`` shortened so that a new
listener is new for seconds, not an hour); it scrapes one ``portscope serve`` process on a port
the kernel chose. Both are stopped by PID at the end, even when a test fails. Other processes on
the machine open and close listeners too: assertions name the test's own port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

REQUIRED = bool(os.environ.get("PORTSCOPE_REQUIRE_PROMETHEUS"))
try:
    import prometheus_client  # noqa: F401 - the serve extra (also in the test extra)
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("prometheus_client is not installed (pip install -e '.[test]')",
                allow_module_level=True)

from netns import netns  # noqa: F401  (the fixture)
from portscope import exporter
from portscope.audit import RULES

BIN_DIR = os.environ.get("PORTSCOPE_PROMETHEUS_BIN")
PROMETHEUS = shutil.which("prometheus", path=BIN_DIR) if BIN_DIR else shutil.which("prometheus")
PROMTOOL = shutil.which("promtool", path=BIN_DIR) if BIN_DIR else shutil.which("promtool")
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "prometheus")
#: how the test rules shorten the shipped "new listener" window
NEW_WINDOW = "offset 15s"
NEW_WINDOW_S = 15


def _require_binaries() -> None:
    if PROMETHEUS and PROMTOOL:
        return
    message = ("prometheus and promtool not found (apt-get install prometheus, or set "
               "PORTSCOPE_PROMETHEUS_BIN to the directory holding them)")
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.1):
    """Poll ``predicate`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


def cli_run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "portscope", *args], capture_output=True,
                          text=True, timeout=timeout_s)


def shipped(flag: str) -> str:
    result = cli_run("serve", flag)
    assert result.returncode == 0, result.stderr
    return result.stdout


def listening_socket(family: int = socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    s.listen()
    return s


def own_comm() -> str:
    with open("/proc/self/comm", encoding="utf-8") as f:
        return f.read().strip()


class Exporter:
    """A ``portscope serve`` process on a kernel-chosen loopback port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portscope", "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        if not match:
            self.stop()
            pytest.fail(f"portscope serve did not start: {line!r}")
        self.port = int(match.group(1))

    def scrape(self, accept: str | None = None) -> tuple[str, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                         headers={"Accept": accept} if accept else {})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.headers["Content-Type"], reply.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            self.proc.stderr.close()


class Prometheus:
    """A Prometheus server on loopback with a private data directory."""

    def __init__(self, workdir, targets: list[str], rules_text: str) -> None:
        self.dir = workdir
        (workdir / "rules.yml").write_text(rules_text)
        listed = ", ".join(f"'{t}'" for t in targets)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            f"scrape_configs: [{{job_name: portscope, static_configs: [{{targets: [{listed}]}}]}}]\n")
        check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = None
        for _attempt in range(5):        # the port is picked by binding and closing: retry
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=self.log, stderr=subprocess.STDOUT)
            if self._ready():
                return
            self.stop()
        pytest.fail(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=30) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def derived_rules() -> str:
    """The shipped rules with the new-listener window shortened to ``NEW_WINDOW``."""
    lines = shipped("--print-rules").splitlines(keepends=True)
    code = [i for i, line in enumerate(lines)
            if "offset 1h" in line and not line.lstrip().startswith("#")]
    assert len(code) == 2, "the derivation below no longer matches the rules"
    for i in code:
        lines[i] = lines[i].replace("offset 1h", NEW_WINDOW)
    return "".join(lines)


@pytest.fixture(scope="session")
def serve_process():
    exp = Exporter("--netns", "host", "--interval", "0.5")
    try:
        yield exp
    finally:
        exp.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, serve_process):
    _require_binaries()
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"),
                      [f"127.0.0.1:{serve_process.port}"], derived_rules())
    try:
        target = f'up{{instance="127.0.0.1:{serve_process.port}"}} == 1'
        wait_for(lambda: prom.query(target), 60, "the first scrape of portscope serve")
        yield prom
    finally:
        prom.stop()


# --- promtool: the shipped rules and the exposition ---------------------------------------------

def test_shipped_rules_pass_promtool_check(tmp_path):
    _require_binaries()
    path = tmp_path / "rules.yml"
    path.write_text(shipped("--print-rules"))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_shipped_rule_has_unit_tests_that_pass(tmp_path):
    _require_binaries()
    rules_text = shipped("--print-rules")
    (tmp_path / "rules.yml").write_text(rules_text)
    shutil.copy(os.path.join(FIXTURES, "rules_test.yml"), tmp_path / "rules_test.yml")
    alerts = set(re.findall(r"^\s*- alert: (\S+)", rules_text, re.MULTILINE))
    fixtures = (tmp_path / "rules_test.yml").read_text()
    tested = set(re.findall(r"alertname: (\S+)", fixtures))
    assert alerts == tested, f"rules without unit tests: {sorted(alerts - tested)}"
    # every rule's test expects it to fire at some point (an empty expectation proves nothing)
    for name in alerts:
        assert re.search(rf"alertname: {name}\n\s*exp_alerts:\n\s*- exp_labels", fixtures), name
    result = subprocess.run([PROMTOOL, "test", "rules", "rules_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_textfile_passes_promtool_check_metrics_and_parses(tmp_path):
    _require_binaries()
    sock = listening_socket()
    port = sock.getsockname()[1]
    path = tmp_path / "portscope.prom"
    path.write_text("old contents\n")
    try:
        result = cli_run("serve", "--netns", "host", "--textfile", str(path))
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["portscope.prom"]      # renamed, nothing left over
    text = path.read_text()
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    by_name = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "portscope_listener_info": ("gauge", set(exporter.LISTENER_LABELS)),
        "portscope_listener_connections": ("gauge", set(exporter.CONNECTION_LABELS)),
        "portscope_sockets": ("gauge", {"proto", "state"}),
        "portscope_socket_owner_unknown": ("gauge", {"reason"}),
        "portscope_audit_findings": ("gauge", {"rule", "severity"}),
        "portscope_scan_duration_seconds": ("gauge", set()),
        "portscope_scan_complete": ("gauge", set()),
        "portscope_scrape_errors": ("counter", set()),
    }
    assert set(by_name) == set(expected)          # no baseline: no drift metric
    for name, (kind, labels) in expected.items():
        family = by_name[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample)
    mine = [s.labels for s in by_name["portscope_listener_info"].samples
            if s.labels["port"] == str(port)]
    assert mine == [{"proto": "tcp", "family": "ipv4", "address": "127.0.0.1",
                     "port": str(port), "scope": "loopback", "netns": "host",
                     "process": own_comm(), "exe": os.path.realpath(sys.executable),
                     "user": "root" if os.geteuid() == 0 else mine[0]["user"], "unit": "",
                     "container": ""}]
    conns = [s for s in by_name["portscope_listener_connections"].samples
             if s.labels["port"] == str(port)]
    assert [(s.labels["state"], s.value) for s in conns] == [("ESTABLISHED", 0)]
    findings = {s.labels["rule"] for s in by_name["portscope_audit_findings"].samples}
    assert findings == {r.id for r in RULES} - set(exporter.DRIFT_KINDS) - exporter.NOT_RUN


def test_baseline_drift_counts_new_and_gone(tmp_path):
    baseline = tmp_path / "baseline.toml"
    write = cli_run("audit", "--write-baseline", str(baseline))
    assert write.returncode == 0, write.stderr
    # one listener the baseline lacks, and one entry nothing serves
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    gone_port = gone.getsockname()[1]
    gone.close()
    with open(baseline, "a", encoding="utf-8") as f:
        f.write(f'\n[[listener]]\nproto = "tcp"\nport = {gone_port}\naddress = "127.0.0.1"\n')
    sock = listening_socket()
    path = tmp_path / "portscope.prom"
    try:
        result = cli_run("serve", "--netns", "host", "--baseline", str(baseline),
                         "--textfile", str(path))
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr
    drift = {s.labels["kind"]: s.value for f in text_string_to_metric_families(path.read_text())
             if f.name == "portscope_baseline_drift" for s in f.samples}
    assert set(drift) == {"new", "changed", "gone"}
    assert drift["new"] >= 1 and drift["gone"] >= 1     # others' listeners may come and go


# --- the collector's cache ------------------------------------------------------------------------

class CountingCollector(exporter.PortscopeCollector):
    """The real collector, counting its scans."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scans = 0

    def measure(self):
        self.scans += 1
        return super().measure()


def listener_ports(collector) -> set[str]:
    return {s.labels["port"] for f in collector.collect() if f.name == "portscope_listener_info"
            for s in f.samples}


def test_scans_are_cached_for_the_interval():
    now = [1000.0]
    collector = CountingCollector(netns="host", interval_s=10, clock=lambda: now[0])
    before = listener_ports(collector)
    sock = listening_socket(socket.AF_INET6)
    try:
        port = str(sock.getsockname()[1])
        now[0] += 9.9
        assert port not in listener_ports(collector) and port not in before   # from the cache
        assert collector.scans == 1
        now[0] += 0.1
        assert port in listener_ports(collector)
        assert collector.scans == 2
    finally:
        sock.close()


def test_concurrent_scrapes_share_one_scan():
    collector = CountingCollector(netns="host", interval_s=0)
    reg = exporter.registry(collector)
    barrier = threading.Barrier(4)
    outputs: list[bytes] = []

    def scrape():
        barrier.wait()
        outputs.append(exporter.exposition(reg))

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outputs) == 4
    # with interval 0 every scrape needs a scan that ended after it arrived; the ones arriving
    # during a scan wait for it and for at most one more (never one scan each, queued)
    assert 1 <= collector.scans <= 2


# --- the command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, words", [
    (["--listen", "127.0.0.1:99999"], 2, "invalid port"),
    (["--listen", "localhost:9623"], 2, "invalid address"),
    (["--listen", "127.1:9623"], 2, "invalid address"),
    (["--listen", "0.0.0.0:0"], 2, "--allow-remote"),
    (["--listen", "[::]:0"], 2, "--allow-remote"),
    (["--interval", "-1"], 2, "invalid interval"),
    (["--interval", "nan"], 2, "invalid interval"),
    (["--tls-cert", "/nonexistent.pem"], 2, "go together"),
    (["--netns", "no-such-namespace-here"], 2, "no network namespace"),
    (["--baseline", "/nonexistent/baseline.toml"], 3, "cannot read baseline"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], 3,
     "cannot read /nonexistent.pem"),
])
def test_bad_input_exits_with_one_line(args, code, words):
    result = cli_run("serve", *args)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_listen_on_a_port_in_use_exits_3_with_one_line():
    sock = listening_socket()
    try:
        result = cli_run("serve", "--netns", "host", "--listen",
                         f"127.0.0.1:{sock.getsockname()[1]}")
    finally:
        sock.close()
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "cannot listen on" in lines[0] and "in use" in lines[0], lines


def test_serve_answers_on_ipv6_loopback_and_stops_on_sigterm():
    exp = Exporter.__new__(Exporter)
    exp.proc = subprocess.Popen(
        [sys.executable, "-m", "portscope", "serve", "--listen", "[::1]:0", "--netns", "host"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = exp.proc.stderr.readline()
        match = re.search(r"http://\[::1\]:(\d+)/metrics", line)
        assert match, line
        with urllib.request.urlopen(f"http://[::1]:{match.group(1)}/metrics",
                                    timeout=30) as reply:
            assert b"portscope_scan_complete" in reply.read()
    finally:
        assert exp.stop() == 0


def test_print_dashboard_is_grafana_json_with_the_panels():
    dashboard = json.loads(shipped("--print-dashboard"))
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Listeners per host", "New and gone listeners (against 5 minutes before)",
            "Top ports by established connections", "Audit findings"} <= titles
    assert all(t["expr"] for p in dashboard["panels"] for t in p["targets"])


# --- a real Prometheus ----------------------------------------------------------------------------

def test_listener_series_of_a_new_socket_appears_in_prometheus(prometheus, serve_process):
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        series = wait_for(lambda: prometheus.query(f'portscope_listener_info{{port="{port}"}}'),
                          30, f"the series of port {port}")
    finally:
        sock.close()
    (labels,) = [s["metric"] for s in series]
    assert labels["instance"] == f"127.0.0.1:{serve_process.port}"
    assert (labels["proto"], labels["address"], labels["scope"], labels["process"]) == \
        ("tcp", "127.0.0.1", "loopback", own_comm())
    assert "pid" not in labels
    wait_for(lambda: not prometheus.query(f'portscope_listener_info{{port="{port}"}}'), 30,
             f"the series of port {port} to go stale")


def test_new_listener_alert_fires_and_resolves(prometheus):
    # the rule needs the host to have been scraped NEW_WINDOW ago
    wait_for(lambda: prometheus.query(f"portscope_scan_complete {NEW_WINDOW}"),
             NEW_WINDOW_S + 30, "the exporter's series of one window ago")
    sock = listening_socket()
    port = str(sock.getsockname()[1])

    def mine(state=None):
        return [a for a in prometheus.alerts("PortscopeNewListener")
                if a["labels"].get("port") == port and state in (None, a["state"])]

    try:
        (alert,) = wait_for(lambda: mine("firing"), 30, f"PortscopeNewListener for {port}")
        assert alert["labels"]["severity"] == "warning"
        assert f"127.0.0.1:{port}" in alert["annotations"]["summary"]
    finally:
        sock.close()
    wait_for(lambda: not mine(), 30, f"PortscopeNewListener for {port} to resolve")


def test_dashboard_queries_run_in_prometheus(prometheus):
    dashboard = json.loads(shipped("--print-dashboard"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["definition"]
                 .replace("label_values(", "group by (instance) (").replace(", instance)", ")"))
    answered = 0
    for expr in exprs:
        concrete = expr.replace("$instance", ".*").replace("$__rate_interval", "1m")
        answered += bool(prometheus.query(concrete))       # a bad query fails in api()
    assert answered >= len(exprs) // 2
    assert prometheus.query('count(portscope_listener_info{scope="loopback"}) > 0')


def test_rules_with_views_of_their_own_run_at_most_every_five_minutes(monkeypatch):
    from portscope import audit
    from portscope.audit import facts
    views = []
    real_view, real_unix = facts.kernel_view, audit._unix_findings
    monkeypatch.setattr(facts, "kernel_view", lambda *a: views.append(a[0]) or real_view(*a))
    monkeypatch.setattr(audit, "_unix_findings",
                        lambda *a: views.append("unix") or real_unix(*a))
    now = [0.0]
    collector = exporter.PortscopeCollector(netns="host", interval_s=0, clock=lambda: now[0])
    rules_seen = []
    for step_s in (0, 15, exporter.PERIODIC_EVERY_S - 15, 15):
        now[0] += step_s
        before = len(views)
        findings = {s.labels["rule"] for f in collector.collect()
                    if f.name == "portscope_audit_findings" for s in f.samples}
        rules_seen.append(exporter.PERIODIC_RULES <= findings)
        views_now = views[before:]
        due = step_s in (0, exporter.PERIODIC_EVERY_S - 15)
        assert {"netlink", "procfs", "unix"} <= set(views_now) if due else not views_now
    assert all(rules_seen)          # the rules' series stay, their counts carried between runs


def test_hostile_process_names_are_escaped_in_label_values(holder, tmp_path):
    code = """
        name = sys.argv[1] if len(sys.argv) > 1 else "ev\\x1b[31mil\\u202e=1+1"
        _libc.prctl(15, ctypes.c_char_p(name.encode()), 0, 0, 0)     # PR_SET_NAME
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        ready(port=s.getsockname()[1])
    """
    h = holder(code)
    path = tmp_path / "portscope.prom"
    result = cli_run("serve", "--netns", "host", "--textfile", str(path))
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert "\x1b" not in text
    (labels,) = [s.labels for f in text_string_to_metric_families(text)
                 if f.name == "portscope_listener_info" for s in f.samples
                 if s.labels["port"] == str(h.info["port"])]
    assert labels["process"].startswith("ev\\x1b[31mil")     # comm keeps 15 bytes


def test_netns_labels_and_audit_scope(netns, tmp_path):
    h = netns.holder("""
        s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen()
        ready(port=s.getsockname()[1])
    """)
    port = str(h.info["port"])
    path = tmp_path / "portscope.prom"

    def families_of(*args: str) -> dict:
        result = cli_run("serve", *args, "--textfile", str(path))
        assert result.returncode == 0, result.stderr
        return {f.name: f for f in text_string_to_metric_families(path.read_text())}

    # one foreign namespace: its listener, labelled with its name; no audit (the audit covers
    # the namespace portscope runs in)
    named = families_of("--netns", netns.name)
    mine = [s.labels for s in named["portscope_listener_info"].samples]
    assert [(l["port"], l["netns"], l["scope"]) for l in mine] == [(port, netns.name, "wildcard")]
    assert "portscope_audit_findings" not in named
    # every namespace: the same series among the host's, and the host's audit
    every = families_of("--netns", "all")
    assert any(s.labels["port"] == port and s.labels["netns"] == netns.name
               for s in every["portscope_listener_info"].samples)
    assert "portscope_audit_findings" in every
    # run inside the namespace: the audit is that namespace's, and judges its wildcard listener
    inside = netns.portscope("serve", "--netns", "host", "--textfile", str(path))
    assert inside.returncode == 0, inside.stderr
    counts = {s.labels["rule"]: s.value for f in text_string_to_metric_families(path.read_text())
              if f.name == "portscope_audit_findings" for s in f.samples}
    assert counts["exposed-all-interfaces"] == 1


def test_tls_serves_https_with_the_given_certificate(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "portscope", "serve", "--netns", "host",
                             "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
                             "--tls-key", str(key)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"https://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        import ssl
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{match.group(1)}/metrics",
                                    context=context, timeout=30) as reply:
            assert b"portscope_scan_complete" in reply.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        proc.stderr.close()
    # a key that is not the certificate's key: one line, exit 3
    key.write_text(cert.read_text())
    result = cli_run("serve", "--netns", "host", "--listen", "127.0.0.1:0",
                     "--tls-cert", str(cert), "--tls-key", str(key))
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "--tls-cert/--tls-key" in lines[0], lines
