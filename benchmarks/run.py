#!/usr/bin/env python3
"""portscope's benchmark: portscope beside ss, lsof, fuser and psutil on one live socket load.

For each scale N (established loopback connections; --scales, default 1000,100000):

1. start fixture.py (2N TCP sockets plus listeners, UDP, idle processes) and wait for READY;
2. warm-up round: every command once, output kept; check portscope's answers against the
   fixture (socket counts, every holder of the probe port P) and that the other tools saw P;
3. measured rounds, interleaved (A B C ... A B C ...), so that noise on the machine hits every
   command alike; at least --runs rounds, more while they fit --budget;
4. write results/scale-N.json, tear the fixture down, and re-render results/summary.md.

Each run is one whole process (interpreter start included), stdout to /dev/null. Wall time is
measured around spawn and wait; CPU time and peak RSS come from wait4()'s rusage of the tool.
The tool is started through a small shell (dash) and collected as an orphan (this process is
a child subreaper): a process forked straight from this Python process would report this
process's RSS as its own peak, because the kernel keeps the larger of the two over exec.

    python benchmarks/run.py                       # 1000 and 100000
    python benchmarks/run.py --scales 1000 --budget 20
    python benchmarks/run.py --portscope 'python -m portscope' --out /tmp/other
    python benchmarks/run.py --report              # re-render summary.md from the JSON files
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import fcntl
import gc
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PR_SET_CHILD_SUBREAPER = 36
MIB = 1024.0

# Targets (whole process, median wall / peak RSS), shown as pass/fail in the summary.
TARGETS = [
    # (scale, command key, metric, limit, label)
    (100_000, "ps_full", "median_ms", 1000.0, "full snapshot `list -a --json` <= 1.0 s"),
    (100_000, "ps_full", "maxrss_mib", 120.0, "full snapshot peak RSS <= 120 MiB"),
    (100_000, "ps_port", "median_ms", 600.0, "`portscope P`, all owners, <= 0.6 s"),
    (1_000, "ps_full", "median_ms", 95.0, "full snapshot `list -a --json` <= 95 ms"),
]

# Ratios portscope / other tool from the same run: (portscope key, {column: other key}).
RATIOS = [
    ("ps_full", {"ss": "ss_full", "lsof": "lsof_full", "psutil": "psutil_full"}),
    ("ps_port", {"ss": "ss_port", "lsof": "lsof_port", "fuser": "fuser_port", "psutil": "psutil_full"}),
    ("ps_port_json", {"ss": "ss_port", "lsof": "lsof_port", "fuser": "fuser_port", "psutil": "psutil_full"}),
    ("ps_full_proc", {"ss": "ss_full", "lsof": "lsof_full", "psutil": "psutil_full"}),
    ("ps_port_proc", {"ss": "ss_port", "lsof": "lsof_port", "fuser": "fuser_port", "psutil": "psutil_full"}),
]


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running one command

@dataclass
class Run:
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    rc: int
    timed_out: bool = False


def _high_fd(fd: int) -> int:
    """move fd above the numbers the launcher script uses (0-4), close-on-exec."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Launcher:
    """spawn a command through a small shell and wait4() for it as its subreaper."""

    # The shell forks the command in the background, then replaces itself with /bin/echo to
    # report the PID: dash would otherwise reap a quick command itself before exiting.
    SCRIPT = '"$@" </dev/null >&3 2>&4 3>&- 4>&- & exec echo $!'

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.shell = shutil.which("dash") or shutil.which("sh")
        if not self.shell:
            raise SystemExit("need dash or sh to launch the commands")
        self.shell_cpu_s = 0.0  # CPU of the launcher shells, for the foreign-load estimate
        # Python commands must find their bytecode cached, as in any installation: without a
        # cache (PYTHONDONTWRITEBYTECODE, or a source tree that cannot be written) every run would
        # compile its modules from source again, 20-40 ms for portscope. The cache goes to a
        # private folder (filled by the warm-up round), so the source tree stays untouched.
        self.env = dict(os.environ)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.pycache = None
        if "PYTHONPYCACHEPREFIX" not in self.env:
            self.pycache = tempfile.mkdtemp(prefix="portscope-bench-pycache-")
            self.env["PYTHONPYCACHEPREFIX"] = self.pycache

    def close(self) -> None:
        if self.pycache:
            shutil.rmtree(self.pycache, ignore_errors=True)

    def run(self, argv: list[str], out_path: str | None = None, err_path: str | None = None,
            timeout_s: float = 300.0) -> Run:
        for attempt in range(3):
            try:
                return self._run(argv, out_path, err_path, timeout_s)
            except (ChildProcessError, ProcessLookupError):  # reaped by the shell: no rusage
                log(f"lost the rusage of {argv[0]} (attempt {attempt + 1}); running it again")
        raise RuntimeError(f"cannot collect {argv}")

    def _run(self, argv: list[str], out_path: str | None, err_path: str | None, timeout_s: float) -> Run:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        out = _high_fd(os.open(out_path or os.devnull, flags, 0o600))
        err = _high_fd(os.open(err_path or os.devnull, flags, 0o600))
        r, w = (_high_fd(fd) for fd in os.pipe())
        actions = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, out, 3), (os.POSIX_SPAWN_DUP2, err, 4)]
        t0 = time.perf_counter()
        shell = os.posix_spawn(self.shell, [self.shell, "-c", self.SCRIPT, "sh", *argv], self.env,
                               file_actions=actions)
        for fd in (w, out, err):
            os.close(fd)
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
        os.close(r)
        _, _, ru_shell = os.wait4(shell, 0)
        self.shell_cpu_s += ru_shell.ru_utime + ru_shell.ru_stime
        pid = int(data)
        pidfd = os.pidfd_open(pid)
        timed_out = False
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(int(timeout_s * 1000)):
                timed_out = True
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
        _, status, ru = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
        return Run(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, os.waitstatus_to_exitcode(status), timed_out)


