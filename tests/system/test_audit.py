"""``portscope audit`` against real processes and sockets.

Most tests run inside a network namespace of their own (``ip netns add``): the host may hold
other people's listeners that come and go, and an audit there would judge them too. The test's
processes enter the namespace with ``setns()`` before they open sockets; the CLI runs under
``ip netns exec``. Processes, namespaces, mounts and files are removed even when a test fails.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from holders import PRELUDE

import portscope
from portscope import Proto, SocketFilter
from portscope.owners.process import process_info
from portscope.audit import audit as run_audit
from portscope.audit import facts

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/proc/self/ns/net"),
    reason="needs root, Linux and iproute2 (network namespaces)")

FINDING_KEYS = ["rule", "severity", "proto", "address", "port", "pid", "exe", "user", "message",
                "fix"]
_names = itertools.count()
CLONE_NEWNET = 0x40000000


class Namespace:
    """A named network namespace with loopback up."""

    def __init__(self) -> None:
        self.name = f"psaudit-{os.getpid()}-{next(_names)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def code(self, snippet: str, exe: str | None = None) -> str:
        """Holder code that enters this namespace first; with ``exe``, the holder re-executes
        itself as that interpreter (same PID, same pipes) to run ``snippet``."""
        enter = (f"_fd = os.open('/run/netns/{self.name}', os.O_RDONLY)\n"
                 f"assert _libc.setns(_fd, {CLONE_NEWNET}) == 0\n"
                 "os.close(_fd)\n")
        body = enter + textwrap.dedent(snippet)
        if exe is None:
            return body
        return f"os.execv({exe!r}, [{exe!r}, '-c', {PRELUDE + body!r}])\n"

    def cli(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
        """``python -m portscope ARGS`` inside the namespace (optionally as ``user``)."""
        cmd = [sys.executable, "-m", "portscope", *args]
        if user:
            cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})

    def audit_json(self, *args: str) -> tuple[int, dict]:
        result = self.cli("audit", "--json", *args)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def netns():
    ns = Namespace()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def scratch():
    """A fresh directory under /tmp (world-readable, so unprivileged runs can read it)."""
    path = tempfile.mkdtemp(prefix="psaudit-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def copy_python(directory: str, name: str = "python3") -> str:
    path = os.path.join(directory, name)
    shutil.copy2(os.path.realpath(sys.executable), path)
    return path


def of(doc: dict, pid: int | None = None, port: int | None = None) -> dict[str, dict]:
    """The findings about one process or port, by rule id."""
    return {f["rule"]: f for f in doc["findings"]
            if (pid is None or f["pid"] == pid) and (port is None or f["port"] == port)}


LISTEN_ANY = "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen()\nready(port=s.getsockname()[1])"


# --- rules on real processes ---------------------------------------------------------------------

def test_python_copy_in_tmp_on_all_interfaces(netns, holder, scratch):
    copy = copy_python(scratch)
    h = holder(netns.code(LISTEN_ANY, exe=copy))
    code, doc = netns.audit_json()
    assert code == 1
    mine = of(doc, pid=h.info["pid"])
    assert {"exe-temp-dir", "exposed-all-interfaces", "interpreter-listener"} <= mine.keys()
    temp = mine["exe-temp-dir"]
    assert list(temp) == FINDING_KEYS
    assert (temp["severity"], temp["proto"], temp["address"], temp["port"], temp["exe"],
            temp["user"]) == ("high", "tcp", "0.0.0.0", h.info["port"], copy, "root")
    assert mine["exposed-all-interfaces"]["severity"] == "medium"


def test_deleted_then_replaced_executable(netns, holder, scratch):
    copy = copy_python(scratch, "server")
    h = holder(netns.code(LISTEN_ANY, exe=copy))
    os.unlink(copy)
    code, doc = netns.audit_json()
    deleted = of(doc, pid=h.info["pid"])
    assert code == 1 and "exe-replaced" not in deleted
    assert deleted["exe-deleted"]["exe"] == copy and deleted["exe-deleted"]["severity"] == "high"
    with open(copy, "wb") as f:
        f.write(b"#!/bin/sh\necho a different program\n")
    _, doc = netns.audit_json()
    replaced = of(doc, pid=h.info["pid"])
    assert "exe-deleted" not in replaced and replaced["exe-replaced"]["exe"] == copy


def test_process_renamed_to_a_kernel_thread_and_to_sshd(netns, holder):
    kworker = holder(netns.code("""
        _libc.prctl(15, b"[kworker/0:1]")              # PR_SET_NAME
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        ready(port=s.getsockname()[1])
    """))
    fake_sshd = holder(netns.code("""
        _libc.prctl(15, b"sshd")
        s = socket.socket(); s.bind(("0.0.0.0", 22)); s.listen()
        ready(port=22)
    """))
    with open(f"/proc/{kworker.info['pid']}/comm") as f:
        assert f.read().strip() == "[kworker/0:1]"
    code, doc = netns.audit_json()
    assert code == 1
    k = of(doc, pid=kworker.info["pid"])
    assert k["kthread-impersonation"]["severity"] == "high" and "name-mismatch" not in k
    assert "[kworker/0:1]" in k["kthread-impersonation"]["message"]
    s = of(doc, pid=fake_sshd.info["pid"])
    assert {"name-mismatch", "unexpected-program"} <= s.keys()
    assert "'sshd'" in s["name-mismatch"]["message"]
    # the name is not trusted: the executable says python
    assert "python" in s["unexpected-program"]["message"]


def test_loopback_listener_draws_no_exposure(netns, holder):
    h = holder(netns.code("""
        a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen()
        b = socket.socket(socket.AF_INET6); b.bind(("::1", 0)); b.listen()
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("127.0.0.1", 5353))
        d = socket.socket(); d.bind(("0.0.0.0", 0)); d.listen()
        ready(loopback=[a.getsockname()[1], b.getsockname()[1], 5353], wild=d.getsockname()[1])
    """))
    _, doc = netns.audit_json()
    for port in h.info["loopback"]:
        assert not [r for r in of(doc, port=port) if r.startswith("exposed")], port
    assert "exposed-all-interfaces" in of(doc, port=h.info["wild"])
    assert doc["listeners"] == 4


def test_bound_inactive_is_not_a_hidden_socket_and_deep_sweep_is_clean(netns, holder):
    h = holder(netns.code("""
        a = socket.socket(); a.bind(("127.0.0.1", 20100))
        b = socket.socket(); b.bind(("127.0.0.1", 20101)); b.listen()
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("0.0.0.0", 20102))
        ready()
    """))
    code, doc = netns.audit_json("--deep")
    assert {f["port"] for f in doc["findings"] if f["rule"].startswith("hidden")} == set()
    assert doc["listeners"] == 3 and h.info["pid"] in {f["pid"] for f in doc["findings"]}


# --- hidden sockets and ports (one kernel view made to lie) --------------------------------------

def _listener_inode(port: int) -> int:
    (s,) = portscope.take_snapshot(SocketFilter(protos=frozenset({Proto.TCP}),
                                                port_range=(port, port))).sockets
    return s.inode


@pytest.fixture
def inside(netns):
    """Move this test process into ``netns`` for the test (setns on the main thread; the
    holders it starts are born there), and back afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns.name}", os.O_RDONLY)
    try:
        assert libc.setns(target, CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
        try:
            yield netns
        finally:
            assert libc.setns(home, CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(home)
        os.close(target)


@pytest.fixture
def loopback_listener(inside, holder):
    h = holder("s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
               "ready(port=s.getsockname()[1])")
    return h, h.info["port"], _listener_inode(h.info["port"])


def _hiding(monkeypatch, view: str, inode: int, times: int | None = None):
    """Make ``kernel_view(view)`` leave out socket ``inode`` (the first ``times`` calls)."""
    real = facts.kernel_view
    calls = itertools.count()

    def lying(name, netns):
        sockets, warnings = real(name, netns)
        if name == view and (times is None or next(calls) < times):
            sockets = [s for s in sockets if s.inode != inode]
        return sockets, warnings

    monkeypatch.setattr(facts, "kernel_view", lying)


def test_socket_hidden_from_proc_net_is_found(loopback_listener, monkeypatch):
    h, port, inode = loopback_listener
    _hiding(monkeypatch, "procfs", inode)
    report = run_audit()
    (f,) = [f for f in report.findings if f.rule == "hidden-socket" and f.port == port]
    assert f.pid == h.pid and f.severity.value == "high"
    assert "/proc/net/tcp" in f.message and f"inode {inode}" in f.message


def test_churn_between_dumps_is_not_hidden(loopback_listener, monkeypatch):
    _h, port, inode = loopback_listener
    _hiding(monkeypatch, "procfs", inode, times=1)
    report = run_audit()
    assert not [f for f in report.findings if f.rule == "hidden-socket" and f.port == port]


def test_deep_finds_a_port_no_view_shows(loopback_listener, monkeypatch):
    _h, port, inode = loopback_listener
    _hiding(monkeypatch, "netlink", inode)
    report = run_audit(deep=True)
    hidden = [f for f in report.findings if f.rule == "hidden-port" and f.port == port]
    assert [(f.proto, f.address, f.pid) for f in hidden] == [("tcp", "0.0.0.0", None)]


# --- baselines -----------------------------------------------------------------------------------

def test_baseline_new_changed_gone(netns, holder, scratch):
    base = os.path.join(scratch, "base.toml")
    a = holder(netns.code("s = socket.socket(); s.bind(('127.0.0.1', 20001)); s.listen(); ready()"))
    app = copy_python(scratch, "app")
    b_code = netns.code("s = socket.socket(); s.bind(('0.0.0.0', 20002)); s.listen(); ready()",
                        exe=app)
    b = holder(b_code)
    wrote = netns.cli("audit", "--write-baseline", base)
    assert wrote.returncode == 0 and wrote.stdout == "" and "2 listener(s)" in wrote.stderr
    with open(base) as f:
        text = f.read()
    assert "schema_version = 1" in text and app in text and "pid" not in text.replace(
        "PID", "")
    code, doc = netns.audit_json("--baseline", base)
    assert (code, doc["findings"]) == (0, [])          # clean: exit 0

    c = holder(netns.code("s = socket.socket(); s.bind(('127.0.0.1', 20003)); s.listen(); ready()"))
    code, doc = netns.audit_json("--baseline", base)
    assert code == 1
    assert of(doc, port=20003)["baseline-new"]["pid"] == c.info["pid"]
    assert of(doc, port=20003)["baseline-new"]["severity"] == "high"

    a.stop()
    b.stop()
    with open(app, "ab") as f:                          # same path, another binary
        f.write(b"\0portscope-test")
    b2 = holder(b_code)
    code, doc = netns.audit_json("--baseline", base)
    assert code == 1
    assert {(f["rule"], f["port"]) for f in doc["findings"] if f["rule"].startswith("baseline")} \
        == {("baseline-new", 20003), ("baseline-gone", 20001), ("baseline-changed", 20002)}
    # what the baseline no longer vouches for is judged again
    assert "exe-temp-dir" in of(doc, port=20002)
    changed = of(doc, port=20002)["baseline-changed"]
    assert changed["pid"] == b2.info["pid"] and "sha256" in changed["message"]
    assert "exe " not in changed["message"]             # same path, other hash
    gone = of(doc, port=20001)["baseline-gone"]
    assert (gone["severity"], gone["pid"]) == ("low", None)


def test_write_baseline_over_an_old_one_and_on_a_full_disk(netns, holder, scratch):
    holder(netns.code(LISTEN_ANY))
    base = os.path.join(scratch, "base.toml")
    with open(base, "w") as f:
        f.write("# the old baseline\n")
    assert netns.cli("audit", "--write-baseline", base).returncode == 0
    with open(base) as f:
        assert "[[listener]]" in f.read()
    assert os.listdir(scratch) == ["base.toml"]

    mnt = os.path.join(scratch, "small")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        small = os.path.join(mnt, "base.toml")
        with open(small, "w") as f:
            f.write("# old\n")
        with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        result = netns.cli("audit", "--write-baseline", small)
        assert result.returncode == 3
        assert result.stderr.count("\n") == 1 and "No space left" in result.stderr
        with open(small) as f:
            assert f.read() == "# old\n"
        assert sorted(os.listdir(mnt)) == ["base.toml", "filler"]
    finally:
        subprocess.run(["umount", mnt], check=False)


@pytest.mark.parametrize("content, words", [
    ("schema_version = 1\n[[listener]\nproto = 'tcp'\n", "not valid TOML"),
    ("schema_version = 99\n", "schema_version 99"),
    (None, "cannot read baseline"),
])
def test_bad_baseline_is_exit_3_in_one_line(cli, scratch, content, words):
    path = os.path.join(scratch, "base.toml")
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    result = cli("audit", "--baseline", path)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("portscope: error: ")
    assert words in result.stderr


def test_unprivileged_audit_compares_by_port_and_scope(netns, holder, scratch):
    holder(netns.code("s = socket.socket(); s.bind(('0.0.0.0', 20005)); s.listen(); ready()"))
    base = os.path.join(scratch, "base.toml")
    assert netns.cli("audit", "--write-baseline", base).returncode == 0
    os.chmod(base, 0o644)
    result = netns.cli("audit", "--json", "--baseline", base, "--allow-incomplete",
                       user="nobody")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["complete"] is False and doc["findings"] == []
    assert "by port and address only" in result.stderr
    mine = os.path.join(scratch, "nobody.toml")
    os.chown(scratch, 65534, 65534)     # nobody's own directory (one others may write to and
    os.chmod(scratch, 0o755)            # that is not the caller's is refused)
    wrote = netns.cli("audit", "--write-baseline", mine, user="nobody")
    assert wrote.returncode == 0 and "recorded by port and address only" in wrote.stderr


# --- output and exit codes -----------------------------------------------------------------------

def test_sarif(netns, holder, scratch):
    copy = copy_python(scratch)
    holder(netns.code(LISTEN_ANY, exe=copy))
    result = netns.cli("audit", "--sarif")
    assert result.returncode == 1
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0" and "sarif-schema-2.1.0" in log["$schema"]
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "portscope" and driver["version"] == portscope.__version__
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids)) and "exe-temp-dir" in ids
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    assert run["results"]
    for r in run["results"]:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        assert r["level"] in ("error", "warning", "note") and r["message"]["text"]
        assert r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
        assert len(r["partialFingerprints"]["portscopeFinding/v1"]) == 64
    (temp,) = [r for r in run["results"] if r["ruleId"] == "exe-temp-dir"]
    assert temp["level"] == "error"
    assert temp["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == f"file://{copy}"
    assert run["invocations"][0]["executionSuccessful"] is True


def test_fail_on_thresholds(netns, holder):
    # the test interpreter may live in a hidden folder (~/.pyenv): leave that rule out
    skip = ("--skip", "exe-hidden-dir")
    holder(netns.code("s = socket.socket(); s.bind(('127.0.0.1', 45678)); s.listen(); ready()"))
    assert netns.cli("audit", *skip, "--fail-on", "low").returncode == 1     # ephemeral: low
    assert netns.cli("audit", *skip, "--fail-on", "medium").returncode == 0
    assert netns.cli("audit", *skip).returncode == 0                         # default: high
    holder(netns.code("s = socket.socket(); s.bind(('0.0.0.0', 20010)); s.listen(); ready()"))
    assert netns.cli("audit", *skip, "--fail-on", "medium").returncode == 1  # exposure: medium
    assert netns.cli("audit", *skip, "--fail-on", "high").returncode == 0
    result = netns.cli("audit", *skip, "--fail-on", "medium")
    assert "2 at or above --fail-on medium" in result.stderr.splitlines()[-1]
    assert netns.cli("audit", "--fail-on", "severe").returncode == 2


def test_empty_namespace_is_clean(netns):
    result = netns.cli("audit")
    assert result.returncode == 0 and "0 finding(s)" in result.stderr
    code, doc = netns.audit_json("--fail-on", "low")
    assert (code, doc["findings"], doc["listeners"]) == (0, [], 0)


def test_table_groups_by_severity(netns, holder, scratch):
    copy = copy_python(scratch)
    holder(netns.code(LISTEN_ANY, exe=copy))
    result = netns.cli("audit")
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    high, medium = lines.index(next(l for l in lines if l.startswith("HIGH ("))), \
        lines.index(next(l for l in lines if l.startswith("MEDIUM (")))
    assert high < medium and "exe-temp-dir" in "\n".join(lines[high:medium])
    assert "fix:" in lines


@pytest.mark.parametrize("args", [
    ("--json", "--sarif"), ("--expect", "22/sctp=x"), ("--expect", "22"), ("--skip", "nope"),
    ("--baseline", "a", "--write-baseline", "b"), ("--write-baseline", "b", "--json"),
])
def test_usage_errors(cli, args):
    result = cli("audit", *args)
    assert result.returncode == 2 and result.stdout == ""


def test_expect_and_list_rules(netns, holder, cli):
    holder(netns.code("s = socket.socket(); s.bind(('0.0.0.0', 22)); s.listen(); ready()"))
    _, doc = netns.audit_json()
    assert "unexpected-program" in of(doc, port=22)
    _, doc = netns.audit_json("--expect", "22/tcp=" + os.path.basename(
        os.path.realpath(sys.executable)))
    assert "unexpected-program" not in of(doc, port=22)
    listed = cli("audit", "--list-rules", "--json")
    assert listed.returncode == 0
    doc = json.loads(listed.stdout)
    assert {r["id"] for r in doc["rules"]} >= {
        "hidden-socket", "hidden-port", "baseline-new", "exe-deleted", "unexpected-program"}
    assert "sshd" in doc["expected_programs"]["22/tcp"]


def test_executable_facts_hash_once_and_refuse_a_reused_pid(holder):
    kids = [holder("ready()") for _ in range(2)]
    inspector = facts.ExeInspector()
    infos = [process_info(h.pid) for h in kids]
    got = [inspector.facts(info) for info in infos]
    with open(os.path.realpath(sys.executable), "rb") as f:
        expected = hashlib.sha256(f.read()).hexdigest()
    assert [g.sha256 for g in got] == [expected, expected]
    assert got[0].path == os.path.realpath(sys.executable) and not got[0].deleted
    assert len(inspector._digests) == 1                  # one distinct file, hashed once
    older = dataclasses.replace(infos[0], started_at=infos[0].started_at.replace(year=2000))
    assert facts.ExeInspector().facts(older) is None     # that PID is someone else now
