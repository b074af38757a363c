""""Cannot see" is never "none": descriptors that could not be read, processes that hidepid
hides, sockets whose holders are out of sight and network namespaces that cannot be entered
are said as such, with the obstacle that is really there (privilege, hidepid, a sandbox for
root), and an incomplete answer does not pass.

Real unprivileged runs (setpriv), a real user namespace (``unshare -U -r``: root inside, no
privilege outside), a real /proc mounted with hidepid in a private mount namespace and a real
seccomp filter refusing setns (tests/seccomp.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import seccomp
from netns import NetNS, alive, can_use_netns, netns  # noqa: F401  (the fixture)
from portscope.render.escape import safe

NOBODY = [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup",
          "--clear-groups"]
ROOT_LISTENER = "l = socket.socket(); l.bind(('127.0.0.1', 8080)); l.listen(); ready()"


def as_nobody(ns, *args):
    return ns.portscope(*args, user="nobody")


# --- item 4: explain of a process whose descriptors cannot be read -------------------------

def test_explain_pid_1_unreadable_is_not_no_socket(cli):
    result = cli("explain", "1", "--json", user="nobody")
    doc = json.loads(result.stdout)
    assert doc["kind"] == "pid" and doc["complete"] is False
    assert "holds no TCP or UDP socket" not in doc["summary"]
    assert "could not be read" in doc["summary"] and "run as root" in doc["summary"]


def test_root_in_a_sandbox_is_not_told_to_run_as_root(holder):
    """Root of a user namespace (``unshare -U -r``) is uid 0 without privilege over the
    host's processes: the obstacle is the sandbox, not a missing ``sudo``."""
    h = holder("l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n"
               "ready(port=l.getsockname()[1])")
    port = str(h.info["port"])
    cmd = ["unshare", "--user", "--map-root-user", sys.executable, "-m", "portscope"]
    env = {**os.environ, "PORTSCOPE_FDSCAN": "proc"}
    listing = subprocess.run([*cmd, port], capture_output=True, text=True, timeout=60, env=env)
    if listing.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespaces here: {listing.stderr.strip()}")
    assert listing.returncode == 0, listing.stderr
    assert "have no visible owner" in listing.stderr
    assert "run as root" not in listing.stderr and "sandbox or LSM" in listing.stderr
    # the processes out of root's sight are named (a few, lowest PID first), on one line
    (line,) = [x for x in listing.stderr.splitlines() if "no visible owner" in x]
    named = re.search(r"could not be read even as root \(a sandbox or LSM denies it\): "
                      r"pid (\d+) \(([^)]*)\)(, pid \d+ \([^)]*\)){0,2}( and \d+ more)?$", line)
    assert named, line
    with open(f"/proc/{named.group(1)}/comm") as f:
        assert named.group(2) == f.read().strip()
    explained = subprocess.run([*cmd, "explain", port, "--json"], capture_output=True,
                               text=True, timeout=60, env=env)
    doc = json.loads(explained.stdout)
    text = json.dumps(doc)
    assert doc["complete"] is False and "hidden from this user" in text
    assert "run as root" not in text and "run as root" not in explained.stderr
    pid = subprocess.run([*cmd, "explain", "--pid", str(h.pid), "--json"],
                         capture_output=True, text=True, timeout=60, env=env)
    summary = json.loads(pid.stdout)["summary"]
    assert "could not be read" in summary and "run as root" not in summary


