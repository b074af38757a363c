#!/usr/bin/env python3
"""The whole host at Kubernetes scale: a full listing and a port lookup as network namespaces
multiply, next to lsof, psutil and the kernel's own dump cost, in one run on one load.

Starts the benchmark's fixture (``fixture.py``: at the default N=100,000, 200,705 sockets in
the host namespace and about 1,020 processes), then measures three phases in turn:

* ``none``: no other network namespace;
* ``empty``: plus ``--namespaces`` (100) network namespaces with nothing in them;
* ``loaded``: the same namespaces, each with one listener on 127.0.0.1:8080 and
  ``--connections`` (100) connections to it, both ends held (a holder per 10 namespaces).

In each phase, whole processes, interleaved over ``--rounds`` rounds (median reported):
``portscope list -a --json`` (every namespace, the default as root), the same with
``--netns host`` (the single-namespace figure), the same with ``PORTSCOPE_FDSCAN=proc``
(the path without BPF: per-namespace dumps and the ``/proc`` scan), ``portscope P`` for the
fixture's probe port (every namespace, and ``--netns host``), ``lsof -nP -i`` and psutil's
``net_connections("inet")``. Beside them, in-process: the bare sock_diag dumps that a
snapshot without the BPF walk sends (every state, and a single port), timed inside each
namespace (fastest of 3), summed over the namespaces.

In the ``loaded`` phase it also checks that the two ways of reading sockets agree: a snapshot
of every namespace through the per-namespace dumps (first: the dumps give sockets their
cookies) and one through the BPF walk, every field of every socket of the fixture and of the
benchmark's namespaces, owners included; and the same for two port lookups: the probe port,
and the namespaces' listener port (8080: 101 sockets on it in each namespace, from the walk
limited to that port).

    sudo venv/bin/python benchmarks/bench_scale.py --json benchmarks/results/scale-namespaces.json

Needs root (ip netns, setns, BPF). Run it alone (``flock "$BENCH_LOCK"`` on a shared
machine): it takes about 5 minutes at the default sizes. Everything it creates is removed on
exit, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Fixture, Launcher, other_load_cores, wait_quiet  # noqa: E402

from portscope import SocketFilter, namespaces, take_snapshot  # noqa: E402
from portscope.backends import linux_netlink  # noqa: E402
from portscope.owners import bpf  # noqa: E402

NAMESPACE_PORT = 8080         # of the listener in each of the benchmark's namespaces
HOLDER = textwrap.dedent("""\
    import ctypes, os, resource, socket, struct, sys
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    rst = struct.pack("ii", 1, 0)          # SO_LINGER {1, 0}: no TIME_WAIT at teardown
    keep = []
    count, PORT = int(sys.argv[1]), int(sys.argv[2])
    for name in sys.argv[3:]:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        assert libc.setns(fd, 0x40000000) == 0
        os.close(fd)
        l = socket.socket(); l.bind(("127.0.0.1", PORT)); l.listen(count + 16); keep.append(l)
        for _ in range(count):
            c = socket.create_connection(("127.0.0.1", PORT)); a, _ = l.accept()
            for s in (c, a):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
            keep += [c, a]
    assert libc.setns(own, 0x40000000) == 0
    print("ready", flush=True)
    sys.stdin.read()
