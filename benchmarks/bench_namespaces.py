#!/usr/bin/env python3
"""What each extra network namespace costs a snapshot, next to what the kernel charges for it.

Creates namespaces with ``ip netns add`` (each with lo up and a few listeners: 3 TCP, 1 UDP,
all held by one holder process that enters each namespace in turn), then measures:

* the kernel's own dump cost per namespace: the raw sock_diag requests of a full snapshot
  (one TCPDIAG_GETSOCK walk for TCP over IPv4 and IPv6, plus UDP per family) and of a
  listeners-only one, timed from a thread already inside the namespace, replies read but not
  decoded (``linux_netlink.collect``);
* ``take_snapshot(netns="all")`` with SMALL and then LARGE namespaces present, full and
  listeners-only, with and without the owner scan; the slope
  ``(T(LARGE) - T(SMALL)) / (LARGE - SMALL)`` is the time each extra namespace adds.

Each figure is the fastest of ``--repeat`` runs (the least disturbed by other load); the
extra namespaces are added and removed again in each of ``--rounds`` rounds, and the table
gives the median over the rounds, so that drift in the host's load cancels out.

The full dump of even an empty namespace walks the established hash that every namespace
shares, so its cost grows with the host's socket count: run it on the host you care about.

    sudo venv/bin/python benchmarks/bench_namespaces.py --small 10 --large 50 --rounds 5

Needs root (ip netns, setns). Everything it creates is removed on exit, also on failure.
Prints a table and, with ``--json PATH``, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

from portscope import Proto, SocketFilter, namespaces, take_snapshot
from portscope.backends import linux_netlink

HOLDER = textwrap.dedent("""\
    import ctypes, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    keep = []
    for name in sys.argv[1:]:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        assert libc.setns(fd, 0x40000000) == 0
        os.close(fd)
        for _ in range(3):
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); keep.append(s)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
        keep.append(u)
    assert libc.setns(own, 0x40000000) == 0
    print("ready", flush=True)
    sys.stdin.read()
""")


class Namespaces:
    """Benchmark namespaces ``psbench-PID-N`` and their holder processes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.holders: list[subprocess.Popen] = []
        self.created = 0

    def add(self, count: int) -> None:
        new = [f"psbench-{os.getpid()}-{self.created + i}" for i in range(count)]
        self.created += count
        for name in new:
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.names.append(name)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, *new], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.holders.append(holder)
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("holder failed")

    def remove_last(self, count: int) -> None:
        """Remove the last ``count`` namespaces, added by the last ``add(count)``."""
        holder = self.holders.pop()
        holder.kill()
        holder.wait()
        for name in self.names[-count:]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        del self.names[-count:]

    def close(self) -> None:
        for holder in self.holders:
            holder.kill()
            holder.wait()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def fastest_ms(work, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def kernel_cost_ms(names: list[str], flt: SocketFilter, repeat: int) -> float:
    """Median over the namespaces of the fastest raw dump inside each (ms)."""
    wanted = set(names)
    entries = [e for e in namespaces.discover() if e.namespace.name in wanted]

    def timed(entry):
        return fastest_ms(lambda: linux_netlink.collect(flt, netns=entry.namespace.inode),
                          repeat)

    results = namespaces.run_in(entries, timed)
    return statistics.median(r for r in results if not isinstance(r, OSError))


def snapshot_ms(flt: SocketFilter, owners: bool, repeat: int) -> float:
    take_snapshot(flt, netns="all", owners=owners)              # warm caches
    return fastest_ms(lambda: take_snapshot(flt, netns="all", owners=owners), repeat)


VIEWS = (("full", SocketFilter()), ("listeners", SocketFilter.listeners()))
#: the kernel's cost split by request: TCP (one walk for both families) and UDP (two).
PARTS = (("tcp full", SocketFilter(protos=frozenset({Proto.TCP}))),
         ("tcp listeners", SocketFilter.listeners(protos=frozenset({Proto.TCP}))),
         ("udp (both families)", SocketFilter(protos=frozenset({Proto.UDP}))))


def measure(repeat: int) -> dict:
    return {f"{view}/{'owners' if owners else 'no-owners'}": snapshot_ms(flt, owners, repeat)
            for view, flt in VIEWS for owners in (False, True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10, help="namespaces first (default 10)")
    parser.add_argument("--large", type=int, default=50, help="namespaces then (default 50)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per figure (fastest)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (ip netns, setns)")
    extra = args.large - args.small
    spaces = Namespaces()
    rounds = []
    try:
        spaces.add(args.small)
        for _ in range(args.rounds):
            small = measure(args.repeat)
            spaces.add(extra)
            large = measure(args.repeat)
            kernel = {view: kernel_cost_ms(spaces.names, flt, args.repeat)
                      for view, flt in VIEWS + PARTS}
            spaces.remove_last(extra)
            rounds.append((small, large, kernel))
        hosts_sockets = len(take_snapshot(netns="host", owners=False).sockets)
    finally:
        spaces.close()
    rows = []
    for key in rounds[0][0]:
        view = key.split("/")[0]
        slopes = [(large[key] - small[key]) / extra for small, large, _ in rounds]
        kernels = [kernel[view] for _, _, kernel in rounds]
        slope, cost = statistics.median(slopes), statistics.median(kernels)
        rows.append({"view": key,
                     "small_ms": statistics.median(r[0][key] for r in rounds),
                     "large_ms": statistics.median(r[1][key] for r in rounds),
                     "per_namespace_ms": slope, "per_namespace_ms_rounds": slopes,
                     "kernel_dump_ms": cost, "ratio": slope / cost})
    print(f"host sockets: {hosts_sockets}; namespaces: {args.small} then {args.large}; "
          f"fastest of {args.repeat} runs, median of {args.rounds} rounds")
    print(f"{'view':<22}{'T(small) ms':>12}{'T(large) ms':>12}{'per ns ms':>11}"
          f"{'kernel ms':>11}{'ratio':>7}")
    for r in rows:
        print(f"{r['view']:<22}{r['small_ms']:>12.1f}{r['large_ms']:>12.1f}"
              f"{r['per_namespace_ms']:>11.3f}{r['kernel_dump_ms']:>11.3f}{r['ratio']:>7.2f}")
    parts = {part: statistics.median(r[2][part] for r in rounds) for part, _ in PARTS}
    print("kernel dump per namespace: " + ", ".join(f"{k} {v:.3f} ms" for k, v in parts.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host_sockets": hosts_sockets, "small": args.small,
                       "large": args.large, "repeat": args.repeat, "rounds": args.rounds,
                       "rows": rows, "kernel_parts_ms": parts}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