def test_explain_port_warns_only_about_its_own_sockets(netns):
    netns.holder("l = socket.socket(); l.bind(('127.0.0.1', 9090)); l.listen(); ready()")
    netns.holder("l = socket.socket(); l.bind(('127.0.0.1', 8080)); l.listen(); ready()",
                 user=(65534, 65534))
    listing = as_nobody(netns, "-t")
    assert "1 socket(s) have no visible owner" in listing.stderr   # the root listener on 9090
    result = as_nobody(netns, "explain", "8080", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["complete"] is True
    assert "no visible owner" not in result.stderr, result.stderr
    hidden = as_nobody(netns, "explain", "9090", "--json")
    assert json.loads(hidden.stdout)["complete"] is False
    assert "1 socket(s) have no visible owner" in hidden.stderr


def test_incomplete_unprivileged_audit_does_not_pass(netns):
    netns.holder("l = socket.socket(); l.bind(('0.0.0.0', 8080)); l.listen(); ready()")
    result = as_nobody(netns, "audit", "--json")
    doc = json.loads(result.stdout)
    assert doc["complete"] is False
    assert result.returncode == 4, result.stderr
    assert "--allow-incomplete" in result.stderr
    allowed = as_nobody(netns, "audit", "--allow-incomplete")
    assert allowed.returncode in (0, 1), allowed.stderr
    assert netns.portscope("audit").returncode in (0, 1)          # root sees it all


def test_audit_help_documents_allow_incomplete(cli):
    assert "--allow-incomplete" in cli("audit", "--help").stdout


# --- item 11: hidepid ----------------------------------------------------------------------

def hidepid_run(ns, option: str, *args: str) -> subprocess.CompletedProcess:
    """``portscope ARGS`` as nobody in ``ns``, with /proc mounted ``hidepid=OPTION`` in a mount
    namespace of its own (the host's /proc is untouched)."""
    script = (f"mount -t proc -o hidepid={option} proc /proc && exec "
              + shlex.join([*NOBODY, sys.executable, "-m", "portscope", *args]))
    return ns.run("unshare", "--mount", "sh", "-c", script)


@pytest.mark.parametrize("option", ["2", "invisible"])
def test_hidden_holder_is_permission_not_vanished(netns, option):
    netns.holder(ROOT_LISTENER)
    result = hidepid_run(netns, option, "8080", "--json", "--netns", "host")
    doc = json.loads(result.stdout)
    (sock,) = [s for s in doc["sockets"] if s["state"] == "LISTEN"]
    assert sock["owners"] == [] and sock["owner_unknown"] == "permission", sock
    assert doc["complete"] is False
    assert "hidepid=" in result.stderr and "no visible owner" in result.stderr
    text = hidepid_run(netns, option, "8080", "--netns", "host")
    assert "(vanished)" not in text.stdout and "(permission)" in text.stdout


@pytest.mark.parametrize("option", ["2", "invisible"])
def test_kill_of_a_hidden_holder_is_access_denied(netns, option):
    h = netns.holder(ROOT_LISTENER)
    result = hidepid_run(netns, option, "kill", "8080", "--yes")
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "no process to signal" not in result.stdout
    assert "hidepid" in result.stderr and alive(h.pid)


def test_explain_of_a_hidden_pid_is_not_no_process(netns):
    result = hidepid_run(netns, "invisible", "explain", "--pid", "1", "--json")
    doc = json.loads(result.stdout)
    assert "No process has PID 1" not in doc["summary"]
    assert "cannot see" in doc["summary"] and "hidepid" in doc["summary"]
    assert doc["complete"] is False


def test_hidepid_as_root_sees_everything(netns):
    """Root sees through hidepid: nothing is said to be hidden."""
    h = netns.holder(ROOT_LISTENER)
    script = (f"mount -t proc -o hidepid=invisible proc /proc && exec {sys.executable} -m "
              "portscope 8080 --json --netns host")
    result = netns.run("unshare", "--mount", "sh", "-c", script)
    doc = json.loads(result.stdout)
    assert doc["complete"] is True and "hidepid" not in result.stderr
    assert [o["pid"] for s in doc["sockets"] for o in s["owners"]] == [h.pid]


# --- a network namespace that cannot be entered (setns refused) -----------------------------

REFUSED_SUFFIX = "-k\x1b[2J"                     # the error line must show it escaped


@pytest.fixture
def refused_netns():
    """A namespace named with ESC, in which one holder listens on TCP 8084, a socket file in
    /tmp (where audit looks for stale ones) and an abstract UNIX name: ``(namespace, holder,
    socket file path, @name)``."""
    if not can_use_netns():
        pytest.skip("needs root and ip(8) to create network namespaces")
    ns = NetNS(REFUSED_SUFFIX)
    path = f"/tmp/pstest-refused-{os.getpid()}.sock"
    try:
        abstract = f"@pstest-refused-{os.getpid()}"
        bound = "\0" + abstract[1:]
        h = ns.holder(f"""
            l = socket.socket(); l.bind(("0.0.0.0", 8084)); l.listen()
            f = socket.socket(socket.AF_UNIX); f.bind({path!r}); f.listen()
            a = socket.socket(socket.AF_UNIX); a.bind({bound!r}); a.listen()
            ready()
        """)
        yield ns, h, path, abstract
    finally:
        ns.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_a_namespace_that_cannot_be_entered_is_not_empty(refused_netns):
    """Under a seccomp filter refusing setns (systemd's ``RestrictNamespaces=``), kill, free
    and audit of that namespace, and views of it alone, are access denied (exit 4): one
    escaped line naming it, nothing on stdout, never "no process to signal", "no socket" or
    a port of the wrong namespace; kill signals nothing."""
    import errno
    ns, h, path, abstract = refused_netns
    bound = "\0" + abstract[1:]
    sandboxed = seccomp.portscope_refusing("setns", errno.EPERM, probe=seccomp.SETNS_PROBE)
    inode = os.stat(f"/run/netns/{ns.name}").st_ino
    # one sentence, whichever command says it (namespaces.not_entered)
    line = f"cannot enter network namespace {ns.name} ({inode}): Operation not permitted"
    runs = [["kill", "8084", "--netns", ns.name, "--yes"],
            ["kill", "8084", "--netns", ns.name, "--dry-run"],
            ["kill", "-t", "8084", "--netns", ns.name, "--yes", "--json"],
            ["kill", abstract, "--netns", ns.name, "--yes"],
            ["kill", path, "--netns", ns.name, "--yes", "--force"],
            ["kill", path, "--yes"],     # every namespace: one refused is named, with a remedy
            ["8084", "--netns", ns.name],
            ["explain", "8084", "--netns", ns.name, "--json"],
            [path, "--netns", ns.name],
            ["explain", abstract, "--netns", ns.name],
            ["list", "-a", "--netns", ns.name, "--json"],
            ["listeners", "--netns", ns.name],
            ["check", "8084", "--netns", ns.name],
            ["free", "--netns", ns.name],
            ["audit", "--netns", ns.name],
            ["audit", "--netns", ns.name, "--allow-incomplete", "--json"]]
    for args in runs:
        result = subprocess.run([*sandboxed, *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 4, (args, result)
        assert result.stdout == "", (args, result.stdout)
        assert "\x1b" not in result.stderr, (args, result.stderr)
        if "--netns" in args:
            assert result.stderr == f"portscope: access denied: {safe(line)}\n", \
                (args, result.stderr)
        else:       # the first namespace refused: maybe another test's
            assert re.fullmatch(r"portscope: access denied: cannot enter network namespace .+: "
                                r"Operation not permitted \(--netns host: look in this "
                                r"namespace only\)\n", result.stderr), (args, result.stderr)
        assert alive(h.pid), args
    assert_still_listening(ns, path, bound)


def test_procfs_reads_a_namespace_no_process_lives_in_as_netlink_does(netns):
    """A listener in a namespace whose holder went back to the host's (no process lives in
    it: the procfs backend has no /proc/PID/net to read it through) is found with --backend
    procfs, from inside it, as with netlink; under a seccomp filter refusing setns, both
    backends' views of that namespace alone are access denied (exit 4) with the same line,
    and their views of every namespace say that line on stderr."""
    import errno
    h = netns.holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
        _home = os.open(f"/proc/{os.getppid()}/ns/net", os.O_RDONLY)
        assert _libc.setns(_home, 0x40000000) == 0   # back to the host's namespace
        ready(port=l.getsockname()[1])
    """)
    port = str(h.info["port"])
    inode = os.stat(f"/run/netns/{netns.name}").st_ino
    line = f"cannot enter network namespace {netns.name} ({inode}): Operation not permitted"
    sandboxed = seccomp.portscope_refusing("setns", errno.EPERM, probe=seccomp.SETNS_PROBE)
    for backend in ("netlink", "procfs"):
        found = subprocess.run([sys.executable, "-m", "portscope", port, "--backend",
                                backend, "--netns", netns.name, "--json"],
                               capture_output=True, text=True, timeout=60)
        assert found.returncode == 0, (backend, found)
        assert found.stderr == "", (backend, found.stderr)
        doc = json.loads(found.stdout)
        assert [(s["netns"], [o["pid"] for o in s["owners"]]) for s in doc["sockets"]] == \
            [(inode, [h.pid])], (backend, doc)
        for args in ([port], ["list", "-a", "--json"], ["listeners"]):
            denied = subprocess.run([*sandboxed, *args, "--backend", backend, "--netns",
                                     netns.name], capture_output=True, text=True, timeout=60)
            assert (denied.returncode, denied.stdout) == (4, ""), (backend, args, denied)
            assert denied.stderr == f"portscope: access denied: {line}\n", (backend, args)
        every = subprocess.run([*sandboxed, "list", "-a", "--json", "--backend", backend,
                                "--netns", "all"], capture_output=True, text=True, timeout=60)
        assert every.returncode == 0, (backend, every)
        assert f"portscope: {line}\n" in every.stderr, (backend, every.stderr)


def assert_still_listening(ns, path: str, bound: str) -> None:
    """The refused namespace's holder still accepts on TCP 8084, its socket file and its
    abstract name ``bound``."""
    still = ns.python(f"""
        import socket
        socket.create_connection(("127.0.0.1", 8084), timeout=5).close()
        socket.socket(socket.AF_UNIX).connect({path!r})
        socket.socket(socket.AF_UNIX).connect({bound!r})
    """)
    assert still.returncode == 0, still.stderr


def test_a_socket_file_held_in_a_namespace_that_cannot_be_entered_is_not_stale(refused_netns):
    """The socket file's listener lives in a namespace setns may not enter: check says it may
    be in use there (``permission``), never ``stale-file``; check --clean --yes keeps it;
    audit does not run its stale-file rule and says why; PATH and explain PATH (every
    namespace) do not call it stale."""
    import errno
    ns, h, path, abstract = refused_netns
    sandboxed = seccomp.portscope_refusing("setns", errno.EPERM, probe=seccomp.SETNS_PROBE)

    def run(*args):
        return subprocess.run([*sandboxed, *args], capture_output=True, text=True, timeout=120)

    check = run("check", path, "--json")
    assert check.returncode == 1, check
    (reason,) = json.loads(check.stdout)["reasons"]
    assert reason["code"] == "permission", reason
    assert "may be in use in one that was not: cannot enter network namespace " \
        in reason["text"]
    clean = run("check", "--clean", "--yes", path)
    assert clean.returncode == 1, clean
    assert "stale-file" not in clean.stdout and os.path.exists(path)
    audit = run("audit", "--json", "--allow-incomplete")
    assert audit.returncode in (0, 1), audit.stderr
    stale = [f for f in json.loads(audit.stdout)["findings"] if f["rule"] == "unix-stale-file"]
    assert not [f for f in stale if path in json.dumps(f)], stale
    assert re.search(r"^portscope: unix-stale-file not run: cannot enter network namespace "
                     r".+: Operation not permitted \(it may hold socket files\)$",
                     audit.stderr, re.M), audit.stderr
    for view in ([path], ["explain", path]):
        result = run(*view)
        assert result.returncode == 1, result
        assert "not proven stale: no socket of the network namespaces read" in \
            result.stdout + result.stderr, result
        assert "stale socket file" not in result.stdout + result.stderr, result
    assert alive(h.pid)
    assert_still_listening(ns, path, "\0" + abstract[1:])