""")


class Spaces:
    """The benchmark's namespaces ``psscale-PID-N`` and the holder of their sockets."""

    def __init__(self, count: int) -> None:
        self.names = [f"psscale-{os.getpid()}-{i}" for i in range(count)]
        self.holders: list[subprocess.Popen] = []
        self.made: list[str] = []
        for name in self.names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.made.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)

    def fill(self, connections: int) -> None:
        """One listener and ``connections`` connections in each namespace, held by one
        process per group of 10 namespaces (within the descriptor limit)."""
        for at in range(0, len(self.names), 10):
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(connections),
                                       str(NAMESPACE_PORT), *self.names[at:at + 10]],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.holders.append(holder)
            if holder.stdout.readline().strip() != "ready":
                raise RuntimeError("a namespace holder failed")

    def close(self) -> None:
        for holder in self.holders:
            holder.kill()
            holder.wait()
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def kernel_dumps_ms(flt: SocketFilter) -> tuple[float, float, int]:
    """The bare sock_diag dumps of ``flt`` in every namespace, each timed from inside it
    (fastest of 3): (sum over the namespaces, median of the other namespaces, namespaces)."""
    entries = namespaces.discover()
    own = namespaces.own_inode()

    def timed(entry):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            linux_netlink.collect(flt, netns=entry.namespace.inode)
            best = min(best, time.perf_counter() - start)
        return best * 1e3

    results = namespaces.run_in(entries, timed)
    times = [r for r in results if not isinstance(r, OSError)]
    others = [r for e, r in zip(entries, results)
              if e.namespace.inode != own and not isinstance(r, OSError)]
    return sum(times), statistics.median(others) if others else 0.0, len(times)


def _fields(s):
    return (*s[:11], s.cookie, frozenset((o.pid, o.fd) for o in s.owners), s.owner_unknown)


def compare_paths(state: dict, names: list[str]) -> dict:
    """Every field of every socket of the fixture and of our namespaces, read through the
    per-namespace dumps and through the BPF walk."""
    inodes = {os.stat(f"/run/netns/{name}").st_ino for name in names}
    host = namespaces.own_inode()
    lo, hi = state["listener_ports"]
    ports = set(range(lo, hi + 1)) | {state["probe"]["port"]}

    def ours(snapshot):
        return Counter(_fields(s) for s in snapshot.sockets
                       if s.netns in inodes or (s.netns == host and (
                           s.local.port in ports
                           or (s.remote is not None and s.remote.port in ports))))

    def both(flt, mine):
        os.environ[bpf.ENV] = "proc"
        try:
            dumped = mine(take_snapshot(flt, netns="all"))
        finally:
            del os.environ[bpf.ENV]
        walked = mine(take_snapshot(flt, netns="all"))
        return dumped, walked

    dumped, walked = both(SocketFilter(), ours)
    # port lookups: the fixture's probe port (the host's dump beside the walk) and the
    # namespaces' listener port (every namespace's sockets on it from the walk's records)
    port_dumped, port_walked = Counter(), Counter()
    for port in (state["probe"]["port"], NAMESPACE_PORT):
        flt = SocketFilter(port_range=(port, port))
        d, w = both(flt, lambda snapshot: Counter(_fields(s) for s in snapshot.sockets
                                                  if s.netns in inodes or s.netns == host))
        port_dumped += d
        port_walked += w
    return {"sockets_compared": sum(dumped.values()), "equal": dumped == walked,
            "only_dumped": sum((dumped - walked).values()),
            "only_walked": sum((walked - dumped).values()),
            "examples": [repr(k) for k in list((dumped - walked) + (walked - dumped))[:6]],
            "port_sockets_compared": sum(port_dumped.values()),
            "port_equal": port_dumped == port_walked,
            "port_examples": [repr(k) for k in list((port_dumped - port_walked)
                                                    + (port_walked - port_dumped))[:6]]}


def commands(portscope: str, port: int) -> dict[str, list[str]]:
    return {
        "ps_full": [portscope, "list", "-a", "--json"],
        "ps_full_host": [portscope, "list", "-a", "--json", "--netns", "host"],
        "ps_full_proc": ["env", f"{bpf.ENV}=proc", portscope, "list", "-a", "--json"],
        "ps_port": [portscope, str(port)],
        "ps_port_host": [portscope, str(port), "--netns", "host"],
        "lsof": ["lsof", "-nP", "-i"],
        "psutil": [sys.executable, "-c", "import psutil; psutil.net_connections('inet')"],
    }


