#!/usr/bin/env python3
"""What ``portscope serve`` costs: the exporter per scrape, and a fleet's worth of it in one
Prometheus server. Linux, as root (the fixture raises its fd limit; owners of every process).

    python benchmarks/bench_serve.py scrape [--conns 4650] [--runs 10]
    python benchmarks/bench_serve.py fleet [--hosts 1000] [--interval 15]

``scrape``: starts ``fixture.py`` (about 10,000 sockets at the default ``--conns``, 300
listeners, 1,000 idle processes), then in this process: the CPU time (user + system, this
process and its waited-for children: the fd scan's workers) of an uncached scrape (a full
scan: snapshot of every TCP and UDP socket with owners, the audit of its listeners, the
exposition), beside a bare ``take_snapshot`` of the same sockets; the wall time of scrapes
served from cache through the real HTTP server on loopback; the series count.

``fleet``: records the exposition of a typical server (a fixture with 40 listeners and a few
hundred sockets) and serves it, as it is, from ``--hosts`` loopback ports of one small
asyncio process; one Prometheus (``PORTSCOPE_PROMETHEUS_BIN`` or PATH) scrapes them all at
``--interval`` with the shipped alerting rules loaded. After ``--warmup`` seconds it measures
for ``--measure`` seconds: Prometheus's CPU (share of one core), RSS, head series, rule group
evaluation time, late scrapes; and the static server's CPU.

Results go to ``benchmarks/results/serve-scrape.json`` / ``serve-fleet-H-I.json`` and stdout.
Heavy: on a shared machine run it under ``flock LOCKFILE`` with the lock the other heavy jobs use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from run import Fixture       # benchmarks/run.py: fixture.py as a child process, until READY

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench_serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def series_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


CACHED_CLIENT = r'''
import json, sys, time, urllib.request
url, runs, walls = sys.argv[1], int(sys.argv[2]), []
for _ in range(runs):
    w0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
    walls.append(time.perf_counter() - w0)
print(json.dumps(walls))
'''


def scrape(args) -> dict:
    from portscope import exporter
    from portscope.filters import SocketFilter
    from portscope.snapshot import take_snapshot
    typical = exporter.PortscopeCollector(netns="host", interval_s=0)
    host_series = series_count(exporter.exposition(exporter.registry(typical)).decode())
    log(f"this host without the fixture: {host_series} series; starting the fixture")
    fx = Fixture(args.conns, [], 600)
    try:
        collector = exporter.PortscopeCollector(netns="host", interval_s=0)
        reg = exporter.registry(collector)
        text = exporter.exposition(reg).decode()             # warm-up (imports, BPF layout)
        sockets = len(take_snapshot(SocketFilter(), netns="host").sockets)
        scans, bare = [], []
        for _ in range(args.runs):
            c0, w0 = cpu_s(), time.perf_counter()
            text = exporter.exposition(reg).decode()
            scans.append((cpu_s() - c0, time.perf_counter() - w0))
            c0, w0 = cpu_s(), time.perf_counter()
            take_snapshot(SocketFilter(), netns="host")
            bare.append((cpu_s() - c0, time.perf_counter() - w0))
        c0 = cpu_s()
        exporter.exposition(exporter.registry(exporter.PortscopeCollector(netns="host")))
        periodic_cpu = cpu_s() - c0          # a first scan runs the periodic rules too
        cached = exporter.PortscopeCollector(netns="host", interval_s=3600)
        server, port = exporter.serve(exporter.registry(cached), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/metrics"
        urllib.request.urlopen(url, timeout=60).read()       # fills the cache
        # the client runs in another process, so that it does not share the server's GIL
        client = subprocess.run([sys.executable, "-c", CACHED_CLIENT, url,
                                 str(args.cached_runs)], capture_output=True, text=True,
                                check=True)
        walls = json.loads(client.stdout)
        server.shutdown()
        renders = []                         # the same without HTTP: formatting the cache
        for _ in range(args.cached_runs):
            w0 = time.perf_counter()
            exporter.exposition(exporter.registry(cached))
            renders.append(time.perf_counter() - w0)
        renders.sort()
    finally:
        fx.close()
    cpu = statistics.median(c for c, _ in scans)
    every = exporter.PERIODIC_EVERY_S / 15     # scrapes at 15 s per run of the periodic rules
    walls.sort()
    result = {
        "sockets": sockets, "runs": args.runs, "load_before": args.load_before,
        "load_after": loadavg(),
        "scrape_cpu_s_median": round(cpu, 4),
        "scrape_cpu_s_all": [round(c, 4) for c, _ in scans],
        "scrape_wall_s_median": round(statistics.median(w for _, w in scans), 4),
        "snapshot_cpu_s_median": round(statistics.median(c for c, _ in bare), 4),
        "snapshot_wall_s_median": round(statistics.median(w for _, w in bare), 4),
        "scan_with_periodic_rules_cpu_s": round(periodic_cpu, 4),
        "share_of_one_core_at_15s": round(cpu / 15, 5),
        "share_of_one_core_at_15s_with_periodic_rules_every_5min": round(
            ((every - 1) * cpu + periodic_cpu) / every / 15, 5),
        "cached_scrape_ms_p50": round(walls[len(walls) // 2] * 1000, 3),
        "cached_scrape_ms_p99": round(walls[int(len(walls) * 0.99) - 1] * 1000, 3),
        "cached_scrape_ms_max": round(walls[-1] * 1000, 3),
        "cached_runs": len(walls),
        "cached_render_ms_p50": round(renders[len(renders) // 2] * 1000, 3),
        "cached_render_ms_p99": round(renders[int(len(renders) * 0.99) - 1] * 1000, 3),
        "series_at_fixture": series_count(text),
        "series_this_host": host_series,
        "exposition_bytes_at_fixture": len(text.encode()),
    }
    return result


# --- fleet --------------------------------------------------------------------------------------

STATIC_SERVER = r'''
import asyncio, os, resource, sys
body = open(sys.argv[1], "rb").read()
count, portfile = int(sys.argv[2]), sys.argv[3]
head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def answer(reader, writer):
    try:
        while True:
            request = await reader.readuntil(b"\r\n\r\n")
            if not request:
                break
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()

async def main():
    servers = [await asyncio.start_server(answer, "127.0.0.1", 0) for _ in range(count)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    with open(portfile + ".tmp", "w") as f:
        f.write("\n".join(map(str, ports)))
    os.rename(portfile + ".tmp", portfile)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def own_metrics(port: int) -> dict[str, float]:
    """A few of Prometheus's own metrics, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "prometheus_tsdb_head_series":
                out["head_series"] = s.value
            elif s.name == "prometheus_rule_group_iterations_missed_total":
                out["rule_iterations_missed"] = out.get("rule_iterations_missed", 0) + s.value
            elif (s.name == "prometheus_target_interval_length_seconds"
                  and s.labels.get("quantile") == "0.99"):
                out["scrape_interval_p99_s"] = max(out.get("scrape_interval_p99_s", 0), s.value)
            elif s.name == "prometheus_tsdb_head_samples_appended_total":
                out["samples_appended"] = out.get("samples_appended", 0) + s.value
    return out


