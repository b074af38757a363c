"""UNIX domain sockets: ``portscope list -x -a --json`` against ``ss -xap`` and ``lsof -U``, and
``portscope PATH``, timed side by side in one run on one live load. Linux, as root.

The load: ``--servers`` processes each listen on a socket file in a private temporary
directory, ``--clients`` processes each connect ``--per-client`` times to the servers in turn
(every connection accepted): with the defaults 250 + 250 processes and 25,000 connected pairs,
50,000 connected sockets plus 250 listeners, every peer in another process. Each command runs
``--repeat`` times, the commands interleaved round by round; the medians go to
``results/unix-N.json`` and a Markdown table on stdout; then, in one process (no second
process for the JSON), the time to open the snapshot, to join its sockets, and to join and
write them as JSON: the writer's share. Run it under ``flock`` when others
share the machine::

    flock "$BENCH_LOCK" .venv/bin/python benchmarks/bench_unix.py

(any lock file the others use). Python is timed with its bytecode cache usable
(``env -u PYTHONDONTWRITEBYTECODE``), as benchmarks/README.md says.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _server(path: str, count: int, ready_w: int) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1024)
    os.write(ready_w, b"s")
    held = [listener.accept()[0] for _ in range(count)]
    os.write(ready_w, b"a")
    signal.pause()
    del held


def _client(paths: list[str], count: int, ready_w: int) -> None:
    held = []
    for k in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.connect(paths[k % len(paths)])
        held.append(s)
    os.write(ready_w, b"c")
    signal.pause()


def start_load(servers: int, clients: int, per_client: int) -> tuple[list[int], list[str], str]:
    """Fork the servers and clients; return their PIDs, the socket paths and the directory."""
    base = tempfile.mkdtemp(prefix="psux-bench-")
    paths = [os.path.join(base, f"s{k}.sock") for k in range(servers)]
    total = clients * per_client
    per_server = [total // servers + (1 if k < total % servers else 0) for k in range(servers)]
    ready_r, ready_w = os.pipe()
    pids = []

    def fork(work) -> None:
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            try:
                work()
            finally:
                os._exit(0)
        pids.append(pid)

    for path, count in zip(paths, per_server):
        fork(lambda path=path, count=count: _server(path, count, ready_w))
    _await(ready_r, b"s", servers)
    # client k connects to paths k, k+1, ...: each server gets per_server[k] connections
    for k in range(clients):
        mine = [paths[(k * per_client + j) % servers] for j in range(per_client)]
        fork(lambda mine=mine: _client(mine, per_client, ready_w))
    _await(ready_r, b"ca", clients + servers)
    os.close(ready_w)
    os.close(ready_r)
    return pids, paths, base


def _await(fd: int, tokens: bytes, count: int) -> None:
    seen = 0
    while seen < count:
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError("a load process died")
        seen += sum(chunk.count(t) for t in tokens)


WRITER_SHARE = """
import gc, json, os, statistics, sys, time
gc.disable()                    # as the CLI runs
from portscope import Proto, SocketFilter
from portscope.render import jsonfmt
from portscope.snapshot import open_snapshot
flt = SocketFilter(protos=frozenset({Proto.UNIX}), states=None)
parts = {"snapshot opened": [], "joined": [], "joined and written as JSON": []}
for _ in range(int(sys.argv[1])):
    for write in (False, True):
        start = time.perf_counter()
        stream = open_snapshot(flt, netns="host")
        opened = time.perf_counter()
        if write:
            with open(os.devnull, "w") as out:
                jsonfmt.write_items(out, stream)
        else:
            for _sock in stream:
                pass
        done = time.perf_counter()
        parts["snapshot opened"].append(opened - start)
        parts["joined and written as JSON" if write else "joined"].append(done - opened)