def phase(launcher: Launcher, cmds: dict[str, list[str]], rounds: int, port: int,
          budget: dict) -> dict:
    wait_quiet(budget)
    load = other_load_cores()
    for key, argv in cmds.items():           # warm-up: caches, bytecode
        if key.startswith("ps_"):
            launcher.run(argv)
    walls: dict[str, list[float]] = {key: [] for key in cmds}
    for _ in range(rounds):
        for key, argv in cmds.items():
            run = launcher.run(argv)
            if run.rc != 0:
                raise RuntimeError(f"{key} exited with {run.rc}")
            walls[key].append(run.wall_s * 1e3)
    full_sum, full_median, spaces = kernel_dumps_ms(SocketFilter())
    port_sum, port_median, _ = kernel_dumps_ms(SocketFilter(port_range=(port, port)))
    return {"median_ms": {key: statistics.median(v) for key, v in walls.items()},
            "runs_ms": walls, "namespaces": spaces,
            "kernel_full_dumps_ms": full_sum, "kernel_full_dump_per_other_ns_ms": full_median,
            "kernel_port_dumps_ms": port_sum, "kernel_port_dump_per_other_ns_ms": port_median,
            "other_load_cores": (load + other_load_cores()) / 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=100_000, help="fixture scale N")
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--connections", type=int, default=100,
                        help="connections per namespace in the loaded phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--portscope", default=str(Path(sys.executable).with_name("portscope")))
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="before each phase, wait up to this long in all for other load "
                             "to drop under 0.25 cores")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args()
    budget = {"left_s": args.wait_quiet, "waited_s": 0.0}
    if os.geteuid() != 0:
        parser.error("needs root (ip netns, setns, BPF)")
    if not shutil.which("lsof"):
        parser.error("needs lsof")
    launcher = Launcher()
    fixture = Fixture(args.conns, [], 600)
    spaces = None
    doc: dict = {"conns": args.conns, "namespaces": args.namespaces,
                 "connections": args.connections, "rounds": args.rounds, "phases": {}}
    try:
        state = fixture.state
        port = state["probe"]["port"]
        doc["fixture_sockets"] = state["expected"]["sockets"]
        cmds = commands(args.portscope, port)
        doc["phases"]["none"] = phase(launcher, cmds, args.rounds, port, budget)
        spaces = Spaces(args.namespaces)
        doc["phases"]["empty"] = phase(launcher, cmds, args.rounds, port, budget)
        spaces.fill(args.connections)
        doc["phases"]["loaded"] = phase(launcher, cmds, args.rounds, port, budget)
        doc["equality"] = compare_paths(state, spaces.names)
    finally:
        if spaces is not None:
            spaces.close()
        fixture.close()
        launcher.close()
    report(doc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0 if doc["equality"]["equal"] and doc["equality"]["port_equal"] else 1


def report(doc: dict) -> None:
    phases = doc["phases"]
    print(f"fixture: {doc['fixture_sockets']:,} sockets in the host namespace; "
          f"{doc['namespaces']} namespaces (empty, then 1 listener + {doc['connections']} "
          f"connections each); median of {doc['rounds']} rounds (ms)")
    keys = list(phases["none"]["median_ms"])
    print(f"{'':<34}" + "".join(f"{name:>10}" for name in phases))
    for key in keys:
        print(f"{key:<34}" + "".join(f"{p['median_ms'][key]:>10.0f}" for p in phases.values()))
    for key in ("kernel_full_dumps_ms", "kernel_full_dump_per_other_ns_ms",
                "kernel_port_dumps_ms", "kernel_port_dump_per_other_ns_ms", "other_load_cores"):
        print(f"{key:<34}" + "".join(f"{p[key]:>10.2f}" for p in phases.values()))
    base = phases["none"]["median_ms"]["ps_full"]
    for name, p in phases.items():
        m = p["median_ms"]
        print(f"{name}: list -a x{m['ps_full'] / base:.2f} of no-namespace; "
              f"x{m['ps_full'] / m['lsof']:.2f} lsof, x{m['ps_full'] / m['psutil']:.2f} psutil; "
              f"port {m['ps_port']:.0f} ms")
    print(f"equality (dumps vs walk): {doc['equality']}")


if __name__ == "__main__":
    sys.exit(main())