def record_typical(path: str) -> int:
    from portscope import exporter
    fx = Fixture(200, ["--listeners", "40", "--udp", "20", "--idle-procs", "50",
                       "--servers", "4", "--clients", "4"], 600)
    try:
        text = exporter.exposition(exporter.registry(
            exporter.PortscopeCollector(netns="host", interval_s=0)))
    finally:
        fx.close()
    with open(path, "wb") as f:
        f.write(text)
    return series_count(text.decode())


def fleet(args) -> dict:
    bin_dir = os.environ.get("PORTSCOPE_PROMETHEUS_BIN")
    prom = shutil.which("prometheus", path=bin_dir) if bin_dir else shutil.which("prometheus")
    if not prom:
        raise SystemExit("prometheus not found (PORTSCOPE_PROMETHEUS_BIN or PATH)")
    work = tempfile.mkdtemp(prefix="bench-serve-fleet-")
    server = prometheus = None
    try:
        exposition = os.path.join(work, "host.prom")
        per_host = record_typical(exposition)
        log(f"recorded a typical host: {per_host} series; serving it {args.hosts} times")
        portfile = os.path.join(work, "ports")
        server = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, exposition,
                                   str(args.hosts), portfile])
        deadline = time.monotonic() + 60
        while not os.path.exists(portfile):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the static server did not start")
            time.sleep(0.1)
        ports = open(portfile).read().split()
        from portscope.cli.commands.serve import RULES_FILE, shipped_text
        with open(os.path.join(work, "rules.yml"), "w") as f:
            f.write(shipped_text(RULES_FILE))
        targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"global: {{scrape_interval: {args.interval}s, evaluation_interval: "
                    f"{args.interval}s}}\nrule_files: [rules.yml]\n"
                    f"scrape_configs: [{{job_name: portscope, static_configs: "
                    f"[{{targets: [{targets}]}}]}}]\n")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        log_file = open(os.path.join(work, "prometheus.log"), "w")
        prometheus = subprocess.Popen(
            [prom, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT)
        log(f"prometheus pid {prometheus.pid} on 127.0.0.1:{port}; warming up {args.warmup} s")
        time.sleep(args.warmup)
        up = json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/query?query=count(up%3D%3D1)", timeout=60))
        targets_up = int(float(up["data"]["result"][0]["value"][1])) if up["data"]["result"] else 0
        before = own_metrics(port)
        c0, s0, t0 = proc_cpu_s(prometheus.pid), proc_cpu_s(server.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.measure:
            rss.append(proc_rss_mb(prometheus.pid))
            time.sleep(1)
        elapsed = time.monotonic() - t0
        c1, s1 = proc_cpu_s(prometheus.pid), proc_cpu_s(server.pid)
        after = own_metrics(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=60) as r:
            groups = json.load(r)["data"]["groups"]
        rule_ms = {rule["name"]: round(rule["evaluationTime"] * 1000, 1)
                   for g in groups for rule in g["rules"]}
        group_ms = {g["name"]: round(g["evaluationTime"] * 1000, 1) for g in groups}
        return {
            "hosts": args.hosts, "interval_s": args.interval, "warmup_s": args.warmup,
            "measure_s": round(elapsed, 1), "series_per_host": per_host,
            "targets_up": targets_up, "load_before": args.load_before, "load_after": loadavg(),
            "head_series": after.get("head_series"),
            "samples_per_s": round((after.get("samples_appended", 0)
                                    - before.get("samples_appended", 0)) / elapsed),
            "prometheus_cpu_share_of_one_core": round((c1 - c0) / elapsed, 4),
            "prometheus_rss_mb_avg": round(statistics.mean(rss)),
            "prometheus_rss_mb_max": round(max(rss)),
            "rule_group_eval_ms": group_ms,
            "rule_eval_ms": rule_ms,
            "rule_iterations_missed": after.get("rule_iterations_missed", 0),
            "scrape_interval_p99_s": after.get("scrape_interval_p99_s"),
            "static_server_cpu_share_of_one_core": round((s1 - s0) / elapsed, 4),
            "prometheus_version": subprocess.run([prom, "--version"], capture_output=True,
                                                 text=True).stdout.splitlines()[0],
        }
    finally:
        for p in (prometheus, server):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scrape")
    s.add_argument("--conns", type=int, default=4650,
                   help="fixture connections (2 sockets each; 4650: about 10,000 sockets)")
    s.add_argument("--runs", type=int, default=10)
    s.add_argument("--cached-runs", type=int, default=200)
    f = sub.add_parser("fleet")
    f.add_argument("--hosts", type=int, default=1000)
    f.add_argument("--interval", type=int, default=15, help="scrape and rule interval, s")
    f.add_argument("--warmup", type=int, default=45)
    f.add_argument("--measure", type=int, default=60)
    args = parser.parse_args()
    args.load_before = loadavg()
    result = scrape(args) if args.what == "scrape" else fleet(args)
    result.update(machine=platform.machine(), cpus=os.cpu_count(),
                  python=platform.python_version(), kernel=platform.release(),
                  at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    name = ("serve-scrape.json" if args.what == "scrape"
            else f"serve-fleet-{args.hosts}-{args.interval}s.json")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name), "w") as out:
        json.dump(result, out, indent=2)
        out.write("\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