print(json.dumps({k: statistics.median(v) for k, v in parts.items()}))
"""


def writer_share(python: str, repeat: int) -> dict[str, float]:
    """In one process, without the CLI's second process: the seconds to open the snapshot
    (dump, decode, owner scan), then to join its sockets, or to join and write them as
    JSON (medians)."""
    out = subprocess.run([python, "-c", WRITER_SHARE, str(repeat)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and exit code of ``argv`` with stdout to /dev/null."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", type=int, default=250)
    p.add_argument("--clients", type=int, default=250)
    p.add_argument("--per-client", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--portscope", default=str(Path(sys.executable).with_name("portscope")))
    p.add_argument("--baseline", metavar="PORTSCOPE",
                   help="another portscope (an older checkout's) timed beside, as 'before'")
    p.add_argument("--out", default=str(HERE / "results"))
    a = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    pids, paths, base = start_load(a.servers, a.clients, a.per_client)
    try:
        pairs = a.clients * a.per_client
        probe = paths[0]
        commands = {
            "portscope list -x -a --json": [a.portscope, "list", "-x", "-a", "--json",
                                            "--netns", "host"],
            "portscope list -x -a --json (/proc/*/fd scan)": [
                "env", "PORTSCOPE_FDSCAN=proc", a.portscope, "list", "-x", "-a", "--json",
                "--netns", "host"],
            "ss -xap": ["ss", "-xap"],
            "lsof -U": ["lsof", "-U"],
            "portscope PATH": [a.portscope, probe, "--netns", "host"],
            "portscope PATH --json": [a.portscope, probe, "--json", "--netns", "host"],
            "ss -xa (no owners)": ["ss", "-xa"],
        }
        if a.baseline:
            commands["before: portscope list -x -a --json"] = [
                a.baseline, "list", "-x", "-a", "--json", "--netns", "host"]
            commands["before: portscope PATH"] = [a.baseline, probe, "--netns", "host"]
        commands = {k: v for k, v in commands.items() if shutil.which(v[0])}
        times: dict[str, list[float]] = {k: [] for k in commands}
        load_before = os.getloadavg()
        for _round in range(a.repeat):
            for label, cmd in commands.items():
                seconds, code = timed(cmd)
                if code not in (0,):
                    print(f"{label}: exit {code}", file=sys.stderr)
                times[label].append(seconds)
        load_after = os.getloadavg()
        python = str(Path(a.portscope).with_name("python"))
        share = writer_share(python, a.repeat) if os.path.exists(python) else {}
        # what portscope found, for the record
        doc = json.loads(subprocess.run([a.portscope, "list", "-x", "-a", "--json", "--netns",
                                         "host"], capture_output=True, text=True).stdout)
        mine = [s for s in doc["sockets"] if any(o["pid"] in set(pids) for o in s["owners"])]
        resolved = sum(1 for s in mine if s["state"] == "ESTABLISHED"
                       and s["peers"] and s["peers"][0]["owners"])
        medians = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "load": {"servers": a.servers, "clients": a.clients, "pairs": pairs,
                     "sockets": 2 * pairs + a.servers, "processes": a.servers + a.clients},
            "found": {"load_sockets": len(mine), "connected_with_peer_owner": resolved},
            "loadavg_before": load_before, "loadavg_after": load_after,
            "cpus": os.cpu_count(), "repeat": a.repeat,
            "seconds": times, "median_s": medians, "in_one_process_s": share,
            "ratios": {
                "list -x vs ss -xap": medians["portscope list -x -a --json"] / medians["ss -xap"],
                **({"list -x vs lsof -U": medians["portscope list -x -a --json"]
                    / medians["lsof -U"]} if "lsof -U" in medians else {}),
                **({"before: list -x vs ss -xap": medians["before: portscope list -x -a --json"]
                    / medians["ss -xap"]} if a.baseline else {}),
            },
        }
        Path(a.out).mkdir(parents=True, exist_ok=True)
        out = Path(a.out) / f"unix-{2 * pairs}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{2 * pairs + a.servers:,} UNIX sockets of the load ({pairs:,} connected pairs, "
              f"{a.servers + a.clients} processes); portscope found {len(mine):,}, "
              f"{resolved:,} connected ones with their peer's owner")
        print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
              f"on {os.cpu_count()} CPUs; medians of {a.repeat} interleaved rounds\n")
        print("| command | median | runs |\n|---|---:|---|")
        for label, values in times.items():
            runs = ", ".join(f"{v * 1000:.0f}" for v in values)
            print(f"| `{label}` | {medians[label] * 1000:,.0f} ms | {runs} |")
        if share:
            print("\nin one process (no second process for the JSON): "
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in share.items()))
        for name, ratio in result["ratios"].items():
            print(f"\n{name}: {ratio:.2f}x", end="")
        print(f"\n\nwritten: {out}")
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            os.waitpid(pid, 0)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
