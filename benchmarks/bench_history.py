#!/usr/bin/env python3
"""The time axis's cost: recorder and watch CPU, tracepoint latency, history queries, growth.

1. ``store``: a history database of ``--events`` events (default 1,000,000: open/close pairs
   over 5,000 ports, one owner each) written through ``store.Writer``; its size per 1,000
   events, then ``portscope history PORT`` timed as a library call (``History.holdings``)
   and as a command (a new process, startup included).
2. ``latency`` (root): ``portscope record`` running, ``listen()`` here, and the time until the
   recorder prints the event, which it does after the commit (tracepoint-timed); the
   recorder watches that port only (under the fixture: also the whole host).
3. ``cpu``: the fixture (``fixture.py``: ``--listeners`` listeners and ``--conns``
   connections) up; ``portscope record`` and ``portscope watch`` with a 1 s poll, the
   fixture not changing, their CPU read from ``/proc/PID/stat`` over ``--duration`` seconds
   (and the events they printed meanwhile: other jobs' changes on a shared host); beside
   them ``ss -tlnp`` run once a second for as long (its CPU from ``wait4``). The latency of
   part 2 is measured again under that load.

    flock "$BENCH_LOCK" env -u PYTHONDONTWRITEBYTECODE \
        .venv/bin/python benchmarks/bench_history.py --out benchmarks/results/history.json

Results go to stdout and ``--out`` (JSON). Linux; parts 2 and 3 want root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from portscope import history  # noqa: E402
from portscope.history import store  # noqa: E402
from portscope.history.diff import Event, EventKind, Item, Key, Source  # noqa: E402
from portscope.types import Family, ProcessInfo, Proto, State  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PORTSCOPE = [sys.executable, "-m", "portscope"]


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def build_store(path: str, events: int) -> dict:
    """A store of ``events`` events; returns its size per 1,000 events and the build time."""
    t0 = time.perf_counter()
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    ports = 5000
    with store.Writer(path, cmdline="name") as writer:
        batch: list[Event] = []
        for n in range(events // 2):
            port = 20000 + n % ports
            opened_at = start + timedelta(seconds=n)
            pid = 1000 + n % 30000
            owner = ProcessInfo(pid=pid, ppid=1, name=f"server{n % 50}",
                                exe=f"/usr/bin/server{n % 50}", cmdline=(f"server{n % 50}",),
                                user="www-data", uid=33, started_at=opened_at)
            key = Key(4026531833, Proto.TCP, "0.0.0.0", port, 10_000_000 + n)
            item = Item(Family.IPV4, State.LISTEN, (owner,), 33)
            batch.append(Event(EventKind.OPENED, key, item, opened_at,
                               opened_at - timedelta(seconds=1), Source.POLL))
            batch.append(Event(EventKind.CLOSED, key, item, opened_at + timedelta(seconds=0.5),
                               None, Source.TRACEPOINT, pid=pid))
            if len(batch) >= 20000:
                writer.write(batch)
                batch = []
        writer.write(batch)
    conn_size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return {"events": events, "build_s": round(time.perf_counter() - t0, 1),
            "file_bytes": conn_size, "bytes_per_1000_events": round(conn_size / events * 1000)}


def time_queries(path: str, port: int, runs: int = 20) -> dict:
    lib = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with history.open(path) as db:
            rows = db.holdings(port=port)
        lib.append(time.perf_counter() - t0)
    cli = []
    for _ in range(runs // 2):
        t0 = time.perf_counter()
        subprocess.run([*PORTSCOPE, "history", str(port), "--db", path, "--csv"],
                       capture_output=True, check=True)
        cli.append(time.perf_counter() - t0)
    at, scan = [], []
    moment = datetime(2026, 11, 3, tzinfo=timezone.utc)
    for _ in range(5):
        t0 = time.perf_counter()
        with history.open(path) as db:
            db.at(moment)
        at.append(time.perf_counter() - t0)
        t0 = time.perf_counter()       # beside it: the same file read as a schema-1 one
        with store.History(sqlite3.connect(path), path, version=1) as db:
            db.at(moment)
        scan.append(time.perf_counter() - t0)
    return {"rows": len(rows), "library_median_ms": round(statistics.median(lib) * 1000, 1),
            "library_max_ms": round(max(lib) * 1000, 1),
            "command_median_ms": round(statistics.median(cli) * 1000, 1),
            "at_median_ms": round(statistics.median(at) * 1000, 1),
            "at_without_time_index_median_ms": round(statistics.median(scan) * 1000, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency(samples: int = 20, *, whole: bool = False) -> dict:
    """listen() here -> the recorder printed the committed event (tracepoint-timed). The
    recorder watches this port only (``--port``), or with ``whole`` every listener of the
    host (each report then polls its port; the host's other events are skipped)."""
    port = free_port()
    tmp = tempfile.mkdtemp()
    only = [] if whole else ["--port", f"{port}-{port}"]
    proc = subprocess.Popen([*PORTSCOPE, "record", "--db", f"{tmp}/h.db", "--json", *only],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_event(kind: str) -> dict:
        while True:
            event = json.loads(proc.stdout.readline())
            if event["kind"] == kind and event["local"]["port"] == port:
                return event

    try:
        proc.stderr.readline()
        time.sleep(2)
        found = []
        for _ in range(samples):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            t0 = time.perf_counter()
            s.listen()
            event = next_event("opened")
            found.append((time.perf_counter() - t0, event["source"]))
            s.close()
            next_event("closed")
            time.sleep(random.uniform(0.2, 0.5))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp)
    times = sorted(t for t, _ in found)
    return {"samples": samples, "median_ms": round(statistics.median(times) * 1000, 1),
            "p90_ms": round(times[int(len(times) * 0.9) - 1] * 1000, 1),
            "max_ms": round(times[-1] * 1000, 1),
            "sources": sorted({src for _, src in found}), "whole_host": whole}


def idle_cpu(argv: list[str], duration_s: float, warmup_s: float = 10) -> dict:
    """CPU of ``argv`` (``watch --json`` or ``record --json``) over ``duration_s`` after
    ``warmup_s``, and how many events it printed meanwhile: the host's own changes (other
    jobs opening and closing listeners), which the idle figure is not free of."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        try:
            time.sleep(warmup_s)
            out.flush()
            before = os.fstat(out.fileno()).st_size
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            time.sleep(duration_s)
            c1, t1 = cpu_s(proc.pid), time.monotonic()
            if proc.poll() is not None:        # an exited process would read as idle
                raise SystemExit(f"{argv[2:4]} exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        out.seek(before)
        events = sum(1 for line in out if line.strip())
    return {"cpu_s": round(c1 - c0, 2), "wall_s": round(t1 - t0, 1),
            "percent_of_one_core": round((c1 - c0) / (t1 - t0) * 100, 2),
            "events_meanwhile": events}


def ss_cpu(duration_s: float) -> dict:
    used = 0.0
    runs = 0
    end = time.monotonic() + duration_s
    t0 = time.monotonic()
    while time.monotonic() < end:
        start = time.monotonic()
        proc = subprocess.Popen(["ss", "-tlnp"], stdout=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        used += usage.ru_utime + usage.ru_stime
        runs += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
    wall = time.monotonic() - t0
    return {"runs": runs, "cpu_s": round(used, 2), "wall_s": round(wall, 1),
            "percent_of_one_core": round(used / wall * 100, 2)}


def with_fixture(args, work):
    state = tempfile.mktemp(suffix=".json")
    argv = [sys.executable, str(HERE / "fixture.py"), "--conns", str(args.conns), "--listeners",
            str(args.listeners), "--idle-procs", str(args.idle_procs), "--state", state,
            "--die-with-parent"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        else:
            raise SystemExit("the fixture did not come up")
        time.sleep(5)                                  # settle
        return work()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--listeners", type=int, default=10_000)
    p.add_argument("--conns", type=int, default=100_000)
    p.add_argument("--idle-procs", type=int, default=200)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--parts", default="store,latency,cpu")
    p.add_argument("--out")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    result: dict = {"when": datetime.now(timezone.utc).isoformat(),
                    "loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    if "store" in parts:
        tmp = tempfile.mkdtemp()
        try:
            path = f"{tmp}/h.db"
            result["store"] = build_store(path, args.events)
            result["history_port"] = time_queries(path, 20000 + 1234)
        finally:
            shutil.rmtree(tmp)
        print(json.dumps({k: result[k] for k in ("store", "history_port")}), flush=True)
    if "latency" in parts and os.geteuid() == 0:
        result["latency_quiet"] = latency()
        print(json.dumps({"latency_quiet": result["latency_quiet"]}), flush=True)
    if "cpu" in parts:
        def work():
            tmp = tempfile.mkdtemp()
            try:
                out = {
                    "record": idle_cpu([*PORTSCOPE, "record", "--db", f"{tmp}/h.db", "--json"],
                                       args.duration),
                    "watch": idle_cpu([*PORTSCOPE, "watch", "--json"], args.duration),
                    "ss_tlnp_every_1s": ss_cpu(args.duration),
                }
                if os.geteuid() == 0:
                    out["latency_under_load"] = latency()
                    out["latency_under_load_whole_host"] = latency(whole=True)
                return out
            finally:
                shutil.rmtree(tmp)
        result["cpu"] = with_fixture(args, work)
        result["cpu"]["fixture"] = {"listeners": args.listeners, "connections": args.conns}
        print(json.dumps({"cpu": result["cpu"]}), flush=True)
    result["loadavg_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
