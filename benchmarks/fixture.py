#!/usr/bin/env python3
"""A controlled socket load for portscope's benchmark (benchmarks/run.py).

Creates, then holds until SIGTERM/SIGINT:

* N established TCP connections over loopback with both ends held here (2N sockets); each
  connection goes to one of L listeners on ports BASE .. BASE+L-1;
* U UDP sockets bound to loopback, in pairs: the second of each pair is connected to the
  first, so half of them are connected;
* a share (--v6-fraction, 25 %) of the listeners (and so of their connections) and of the UDP
  pairs on ::1, the rest on 127.0.0.1 (nothing else is ever contacted);
* S server processes (listeners, accepted ends, UDP) and C client processes (connecting
  ends, UDP);
* I idle processes without sockets, F open files each (the /proc/*/fd scan pays for every fd
  of every process, not only for sockets);
* the probe: a listener on port P held by two processes spawned last, the probe process and
  a worker it forks after listen() (a pre-fork server), so the worker has the highest PID of
  the fixture and a /proc scan in PID order finds the holders of P last. The probe process
  also makes 2 connections to P and holds both ends: 3 sockets have local port P.

PID order is: servers, idle processes, clients, probe, probe worker.

Every TCP socket uses SO_LINGER {1, 0}: teardown sends RST and leaves no TIME_WAIT behind.
Children die with the controller (PR_SET_PDEATHSIG). RLIMIT_NOFILE is raised as needed
(above the hard limit only as root). Listener ports must lie outside the ephemeral range.

When everything is up, writes the state file (PIDs, probe port and holders, expected socket
counts) atomically and prints "READY <state file>" on stdout. SIGTERM or SIGINT tears it all
down, removes the state file and prints "DONE".

    python3 fixture.py --conns 10000 --state /tmp/fx.json
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import tempfile
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LINGER_RST = struct.pack("ii", 1, 0)
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
FAMILY_NAME = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}

_libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str) -> None:
    print(f"[fixture {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def read_int_file(path: str, default=None):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return default


def raise_nofile(want: int) -> int:
    """make the soft fd limit at least `want`; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    nr_open = (read_int_file("/proc/sys/fs/nr_open") or [want])[0]
    new = min(want, nr_open)
    try:  # above the hard limit: needs CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, new))
        return new
    except (OSError, ValueError) as e:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log(f"cannot raise RLIMIT_NOFILE to {want} ({e}); using the hard limit {hard}")
        return hard


def spread(i: int, fraction: float) -> bool:
    """True for about `fraction` of the items, spread evenly (item 0 only if fraction is 1)."""
    return int((i + 1) * fraction) > int(i * fraction)