# ---------------------------------------------------------------- machine facts and noise

def read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def tool_output(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", read("/proc/cpuinfo"))
    mem = re.search(r"MemTotal:\s*(\d+)", read("/proc/meminfo"))
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu.group(1).strip() if cpu else None,
        "mem_total_gib": round(int(mem.group(1)) / MIB / MIB, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tcp_ehash_entries": int(read("/proc/sys/net/ipv4/tcp_ehash_entries", "0") or 0),
        "pid_max": int(read("/proc/sys/kernel/pid_max", "0") or 0),
        "uid": os.getuid(),
    }


def tool_versions(portscope: list[str]) -> dict:
    def first(text: str, pattern: str = "") -> str | None:
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        hit = [l for l in lines if pattern in l] if pattern else lines
        return hit[0] if hit else None

    v = {
        "portscope": first(tool_output(portscope + ["--version"])),
        "ss": first(tool_output(["ss", "-V"])) if shutil.which("ss") else None,
        "lsof": first(tool_output(["lsof", "-v"]), "revision:") if shutil.which("lsof") else None,
        "fuser": first(tool_output(["fuser", "-V"])) if shutil.which("fuser") else None,
        "psutil": first(tool_output([sys.executable, "-c", "import psutil; print(psutil.__version__)"])),
        "python": platform.python_version(),
    }
    head = tool_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    if head and re.fullmatch(r"[0-9a-f]{4,40}", head):
        dirty = tool_output(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
        v["portscope_git"] = head + ("+uncommitted-src" if dirty else "")
    return v


def cpu_loop_ms(repeat: int = 5) -> float:
    """median time of a fixed pure-Python CPU loop: slower than usual = a busy or throttled CPU."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i ^ (i >> 3)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_jiffies() -> tuple[float, float]:
    """(busy seconds, steal seconds) of the whole machine so far."""
    f = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def other_load_cores(window_s: float = 1.0) -> float:
    """CPU cores busy over a short window while this process sleeps (the fixture is idle)."""
    b0, _ = cpu_jiffies()
    s0, t0 = self_cpu_s(), time.perf_counter()
    time.sleep(window_s)
    b1, _ = cpu_jiffies()
    return max(0.0, (b1 - b0) - (self_cpu_s() - s0)) / (time.perf_counter() - t0)


def wait_quiet(budget: dict, limit_cores: float = 0.25) -> None:
    """sleep while other processes keep more than limit_cores busy, within budget["left_s"]."""
    while budget["left_s"] > 0:
        t = time.perf_counter()
        load = other_load_cores()
        if load <= limit_cores:
            budget["left_s"] -= time.perf_counter() - t
            return
        log(f"  machine busy ({load:.2f} cores used by others): waiting")
        time.sleep(min(4.0, budget["left_s"]))
        spent = time.perf_counter() - t
        budget["left_s"] -= spent
        budget["waited_s"] += spent


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def host_census() -> dict:
    """processes, fds and sockets on the host right now (the load every tool walks)."""
    procs = fds = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fds += len(os.listdir(f"/proc/{d}/fd"))
                procs += 1
            except OSError:
                pass
    socks = {}
    for name in ("sockstat", "sockstat6"):
        for line in read(f"/proc/net/{name}").splitlines():
            key, _, rest = line.partition(":")
            m = re.search(r"inuse (\d+)", rest)
            if m and key in ("TCP", "TCP6", "UDP", "UDP6"):
                socks[key.lower()] = int(m.group(1))
    tw = re.search(r"TCP:.* tw (\d+)", read("/proc/net/sockstat"))
    socks["tcp_time_wait"] = int(tw.group(1)) if tw else None
    return {"processes": procs, "fds": fds, "sockstat": socks,
            "loadavg": read("/proc/loadavg").split()[:3]}


# ---------------------------------------------------------------- the commands

@dataclass
class Cmd:
    key: str
    label: str
    argv: list[str]
    kind: str  # "portscope", "anchor", "reference"
    out_kept: bool = False  # warm-up stdout is checked
    result: dict = field(default_factory=dict)
    walls: list = field(default_factory=list)
    runs: list = field(default_factory=list)


def display_argv(argv: list[str], portscope: list[str]) -> str:
    """a command line without machine paths."""
    if argv[:1] == ["env"] and "=" in argv[1]:
        return shlex.join(argv[:2]) + " " + display_argv(argv[2:], portscope)
    n = len(portscope)
    if argv[:n] == portscope:
        head = [os.path.basename(portscope[0])] + portscope[1:]
        head = ["python" if h == os.path.basename(sys.executable) else h for h in head]
        argv = head + argv[n:]
    elif argv and argv[0] == sys.executable:
        argv = ["python"] + argv[1:]
    return shlex.join([os.path.basename(argv[0])] + argv[1:])


def commands(state: dict, portscope: list[str], only: str | None, skip: str | None) -> list[Cmd]:
    P = str(state["probe"]["port"])
    py = sys.executable
    cmds = [
        Cmd("ps_full", "portscope list -a --json", portscope + ["list", "-a", "--json"], "portscope", True),
        Cmd("ps_port", "portscope P", portscope + [P], "portscope", True),
        Cmd("ps_port_json", "portscope P --json", portscope + [P, "--json"], "portscope", True),
        # the same without the BPF iterators: what a caller without CAP_BPF/CAP_SYS_ADMIN (or
        # a kernel without BTF) gets from the /proc/*/fd scan
        Cmd("ps_full_proc", "PORTSCOPE_FDSCAN=proc portscope list -a --json",
            ["env", "PORTSCOPE_FDSCAN=proc"] + portscope + ["list", "-a", "--json"], "portscope"),
        Cmd("ps_port_proc", "PORTSCOPE_FDSCAN=proc portscope P",
            ["env", "PORTSCOPE_FDSCAN=proc"] + portscope + [P], "portscope"),
        Cmd("ss_full", "ss -tuanp", ["ss", "-tuanp"], "anchor", True),
        Cmd("ss_port", "ss -tanp 'sport = :P'", ["ss", "-tanp", f"sport = :{P}"], "anchor", True),
        Cmd("lsof_full", "lsof -nP -iTCP", ["lsof", "-nP", "-iTCP"], "anchor", True),
        Cmd("lsof_port", "lsof -nP -i :P", ["lsof", "-nP", f"-i:{P}"], "anchor", True),
        Cmd("fuser_port", "fuser -n tcp P", ["fuser", "-n", "tcp", P], "anchor", True),
        Cmd("psutil_full", 'psutil.net_connections("inet")',
            [py, "-c", 'import psutil; psutil.net_connections("inet")'], "anchor"),
        Cmd("ss_noowners", "ss -tan (no owners)", ["ss", "-tan"], "reference", True),
        Cmd("py_start", "python -c pass (interpreter start)", [py, "-c", "pass"], "reference"),
        Cmd("true", "true (launch overhead)", ["true"], "reference"),
    ]
    keep = []
    for c in cmds:
        if only and not re.search(only, c.key + " " + c.label):
            continue
        if skip and re.search(skip, c.key + " " + c.label):
            continue
        exe = c.argv[0]
        if os.sep not in exe and not shutil.which(exe):
            log(f"skipping {c.label}: {exe} not found")
            continue
        keep.append(c)
    return keep


# ---------------------------------------------------------------- correctness checks

def holders_in_text(text: str, pids: list[int]) -> bool:
    return all(re.search(rf"(?<![0-9]){p}(?![0-9])", text) for p in pids)


def check_full(path: str, state: dict) -> dict:
    with open(path, "rb") as f:
        doc = json.load(f)
    socks = doc.get("sockets", [])
    holders = set(state["socket_holders"])
    lo, hi = state["listener_ports"]
    fixture_ports = set(range(lo, hi + 1)) | {state["probe"]["port"]}
    by_kind: dict[str, int] = {}
    inodes = set()
    dup = ownerless_fixture = 0
    probe_listener_owners: list[int] = []
    for s in socks:
        pids = {o["pid"] for o in s.get("owners") or ()}
        local_port = (s.get("local") or {}).get("port")
        remote_port = (s.get("remote") or {}).get("port")
        if pids & holders:
            key = f"{s['proto']} {s['family']} {s['state']}"
            by_kind[key] = by_kind.get(key, 0) + 1
            if s["inode"] in inodes:
                dup += 1
            inodes.add(s["inode"])
            if local_port == state["probe"]["port"] and s["state"] == "LISTEN":
                probe_listener_owners = sorted(pids)
        elif not pids and (local_port in fixture_ports or remote_port in fixture_ports) \
                and (s.get("local") or {}).get("address") in ("127.0.0.1", "::1"):
            ownerless_fixture += 1
    expected = state["expected"]["by_kind"]
    seen = sum(by_kind.values())
    diff = {k: by_kind.get(k, 0) - expected.get(k, 0)
            for k in sorted(set(by_kind) | set(expected)) if by_kind.get(k, 0) != expected.get(k, 0)}
    out = {
        "schema_version": doc.get("schema_version"),
        "complete": doc.get("complete"),
        "warnings": doc.get("warnings", [])[:5],
        "sockets_total": len(socks),
        "fixture_sockets_expected": state["expected"]["sockets"],
        "fixture_sockets_seen": seen,
        "by_kind_diff": diff,
        "duplicate_records": dup,
        "ownerless_on_fixture_ports": ownerless_fixture,
        "probe_listener_owners_ok": probe_listener_owners == sorted(state["probe"]["listener_holders"]),
    }
    out["ok"] = (seen == state["expected"]["sockets"] and not diff and not dup
                 and not ownerless_fixture and out["probe_listener_owners_ok"])
    return out


def check_port(path: str, state: dict) -> dict:
    with open(path, "rb") as f:
        doc = json.load(f)
    P = state["probe"]["port"]
    socks = [s for s in doc.get("sockets", []) if (s.get("local") or {}).get("port") == P]
    holders = sorted({o["pid"] for s in socks for o in s.get("owners") or ()})
    listener = [s for s in socks if s["state"] == "LISTEN"]
    listener_owners = sorted({o["pid"] for s in listener for o in s.get("owners") or ()})
    out = {
        "sockets_on_port": len(socks),
        "sockets_expected": state["probe"]["sockets_on_port"],
        "holders": holders,
        "holders_expected": sorted(state["probe"]["holders"]),
        "listener_holders_ok": listener_owners == sorted(state["probe"]["listener_holders"]),
        "other_records": len(doc.get("sockets", [])) - len(socks),
    }
    out["ok"] = (out["sockets_on_port"] == out["sockets_expected"] and holders == out["holders_expected"]
                 and out["listener_holders_ok"])
    return out


def ss_socket_count() -> int | None:
    try:
        r = subprocess.run(["ss", "-tuanH"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(1 for l in r.stdout.splitlines() if l.strip())


# ---------------------------------------------------------------- one scale

class Fixture:
    def __init__(self, n: int, extra: list[str], timeout_s: float) -> None:
        self.dir = tempfile.mkdtemp(prefix="portscope-bench-")
        self.state_path = os.path.join(self.dir, "state.json")
        argv = [sys.executable, str(HERE / "fixture.py"), "--conns", str(n), "--state", self.state_path,
                "--die-with-parent", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("fixture not ready in time")
            if not select.select([self.proc.stdout], [], [], 1.0)[0]:
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.close()
                raise RuntimeError(f"fixture exited with status {self.proc.wait()}")
            if line.startswith("READY"):
                break
        with open(self.state_path) as f:
            self.state = json.load(f)

    def close(self) -> float:
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return time.monotonic() - t


def summarize(cmd: Cmd) -> None:
    ok = [r for r in cmd.runs if not r.timed_out]
    if not ok:
        return
    walls = [r.wall_s * 1e3 for r in ok]
    cmd.result.update({
        "runs": len(ok),
        "median_ms": statistics.median(walls),
        "min_ms": min(walls),
        "max_ms": max(walls),
        "user_ms": statistics.median(r.user_s * 1e3 for r in ok),
        "sys_ms": statistics.median(r.sys_s * 1e3 for r in ok),
        "maxrss_mib": max(r.maxrss_kib for r in ok) / MIB,
        "maxrss_mib_median": statistics.median(r.maxrss_kib for r in ok) / MIB,
        "walls_ms": [round(w, 2) for w in walls],
        "exit_codes": sorted({r.rc for r in ok}),
    })
    if len(ok) < len(cmd.runs):
        cmd.result["timeouts"] = len(cmd.runs) - len(ok)


def run_scale(n: int, a: argparse.Namespace, portscope: list[str], launcher: Launcher) -> dict:
    started = dt.datetime.now(dt.timezone.utc)
    log(f"N={n}: starting the fixture")
    loop_before_fixture = cpu_loop_ms()
    fx = Fixture(n, shlex.split(a.fixture_args), a.setup_timeout)
    try:
        state = fx.state
        log(f"N={n}: ready in {state['setup_s']} s, {state['expected']['sockets']} fixture sockets, "
            f"probe port {state['probe']['port']}")
        census = host_census()  # also warms the /proc dentries for every tool alike
        cmds = commands(state, portscope, a.only, a.skip)
        tmp = fx.dir
        # warm-up round: output kept, correctness checked
        checks: dict = {}
        t_warm = time.perf_counter()
        for c in cmds:
            out = os.path.join(tmp, f"{c.key}.out") if c.out_kept else None
            err = os.path.join(tmp, f"{c.key}.err")
            r = launcher.run(c.argv, out, err, a.cmd_timeout)
            c.result.update({"label": c.label, "kind": c.kind, "argv": display_argv(c.argv, portscope),
                             "warmup_ms": round(r.wall_s * 1e3, 2), "warmup_rc": r.rc})
            with open(err, "rb") as f:
                head = f.read(400).decode(errors="replace")
            if r.rc not in (0, 1) or r.timed_out:
                c.result["stderr_head"] = head.replace(str(REPO), "<repo>").replace(sys.prefix, "<venv>")
            if r.timed_out:
                c.result["error"] = f"timed out after {a.cmd_timeout} s in the warm-up"
                log(f"  {c.label}: TIMEOUT")
                continue
            if out:
                with open(out, "rb") as f:
                    text = f.read()
                c.result["out_lines"] = text.count(b"\n")
                if c.key in ("ps_port", "ss_port", "lsof_port", "fuser_port"):
                    c.result["saw_all_probe_holders"] = holders_in_text(text.decode(errors="replace"),
                                                                        state["probe"]["holders"])
                del text
            log(f"  warm-up {c.label:40s} {r.wall_s * 1e3:10.1f} ms  rc {r.rc}  "
                f"rss {r.maxrss_kib / MIB:6.1f} MiB")
        warm_s = time.perf_counter() - t_warm
        by = {c.key: c for c in cmds}
        if "ps_full" in by and "out_lines" in by["ps_full"].result:
            checks["full_snapshot"] = check_full(os.path.join(tmp, "ps_full.out"), state)
            checks["full_snapshot"]["ss_tuanH_sockets_after"] = ss_socket_count()
            gc.collect()
        if "ps_port_json" in by and "out_lines" in by["ps_port_json"].result:
            checks["port_query"] = check_port(os.path.join(tmp, "ps_port_json.out"), state)
        if "ps_port" in by and "saw_all_probe_holders" in by["ps_port"].result:
            checks["port_query_text_all_holders"] = by["ps_port"].result["saw_all_probe_holders"]
        checks["other_tools_saw_all_probe_holders"] = {
            k: by[k].result.get("saw_all_probe_holders") for k in ("ss_port", "lsof_port", "fuser_port") if k in by}
        for f in os.listdir(tmp):
            if f.endswith((".out", ".err")):
                os.unlink(os.path.join(tmp, f))
        for name, chk in checks.items():
            if isinstance(chk, dict) and "ok" in chk:
                log(f"  check {name}: {'ok' if chk['ok'] else 'MISMATCH ' + json.dumps(chk)}")
        # measured rounds
        active = [c for c in cmds if "error" not in c.result]
        rounds = max(a.runs, min(a.max_runs, int(a.budget / max(warm_s, 1e-3))))
        log(f"N={n}: {rounds} interleaved rounds of {len(active)} commands (warm-up round {warm_s:.1f} s)")
        quiet_budget = {"left_s": a.wait_quiet, "waited_s": 0.0}
        wait_quiet(quiet_budget)
        loop_before = cpu_loop_ms()
        foreign, steal = [], []
        for i in range(rounds):
            if a.wait_quiet and i:
                wait_quiet(quiet_budget)
            busy0, steal0 = cpu_jiffies()
            self0, shell0, t0 = self_cpu_s(), launcher.shell_cpu_s, time.perf_counter()
            tools_cpu = 0.0
            for c in active:
                r = launcher.run(c.argv, None, None, a.cmd_timeout)
                c.runs.append(r)
                tools_cpu += r.user_s + r.sys_s
            wall = time.perf_counter() - t0
            busy1, steal1 = cpu_jiffies()
            ours = tools_cpu + (self_cpu_s() - self0) + (launcher.shell_cpu_s - shell0)
            foreign.append(max(0.0, (busy1 - busy0) - ours) / wall)
            steal.append((steal1 - steal0) / wall)
            log(f"  round {i + 1}/{rounds}: {wall:.1f} s, other load {foreign[-1]:.2f} cores")
        loop_after = cpu_loop_ms()
        for c in active:
            summarize(c)
        census_after = host_census()
    finally:
        teardown_s = fx.close()
    fixture = {k: state[k] for k in ("expected", "params", "setup_s", "rlimit_nofile")}
    fixture["probe"] = {k: v for k, v in state["probe"].items()}
    fixture["teardown_s"] = round(teardown_s, 2)
    quiet = {
        "cpu_loop_ms_before_fixture": round(loop_before_fixture, 2),
        "cpu_loop_ms_before": round(loop_before, 2),
        "cpu_loop_ms_after": round(loop_after, 2),
        "other_load_cores_median": round(statistics.median(foreign), 3) if foreign else None,
        "other_load_cores_max": round(max(foreign), 3) if foreign else None,
        "other_load_cores_per_round": [round(x, 3) for x in foreign],
        "waited_for_quiet_s": round(quiet_budget["waited_s"], 1),
        "steal_cores_median": round(statistics.median(steal), 3) if steal else None,
        "loadavg_before": census["loadavg"],
        "loadavg_after": census_after["loadavg"],
    }
    doc = {
        "scale": n,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "versions": tool_versions(portscope),
        "portscope_cmd": display_argv(portscope, portscope),
        "launcher": os.path.basename(launcher.shell),
        "python_bytecode": "cached in a private PYTHONPYCACHEPREFIX, filled by the warm-up"
                           if launcher.pycache else "PYTHONPYCACHEPREFIX as set by the caller",
        "rounds": rounds,
        "fixture": fixture,
        "host": {"before": census, "after": census_after},
        "quiet": quiet,
        "checks": checks,
        "commands": {c.key: c.result for c in cmds},
    }
    doc["ratios"] = ratios(doc)
    doc["targets"] = targets(doc)
    return doc


def ratios(doc: dict) -> dict:
    cm = doc["commands"]
    out: dict = {}
    for ps, others in RATIOS:
        if "median_ms" not in cm.get(ps, {}):
            continue
        row = {}
        for col, key in others.items():
            if "median_ms" in cm.get(key, {}):
                row[col] = {"vs": cm[key]["label"], "ratio": round(cm[ps]["median_ms"] / cm[key]["median_ms"], 3)}
        out[ps] = row
    return out


def targets(doc: dict) -> list:
    out = []
    for scale, key, metric, limit, label in TARGETS:
        if scale != doc["scale"]:
            continue
        val = doc["commands"].get(key, {}).get(metric)
        out.append({"target": label, "command": key, "metric": metric, "limit": limit,
                    "value": None if val is None else round(val, 1),
                    "pass": None if val is None else val <= limit})
    return out


# ---------------------------------------------------------------- summary.md

def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if x < 10 else f"{x:.1f}"


def noise_notes(doc: dict) -> list[str]:
    q = doc["quiet"]
    notes = []
    if (q.get("other_load_cores_median") or 0) > 0.25:
        notes.append(f"other processes used {q['other_load_cores_median']:.2f} cores (median over rounds)")
    b, e = q.get("cpu_loop_ms_before"), q.get("cpu_loop_ms_after")
    if b and e and max(b, e) / min(b, e) > 1.15:
        notes.append(f"the CPU loop took {b:.0f} ms before and {e:.0f} ms after the rounds")
    host = doc["host"]["before"]["sockstat"]
    host_socks = sum(v for k, v in host.items() if k in ("tcp", "tcp6", "udp", "udp6") and v)
    if host_socks > 1.2 * doc["fixture"]["expected"]["sockets"] + 1000:
        notes.append(f"the host held about {host_socks:,} sockets, far more than the fixture's "
                     f"{doc['fixture']['expected']['sockets']:,}: another load was running")
    return notes


def render(outdir: Path) -> str:
    docs = []
    for p in sorted(outdir.glob("scale-*.json")):
        m = re.fullmatch(r"scale-(\d+)\.json", p.name)
        if m:
            docs.append(json.loads(p.read_text()))
    docs.sort(key=lambda d: d["scale"])
    L = ["# portscope benchmark results", "",
         "Generated by `benchmarks/run.py` (see `benchmarks/README.md`). Whole-process wall time "
         "(interpreter start included), stdout to /dev/null, medians over interleaved rounds after "
         "one warm-up round; peak RSS is the largest over the runs. Compare within one scale: every "
         "number of a scale comes from the same run on the same live fixture.", ""]
    if not docs:
        return "\n".join(L + ["No results yet.", ""])
    last = docs[-1]
    m, v = last["machine"], last["versions"]
    L += [f"Machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), {m.get('mem_total_gib')} GiB, "
          f"kernel {m.get('kernel')}, Python {m.get('python')}, tcp_ehash_entries {m.get('tcp_ehash_entries')}.",
          "",
          "Versions: " + "; ".join(f"{k}: {val}" for k, val in v.items() if val) + ".", "",
          "## Targets", "",
          "| scale | target | measured | result |", "|---:|---|---:|---|"]
    for d in docs:
        for t in d["targets"]:
            unit = "ms" if t["metric"].endswith("_ms") else "MiB"
            res = "–" if t["pass"] is None else ("**pass**" if t["pass"] else "**FAIL**")
            L.append(f"| {d['scale']:,} | {t['target']} | {fmt(t['value'])} {unit} | {res} |")
    L.append("")
    for d in docs:
        fx = d["fixture"]
        hb = d["host"]["before"]
        q = d["quiet"]
        L += [f"## N = {d['scale']:,}", "",
              f"{d['started_at']}, {d['rounds']} rounds, portscope command `{d['portscope_cmd']}`"
              f" ({d['versions'].get('portscope_git', '?')}). Fixture: {fx['expected']['sockets']:,} sockets "
              f"({fx['expected']['tcp']:,} TCP, {fx['expected']['udp']:,} UDP) in {fx['expected']['processes']:,} "
              f"processes, probe port P = {fx['probe']['port']} held by 2 processes with the highest PIDs"
              f"{'' if fx['probe'].get('highest_pid_on_host') else ' (NOT the highest on the host)'}; "
              f"host: {hb['processes']:,} processes holding {hb['fds']:,} fds, "
              f"{sum(v or 0 for k, v in hb['sockstat'].items() if k in ('tcp', 'tcp6', 'udp', 'udp6')):,} "
              f"TCP/UDP sockets. Set up in {fx['setup_s']} s.", "",
              "| command | median ms | min ms | max ms | CPU ms (user+sys) | peak RSS MiB | runs |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for key, c in d["commands"].items():
            if "median_ms" not in c:
                L.append(f"| `{c['argv']}` | {c.get('error', 'not measured')} | | | | | |")
                continue
            name = f"**`{c['argv']}`**" if c["kind"] == "portscope" else f"`{c['argv']}`"
            if c["kind"] == "reference":
                name += " (reference)"
            L.append(f"| {name} | {fmt(c['median_ms'])} | {fmt(c['min_ms'])} | {fmt(c['max_ms'])} | "
                     f"{fmt(c['user_ms'] + c['sys_ms'])} | {c['maxrss_mib']:.1f} | {c['runs']} |")
        L += ["", "Ratios, portscope / other tool (median wall time, same run; below 1 = portscope faster):", "",
              "| portscope | vs ss | vs lsof | vs fuser | vs psutil |", "|---|---:|---:|---:|---:|"]
        for ps, row in d["ratios"].items():
            cells = []
            for col in ("ss", "lsof", "fuser", "psutil"):
                cells.append(f"{row[col]['ratio']:.2f} (`{row[col]['vs']}`)" if col in row else "–")
            L.append(f"| `{d['commands'][ps]['label']}` | " + " | ".join(cells) + " |")
        L += ["", "Checks (warm-up round):", ""]
        ch = d["checks"]
        if "full_snapshot" in ch:
            f = ch["full_snapshot"]
            L.append(f"- {'ok' if f['ok'] else '**MISMATCH**'}: `list -a --json` shows "
                     f"{f['fixture_sockets_seen']:,} of {f['fixture_sockets_expected']:,} fixture sockets"
                     f" with their owners (host total {f['sockets_total']:,}; `ss -tuanH` right after: "
                     f"{f['ss_tuanH_sockets_after'] if f['ss_tuanH_sockets_after'] is not None else '?'})"
                     + (f"; by kind off by {f['by_kind_diff']}" if f["by_kind_diff"] else "")
                     + (f"; {f['duplicate_records']} duplicate records" if f["duplicate_records"] else "")
                     + (f"; {f['ownerless_on_fixture_ports']} fixture-port sockets without owner"
                        if f["ownerless_on_fixture_ports"] else "")
                     + ("" if f["probe_listener_owners_ok"] else "; probe listener owners wrong")
                     + f"; complete={f['complete']}.")
        if "port_query" in ch:
            p = ch["port_query"]
            L.append(f"- {'ok' if p['ok'] else '**MISMATCH**'}: `portscope P --json` lists "
                     f"{p['sockets_on_port']} of {p['sockets_expected']} sockets on P and holders "
                     f"{len(p['holders'])} of {len(p['holders_expected'])}"
                     + ("" if p["listener_holders_ok"] else " (listener holders wrong)") + ".")
        if "port_query_text_all_holders" in ch:
            L.append(f"- {'ok' if ch['port_query_text_all_holders'] else '**MISMATCH**'}: "
                     "`portscope P` (text) names every holder of P.")
        others = ch.get("other_tools_saw_all_probe_holders", {})
        if others:
            L.append("- every holder of P named by: " + ", ".join(
                f"`{d['commands'][k]['label']}` {'yes' if ok else 'no'}" for k, ok in others.items()) + ".")
        L += ["", f"Quiet-machine indicators: CPU loop {q['cpu_loop_ms_before']} ms before / "
              f"{q['cpu_loop_ms_after']} ms after the rounds; load from other processes "
              f"{q['other_load_cores_median']} cores median, {q['other_load_cores_max']} max; "
              f"steal {q['steal_cores_median']} cores; loadavg {' '.join(q['loadavg_before'])} → "
              f"{' '.join(q['loadavg_after'])}"
              + (f"; waited {q['waited_for_quiet_s']} s for a quiet machine" if q.get("waited_for_quiet_s") else "")
              + "."]
        notes = noise_notes(d)
        if notes:
            L += ["", "**Noisy run:** " + "; ".join(notes) + ". Absolute times are inflated; ratios still hold "
                  "roughly, as every command met the same conditions round by round."]
        L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", default="1000,100000", help="comma-separated N values [1000,100000]")
    p.add_argument("--portscope", default=None,
                   help="portscope command to time, e.g. 'python -m portscope' [the one next to this python]")
    p.add_argument("--runs", type=int, default=5, help="minimum measured rounds [5]")
    p.add_argument("--max-runs", type=int, default=15, help="maximum measured rounds [15]")
    p.add_argument("--budget", type=float, default=60.0, help="seconds of measured rounds to aim for [60]")
    p.add_argument("--cmd-timeout", type=float, default=300.0, help="seconds per command run [300]")
    p.add_argument("--setup-timeout", type=float, default=900.0, help="seconds for the fixture to come up [900]")
    p.add_argument("--fixture-args", default="", help="extra fixture.py options, e.g. '--idle-procs 500'")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each round, wait (up to SECONDS in all) while other processes use "
                        "more than 0.25 cores [0: do not wait]")
    p.add_argument("--only", help="regex: time only these commands (key or label)")
    p.add_argument("--skip", help="regex: skip these commands")
    p.add_argument("--out", default=str(HERE / "results"), help="results folder [benchmarks/results]")
    p.add_argument("--report", action="store_true", help="only re-render summary.md from the JSON files")
    a = p.parse_args(argv)
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    if not a.report:
        if a.runs < 1 or a.max_runs < a.runs:
            p.error("need 1 <= --runs <= --max-runs")
        if a.portscope:
            portscope = shlex.split(a.portscope)
        else:
            near = os.path.join(os.path.dirname(sys.executable), "portscope")
            found = near if os.access(near, os.X_OK) else shutil.which("portscope")
            portscope = [found] if found else [sys.executable, "-m", "portscope"]
        if os.sep in portscope[0]:
            portscope[0] = os.path.abspath(portscope[0])
        elif shutil.which(portscope[0]):
            portscope[0] = shutil.which(portscope[0])
        launcher = Launcher()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            for n in (int(x) for x in a.scales.split(",") if x.strip()):
                doc = run_scale(n, a, portscope, launcher)
                path = outdir / f"scale-{n}.json"
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(doc, indent=1) + "\n")
                tmp.replace(path)
                log(f"N={n}: wrote {path}")
                (outdir / "summary.md").write_text(render(outdir))
                for t in doc["targets"]:
                    log(f"  target {t['target']}: {t['value']} -> {'pass' if t['pass'] else 'FAIL'}")
                reap_strays()
        finally:
            launcher.close()
    (outdir / "summary.md").write_text(render(outdir))
    log(f"wrote {outdir / 'summary.md'}")
    return 0


def reap_strays() -> None:
    """as a subreaper we may inherit orphans (e.g. of a tool that timed out); collect them."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


if __name__ == "__main__":
    sys.exit(main())