class Plan:
    """Which process owns which socket: deterministic, computed before anything is spawned."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        # listener i: (port, family, server index)
        self.listeners = []
        for i in range(a.listeners):
            fam = socket.AF_INET6 if spread(i, a.v6_fraction) else socket.AF_INET
            self.listeners.append((a.base_port + i, fam, i % a.servers))
        # connection j goes to listener j % L and is made by client j % C
        self.conns_per_listener = [a.conns // a.listeners + (i < a.conns % a.listeners)
                                   for i in range(a.listeners)]
        # UDP pair p is held by worker p % (S + C) (servers first, then clients)
        self.workers = a.servers + a.clients
        self.udp_pairs = a.udp // 2
        self.udp_single = a.udp % 2  # an odd one out, unconnected, held by server 0

    def server_listeners(self, s: int):
        return [(i, port, fam) for i, (port, fam, srv) in enumerate(self.listeners) if srv == s]

    def server_accepts(self, s: int) -> int:
        return sum(self.conns_per_listener[i] for i, _, _ in self.server_listeners(s))

    def client_targets(self, c: int):
        a = self.a
        return [self.listeners[j % a.listeners][:2] for j in range(c, a.conns, a.clients)]

    def udp_for(self, worker: int):
        """families of the UDP pairs held by worker `worker`."""
        return [socket.AF_INET6 if spread(p, self.a.v6_fraction) else socket.AF_INET
                for p in range(worker, self.udp_pairs, self.workers)]

    def expected(self) -> dict:
        """socket counts by "proto family state" as ss/portscope name them, and the total."""
        a = self.a
        by: dict[str, int] = {}

        def add(key: str, n: int) -> None:
            if n:
                by[key] = by.get(key, 0) + n

        for i, (port, fam, _) in enumerate(self.listeners):
            add(f"tcp {FAMILY_NAME[fam]} LISTEN", 1)
            add(f"tcp {FAMILY_NAME[fam]} ESTABLISHED", 2 * self.conns_per_listener[i])
        add("tcp ipv4 LISTEN", 1)              # probe listener
        add("tcp ipv4 ESTABLISHED", 2 * a.probe_conns)
        for w in range(self.workers):
            for fam in self.udp_for(w):
                add(f"udp {FAMILY_NAME[fam]} UNCONN", 1)
                add(f"udp {FAMILY_NAME[fam]} ESTABLISHED", 1)
        add("udp ipv4 UNCONN", self.udp_single)
        return {"by_kind": dict(sorted(by.items())), "sockets": sum(by.values())}


# ---------------------------------------------------------------- children

def make_udp(families, extra_single: bool):
    held = []
    for fam in families:
        first = socket.socket(fam, socket.SOCK_DGRAM)
        first.bind((LOOPBACK[fam], 0))
        second = socket.socket(fam, socket.SOCK_DGRAM)
        second.bind((LOOPBACK[fam], 0))
        second.connect(first.getsockname()[:2])
        held += [first, second]
    if extra_single:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        held.append(s)
    return held


def server_main(plan: Plan, s: int, report) -> list:
    a = plan.a
    somaxconn = (read_int_file("/proc/sys/net/core/somaxconn") or [4096])[0]
    listening = []
    for i, port, fam in plan.server_listeners(s):
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ls.bind((LOOPBACK[fam], port))
        ls.listen(min(somaxconn, plan.conns_per_listener[i] + 64))
        ls.setblocking(False)
        listening.append(ls)
    udp = make_udp(plan.udp_for(s), s == 0 and plan.udp_single)
    report("listening", s, 0)
    want = plan.server_accepts(s)
    accepted = []
    poller = select.epoll()
    by_fd = {ls.fileno(): ls for ls in listening}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + a.setup_timeout
    while len(accepted) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"server {s} accepted {len(accepted)} of {want}")
        for fd, _ in poller.poll(1.0):
            while True:
                try:
                    conn, _ = by_fd[fd].accept()
                except BlockingIOError:
                    break
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                accepted.append(conn)
    poller.close()
    report("ready", s, len(listening) + len(accepted) + len(udp))
    return [listening, accepted, udp]


def connect_retrying(fam: int, port: int) -> socket.socket:
    for attempt in range(100):
        cs = socket.socket(fam, socket.SOCK_STREAM)
        cs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        try:
            cs.connect((LOOPBACK[fam], port))
            return cs
        except OSError as e:
            cs.close()
            if e.errno not in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.EAGAIN) or attempt == 99:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def client_main(plan: Plan, c: int, report) -> list:
    conns = [connect_retrying(fam, port) for port, fam in plan.client_targets(c)]
    udp = make_udp(plan.udp_for(plan.a.servers + c), False)
    report("ready", c, len(conns) + len(udp))
    return [conns, udp]


def idle_main(k: int, nfds: int, held_file: str, report) -> list:
    """hold nfds descriptors of the kinds a real process has: files, pipes, devices, eventfds."""
    fds = []
    kind = 0
    while len(fds) < nfds:
        kind += 1
        if kind % 5 == 0 and nfds - len(fds) >= 2:
            fds += list(os.pipe())
        elif kind % 5 == 1:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        elif kind % 5 == 2 and hasattr(os, "eventfd"):
            fds.append(os.eventfd(0))
        elif kind % 5 == 3:
            fds.append(os.open("/proc/self/status", os.O_RDONLY))
        else:
            fds.append(os.open(held_file, os.O_RDONLY))
    report("ready", k, 0)
    return fds


def probe_main(a: argparse.Namespace, report) -> list:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.probe_port))
    ls.listen(64)
    # the worker shares the listener (fork after listen(), as a pre-fork server does)
    worker = spawn(probe_worker_main, [ls])
    pairs = []
    for _ in range(a.probe_conns):
        cs = connect_retrying(socket.AF_INET, a.probe_port)
        conn, _ = ls.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        pairs += [cs, conn]
    report("ready", 0, 1 + len(pairs), worker)
    return [ls, pairs, worker]


def probe_worker_main(keep: list, report) -> list:
    report("ready", 0, 0)
    return keep


_STATUS_W = -1
_STATUS_R = -1
_CONTROLLER = 0


def make_reporter(kind: str):
    def report(event: str, idx: int, nsock: int, *extra) -> None:
        line = " ".join(str(x) for x in (event, kind, idx, os.getpid(), nsock, *extra)) + "\n"
        os.write(_STATUS_W, line.encode())  # < PIPE_BUF: atomic
    return report


def spawn(fn, *args) -> int:
    """fork a child that runs fn(*args, report), then holds what fn returned until killed."""
    global _STATUS_R
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    kind = {server_main: "server", client_main: "client", idle_main: "idle",
            probe_main: "probe", probe_worker_main: "probe_worker"}[fn]
    report = make_reporter(kind)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        if _STATUS_R >= 0:
            os.close(_STATUS_R)
            _STATUS_R = -1
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # do not hold the controller's stdout
        os.close(devnull)
        held = fn(*args, report)  # noqa: F841
        while True:
            signal.pause()
    except BaseException as e:  # report, then exit
        try:
            os.write(_STATUS_W, f"error {kind} 0 {os.getpid()} 0 {type(e).__name__}: {e}\n".encode()[:400])
        except OSError:
            pass
        code = 1
    finally:
        os._exit(code)


class StatusReader:
    def __init__(self, fd: int, stop: list) -> None:
        self.fd = fd
        self.stop = stop
        self.buf = b""
        self.lines: list[list[str]] = []

    def collect(self, event: str, count: int, timeout_s: float) -> list[list[str]]:
        got: list[list[str]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            rest = []
            for parts in self.lines:
                if parts[0] == "error":
                    raise RuntimeError("a fixture process failed: " + " ".join(parts[1:]))
                (got if parts[0] == event and len(got) < count else rest).append(parts)
            self.lines = rest
            if len(got) >= count:
                return got
            if self.stop:
                raise KeyboardInterrupt("signalled during setup")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(got)} of {count} '{event}' reports before the timeout")
            if not select.select([self.fd], [], [], min(left, 1.0))[0]:
                continue
            data = os.read(self.fd, 1 << 16)
            if not data:
                raise RuntimeError("status pipe closed")
            self.buf += data
            *complete, self.buf = self.buf.split(b"\n")
            self.lines += [line.decode(errors="replace").split() for line in complete]


# ---------------------------------------------------------------- controller

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns", "-n", type=int, default=1000, help="established TCP connections N (2N sockets) [1000]")
    p.add_argument("--listeners", type=int, default=300, help="TCP listeners [300]")
    p.add_argument("--udp", type=int, default=400, help="UDP sockets, half of them connected [400]")
    p.add_argument("--servers", type=int, default=8, help="server processes [8]")
    p.add_argument("--clients", type=int, default=8, help="client processes [8]")
    p.add_argument("--idle-procs", type=int, default=1000, help="idle processes without sockets [1000]")
    p.add_argument("--idle-fds", type=int, default=32, help="files held by each idle process [32]")
    p.add_argument("--v6-fraction", type=float, default=0.25, help="share on ::1 [0.25]")
    p.add_argument("--base-port", type=int, default=20000, help="first listener port [20000]")
    p.add_argument("--probe-port", type=int, default=0, help="probe port P [base + listeners + 100]")
    p.add_argument("--probe-conns", type=int, default=2, help="connections to P, both ends held by the probe [2]")
    p.add_argument("--state", default="fixture-state.json", help="state file written when READY")
    p.add_argument("--setup-timeout", type=float, default=600, help="seconds [600]")
    p.add_argument("--die-with-parent", action="store_true", help="tear down when the parent process dies")
    a = p.parse_args(argv)
    if a.probe_port == 0:
        a.probe_port = a.base_port + a.listeners + 100
    if a.listeners < 1 or a.servers < 1 or a.clients < 1 or a.conns < 0 or a.udp < 0:
        p.error("need at least one listener, server and client")
    if not 0 <= a.v6_fraction <= 1:
        p.error("--v6-fraction must lie in [0, 1]")
    a.servers = min(a.servers, a.listeners)
    ports = list(range(a.base_port, a.base_port + a.listeners)) + [a.probe_port]
    if not (1024 <= min(ports) and max(ports) <= 65535) or a.base_port <= a.probe_port < a.base_port + a.listeners:
        p.error("listener ports must be 1024-65535 and the probe port apart from the listener ports")
    lo, hi = read_int_file("/proc/sys/net/ipv4/ip_local_port_range", [32768, 60999])
    if any(lo <= port <= hi for port in ports):
        p.error(f"listener ports {min(ports)}-{max(ports)} overlap the ephemeral range {lo}-{hi}")
    return a


def main(argv=None) -> int:
    global _STATUS_R, _STATUS_W
    a = parse_args(argv)
    t0 = time.monotonic()
    parent = os.getppid()
    if a.die_with_parent:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            return 1
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned probe worker comes back to us, not to init
    plan = Plan(a)
    expected = plan.expected()
    per_server = max(len(plan.server_listeners(s)) + plan.server_accepts(s) for s in range(a.servers))
    per_client = -(-a.conns // a.clients)
    nofile = raise_nofile(max(per_server, per_client, a.idle_fds) + 2 * (plan.udp_pairs // plan.workers + 2) + 64)
    pid_max = (read_int_file("/proc/sys/kernel/pid_max") or [0])[0]
    last_pid = (read_int_file("/proc/sys/kernel/ns_last_pid") or [0])[0]
    nprocs = a.servers + a.clients + a.idle_procs + 2
    if pid_max and last_pid + nprocs + 50 > pid_max:
        log(f"warning: PIDs will wrap (last {last_pid}, {nprocs} to spawn, pid_max {pid_max}): "
            "the probe may not get the highest PID")
    log(f"plan: {a.conns} conns, {a.listeners} listeners, {a.udp} udp, {a.servers}+{a.clients} workers, "
        f"{a.idle_procs} idle x {a.idle_fds} fds, probe port {a.probe_port}; "
        f"{expected['sockets']} sockets; RLIMIT_NOFILE {nofile}")

    tmpdir = tempfile.mkdtemp(prefix="portscope-bench-fixture-")
    held_file = os.path.join(tmpdir, "held")
    with open(held_file, "wb") as f:
        f.write(b"portscope benchmark fixture\n")
    _STATUS_R, _STATUS_W = os.pipe()
    stop: list[int] = []
    status = StatusReader(_STATUS_R, stop)
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    gc.collect()
    gc.freeze()  # forked children then do not copy the parent's heap pages
    children: dict[int, str] = {}
    state: dict = {}
    rc = 0
    try:
        for s in range(a.servers):
            children[spawn(server_main, plan, s)] = f"server {s}"
        status.collect("listening", a.servers, a.setup_timeout)
        for k in range(a.idle_procs):
            children[spawn(idle_main, k, a.idle_fds, held_file)] = f"idle {k}"
        for c in range(a.clients):
            children[spawn(client_main, plan, c)] = f"client {c}"
        children[spawn(probe_main, a)] = "probe"
        reports = status.collect("ready", a.servers + a.clients + a.idle_procs + 2, a.setup_timeout)
        pids: dict[str, list[int]] = {"server": [], "client": [], "idle": [], "probe": [], "probe_worker": []}
        nsock = 0
        for _ev, kind, _idx, pid, n, *_ in reports:
            pids[kind].append(int(pid))
            nsock += int(n)
        for v in pids.values():
            v.sort()
        probe, worker = pids["probe"][0], pids["probe_worker"][0]
        children[worker] = "probe worker"
        if nsock != expected["sockets"]:
            raise RuntimeError(f"processes report {nsock} sockets, plan says {expected['sockets']}")
        fixture_pids = [p for v in pids.values() for p in v]
        host_pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
        t_ready = time.monotonic()
        state = {
            "controller_pid": os.getpid(),
            "pids": pids,
            "socket_holders": sorted(pids["server"] + pids["client"] + [probe, worker]),
            "probe": {
                "port": a.probe_port,
                "address": "127.0.0.1",
                "holders": [probe, worker],
                "listener_holders": [probe, worker],
                "sockets_on_port": 1 + a.probe_conns,  # listener + accepted ends (local port P)
                "highest_fixture_pid": worker == max(fixture_pids),
                "highest_pid_on_host": worker == max(host_pids),
            },
            "listener_ports": [a.base_port, a.base_port + a.listeners - 1],
            "expected": {
                **expected,
                "tcp": sum(v for k, v in expected["by_kind"].items() if k.startswith("tcp")),
                "udp": sum(v for k, v in expected["by_kind"].items() if k.startswith("udp")),
                "processes": len(fixture_pids),
                "idle_fds": a.idle_procs * a.idle_fds,
            },
            "params": {k: v for k, v in vars(a).items() if k not in ("state", "die_with_parent")},
            "rlimit_nofile": nofile,
            "pid_max": pid_max,
            "setup_s": round(t_ready - t0, 3),
        }
        tmp = a.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, a.state)
        log(f"ready in {t_ready - t0:.1f} s: {nsock} sockets in {a.servers + a.clients + 2} processes, "
            f"{a.idle_procs} idle processes; probe port {a.probe_port} held by {probe} and {worker}")
        print(f"READY {a.state}", flush=True)
        while not stop:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid:
                log(f"{children.pop(pid, pid)} (pid {pid}) exited unexpectedly: status {wstatus}")
                rc = 3
                break
            time.sleep(0.2)
    except BaseException as e:
        log(f"failed: {type(e).__name__}: {e}")
        rc = 2
    finally:
        t1 = time.monotonic()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # reap all, orphaned grandchildren included
            try:
                pid, _ = os.waitpid(-1, 0)
                children.pop(pid, None)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in (held_file, a.state if state else None):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        try:
            os.rmdir(tmpdir)
        except OSError:
            pass
        log(f"torn down in {time.monotonic() - t1:.1f} s")
        print("DONE", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
