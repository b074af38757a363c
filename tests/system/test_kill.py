"""``free_port`` / ``portscope kill`` against real holders in a private network namespace.

Each test starts its holders in a fresh namespace, so port 8080 is the test's own; the holders'
forked children do not die with their parent here (unlike tests/holders.py's fork_sleeper), so
a kill that missed one would leave it running and the test would see it.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
import time

import pytest

from netns import NOBODY, alive, netns  # noqa: F401  (the fixture)

LISTEN = """
def listen(port=8080, addr="127.0.0.1", rp=0):
    s = socket.socket()
    if rp: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((addr, port)); s.listen(); return s
def fork_child():
    pid = os.fork()
    if pid == 0:
        while True: time.sleep(60)
    return pid
"""


def hold(ns, code, **kwargs):
    return ns.holder(LISTEN + textwrap.dedent(code), **kwargs)


def kill(ns, *args, user=None):
    """``portscope kill ARGS --json`` in ``ns``: (exit code, document or None, stderr)."""
    result = ns.portscope("kill", *args, "--json", user=user)
    return result.returncode, json.loads(result.stdout) if result.stdout else None, \
        result.stderr


def wait_gone(pids, timeout_s=5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def wait_accepted(ns, port, pid, timeout_s=10.0) -> bool:
    """Wait until the kernel shows an ESTABLISHED socket on local ``port`` held by ``pid``
    (the server accepted the connection: it has a descriptor for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, doc = ns.portscope_json(str(port))
        if any(s["state"] == "ESTABLISHED" and pid in [o["pid"] for o in s["owners"]]
               for s in doc["sockets"]):
            return True
        time.sleep(0.05)
    return False


def test_forked_trio_all_gone_and_port_free(netns):
    h = hold(netns, """
        l = listen()
        kids = [fork_child() for _ in range(3)]
        ready(kids=kids)
    """)
    pids = [h.pid, *h.info["kids"]]
    code, doc, err = kill(netns, "8080", "--yes")
    assert code == 0, err
    assert sorted(t["pid"] for t in doc["plan"]["targets"]) == sorted(pids)
    assert {o["pid"]: o["result"] for o in doc["outcomes"]} == {p: "exited" for p in pids}
    assert all(o["signals"] == ["SIGTERM"] for o in doc["outcomes"])
    assert doc["freed"] is True and doc["kernel_held"] == [] and doc["still_held"] == []
    assert wait_gone(pids, 1)


def test_reuseport_pair_in_two_processes(netns):
    first = hold(netns, "l = listen(rp=1); ready()")
    second = hold(netns, "l = listen(rp=1); ready()")
    code, doc, err = kill(netns, "127.0.0.1:8080", "--yes")
    assert code == 0, err
    assert sorted(o["pid"] for o in doc["outcomes"]) == sorted([first.pid, second.pid])
    assert len({s["inode"] for t in doc["plan"]["targets"] for s in t["sockets"]}) == 2
    assert doc["freed"] and wait_gone([first.pid, second.pid], 1)


def test_udp_socket(netns):
    h = hold(netns, """
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::", 5353)); ready()
    """)
    code, doc, err = kill(netns, "5353", "-u", "--yes")
    assert code == 0 and doc["freed"] and wait_gone([h.pid], 1), err


def test_holder_ignoring_sigterm(netns):
    h = hold(netns, """
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        l = listen(); ready()
    """)
    code, doc, _ = kill(netns, "8080", "--yes", "--timeout", "1")
    assert code == 1 and alive(h.pid)
    assert [(o["result"], o["signals"]) for o in doc["outcomes"]] == [("survived", ["SIGTERM"])]
    assert doc["freed"] is False and [s["owners"][0]["pid"] for s in doc["still_held"]] == [h.pid]
    text = netns.portscope("kill", "8080", "--yes", "--timeout", "0.5")
    assert text.returncode == 1 and "survived" in text.stdout and "still held" in text.stdout
    code, doc, err = kill(netns, "8080", "--yes", "--timeout", "2", "--force")
    assert code == 0, err
    assert [(o["result"], o["signals"]) for o in doc["outcomes"]] == \
        [("exited", ["SIGTERM", "SIGKILL"])]
    assert wait_gone([h.pid], 1)


def test_stopped_holder_gets_sigcont(netns):
    h = hold(netns, "l = listen(); kid = fork_child(); ready(kid=kid)")
    os.kill(h.info["kid"], 19)                       # SIGSTOP: SIGTERM alone stays pending
    code, doc, err = kill(netns, "8080", "--yes", "--timeout", "2")
    assert code == 0, err
    assert wait_gone([h.pid, h.info["kid"]], 1)


def test_dry_run_signals_nothing(netns, tmp_path):
    log = tmp_path / "signals"
    log.touch()
    h = hold(netns, f"""
        import signal
        signal.signal(signal.SIGTERM, lambda *a: open({str(log)!r}, "a").write("TERM\\n"))
        l = listen(); ready()
    """)
    code, doc, _ = kill(netns, "8080", "--dry-run")
    assert code == 0 and doc["dry_run"] and "outcomes" not in doc
    assert [t["pid"] for t in doc["plan"]["targets"]] == [h.pid]
    time.sleep(0.2)
    assert log.read_text() == "" and alive(h.pid)


def test_time_wait_leftover_is_not_freed(netns):
    h = hold(netns, """
        l = listen()
        c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
        a.close(); time.sleep(0.05); c.close()       # the server side closed first: TIME_WAIT
        ready()
    """)
    code, doc, _ = kill(netns, "8080", "--yes")
    assert code == 1 and wait_gone([h.pid], 1)
    assert doc["outcomes"][0]["result"] == "exited" and doc["freed"] is False
    assert [s["state"] for s in doc["kernel_held"]] == ["TIME_WAIT"] and doc["still_held"] == []
    assert doc["reuseaddr_bindable"] is False, "the old listener did not set SO_REUSEADDR"
    text = netns.portscope("kill", "8080", "--yes")
    assert text.returncode == 1
    assert "kernel still holds 1 closed connection(s) (TIME_WAIT) for up to 60 s" in text.stdout
    assert "is free" not in text.stdout


def test_client_of_the_port_is_never_signalled(netns):
    server = hold(netns, """
        import threading
        l = listen(); accepted = []
        threading.Thread(target=lambda: accepted.append(l.accept()), daemon=True).start()
        ready()
        """)
    client = hold(netns, """
        c = socket.create_connection(("127.0.0.1", 8080)); ready(port=c.getsockname()[1])
    """)
    # wait until the server holds the accepted connection: one still in the accept queue is
    # reset when the listener closes and leaves no FIN_WAIT behind (the flake: kernel_held [])
    assert wait_accepted(netns, 8080, server.pid)
    code, doc, _ = kill(netns, "8080", "--yes")
    assert [t["pid"] for t in doc["plan"]["targets"]] == [server.pid]
    assert wait_gone([server.pid], 1) and alive(client.pid)
    # the server's end of the connection the client keeps open lingers, held by the kernel
    assert code == 1 and doc["freed"] is False and doc["still_held"] == []
    assert [s["state"] for s in doc["kernel_held"]] in (["FIN_WAIT2"], ["FIN_WAIT1"])


def test_refuses_pid_1(netns):
    h = hold(netns, """
        import subprocess, sys
        server = "import socket, time\\ns = socket.socket(); s.bind(('127.0.0.1', 8080)); " \\
                 "s.listen(); print('up', flush=True); time.sleep(3600)"
        p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                              "-c", server], stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        inner = int(open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()[0])
        ready(inner=inner)
    """)
    inner = h.info["inner"]
    cmd = ["nsenter", "-t", str(inner), "-p", "-m", "-n", sys.executable, "-m", "portscope",
           "kill", "8080", "--yes", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result.stderr
    doc = json.loads(result.stdout)
    assert doc["refused"] and "PID 1 is init" in doc["message"]
    assert [t["pid"] for t in doc["plan"]["targets"]] == [1]
    time.sleep(0.2)
    assert alive(inner)


def test_refuses_its_own_parent(netns):
    h = hold(netns, """
        import subprocess, sys
        l = listen()
        r = subprocess.run([sys.executable, "-m", "portscope", "kill", "8080", "--yes",
                            "--json"], capture_output=True, text=True)
        ready(code=r.returncode, out=r.stdout)
    """)
    assert h.info["code"] == 5
    doc = json.loads(h.info["out"])
    assert "ancestor of portscope" in doc["message"] and "outcomes" not in doc
    assert alive(h.pid)


def test_refuses_itself_and_kernel_threads(netns):
    result = netns.python("""
        import socket
        from portscope.errors import KillRefused
        from portscope.kill import PF_KTHREAD, plan_kill, safety_refusal, terminate
        from portscope.owners.fdscan import list_pids
        from portscope.owners.process import read_stat
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        with plan_kill(8080) as plan:
            print(plan.targets[0].refusal)
            try:
                terminate(plan)
            except KillRefused as exc:
                print("refused")
        def kthread(pid):
            try:
                return read_stat(pid)[3] & PF_KTHREAD
            except (FileNotFoundError, ProcessLookupError):
                return False             # exited since /proc was listed
        kthreads = [p for p in list_pids() if kthread(p)]
        print(safety_refusal(kthreads[0]) if kthreads else "PID 2 is a kernel thread")
        print(safety_refusal(0), safety_refusal(-1), sep="\\n")
    """)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["that is portscope itself", "refused"], result.stderr
    assert lines[2].endswith("is a kernel thread")
    assert all("process group" in line for line in lines[3:5])


def test_pid_reuse_is_detected_before_signalling(netns):
    result = netns.python("""
        import json, os, socket, time
        from portscope.kill import plan_kill, terminate
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        child = os.fork()
        if child == 0:
            while True: time.sleep(60)
        l.close()
        with plan_kill(8080) as plan:
            (target,) = plan.targets
            target.start_ticks += 1          # as if the PID now named a newer process
            (outcome,) = terminate(plan, timeout_s=1)
        alive = os.waitpid(child, os.WNOHANG) == (0, 0)
        os.kill(child, 9); os.waitpid(child, 0)
        print(json.dumps([outcome.result, list(outcome.signals), alive]))
    """)
    assert json.loads(result.stdout) == ["pid-reused", [], True], result.stderr


def test_real_pid_reuse_gets_no_signal(netns):
    """KS1 for real: in a private PID namespace the holder dies after the plan and its PID is
    handed to a newcomer (ns_last_pid); the newcomer must get no signal."""
    result = netns.python("""
        import json, os, socket, time
        from portscope.kill import plan_kill, terminate
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        old = os.fork()
        if old == 0:
            while True: time.sleep(60)
        l.close()
        with plan_kill(8080) as plan:
            os.kill(old, 9); os.waitpid(old, 0)
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(old - 1))
            new = os.fork()
            if new == 0:
                while True: time.sleep(60)
            (outcome,) = terminate(plan, timeout_s=1)
        alive = os.waitpid(new, os.WNOHANG) == (0, 0)
        os.kill(new, 9); os.waitpid(new, 0)
        print(json.dumps([new == old, outcome.result, list(outcome.signals), alive,
                          outcome.detail]))
    """, pidns=True)
    same_pid, result_name, signals, newcomer_alive, detail = json.loads(result.stdout)
    assert same_pid, "the PID was not reused: the test proves nothing"
    assert (result_name, signals, newcomer_alive) == ("pid-reused", [], True)
    assert "now belongs to" in detail


def test_no_terminal_without_yes_is_refused(netns):
    h = hold(netns, "l = listen(); ready()")
    code, doc, _ = kill(netns, "8080")
    assert code == 5 and doc["refused"] and "--yes" in doc["message"]
    assert alive(h.pid)


def _kill_on_terminal(ns, answer: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*ns.prefix(), sys.executable, "-m", "portscope", "kill",
                                 "8080"], stdin=slave, stdout=subprocess.PIPE,
                                stderr=slave, text=True)
        os.close(slave)
        slave = -1
        prompt = b""
        while b"[y/N]" not in prompt:
            prompt += os.read(master, 1024)
        os.write(master, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=60)
        return proc.returncode, out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_asks_on_a_terminal(netns):
    h = hold(netns, "l = listen(); ready()")
    code, _ = _kill_on_terminal(netns, "n")
    assert code == 1 and alive(h.pid)
    code, out = _kill_on_terminal(netns, "y")
    assert code == 0 and wait_gone([h.pid], 1)
    assert "is free" in out


def test_unprivileged_caller_cannot_see_or_signal_root_holders(netns):
    h = hold(netns, "l = listen(); ready()")
    result = netns.portscope("kill", "8080", "--yes", user="nobody")
    assert result.returncode == 4 and "run as root" in result.stderr
    assert alive(h.pid)


def test_unprivileged_caller_kills_its_own(netns):
    h = hold(netns, "l = listen(); ready()", user=NOBODY)
    result = netns.portscope("kill", "8080", "--yes", user="nobody")
    assert result.returncode == 0, result.stderr
    assert wait_gone([h.pid], 1)


@pytest.mark.parametrize("env, command", [
    ({"SUPERVISOR_PROCESS_NAME": "web", "SUPERVISOR_GROUP_NAME": "web"}, "supervisorctl stop web"),
    ({"pm_id": "3", "name": "api"}, "pm2 stop 3"),
])
def test_supervised_holder_gets_the_right_command(netns, env, command):
    h = hold(netns, f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import socket, time\\n"
                                  "s = socket.socket(); s.bind(('127.0.0.1', 8080)); s.listen()\\n"
                                  "print('up', flush=True); time.sleep(3600)"],
                                 env={{**os.environ, **{env!r}}}, stdout=subprocess.PIPE)
        child.stdout.readline()
        ready(child=child.pid)
    """)
    child = h.info["child"]
    code, doc, _ = kill(netns, "8080", "--yes")
    assert code == 5 and command in doc["message"] and alive(child)
    assert doc["plan"]["targets"][0]["respawner"]["command"] == command
    code, doc, err = kill(netns, "8080", "--yes", "--force")
    assert code == 0, err
    assert wait_gone([child], 1)


def test_systemd_unit_with_restart(netns, tmp_path):
    cgroup_root = "/sys/fs/cgroup/systemd"
    if not os.access(cgroup_root, os.W_OK):
        pytest.skip("needs a writable name=systemd cgroup hierarchy")
    unit = f"pstest-{os.getpid()}.service"
    (tmp_path / unit).write_text("[Unit]\nDescription=test\n[Service]\nRestart=always\n")
    cgroup = os.path.join(cgroup_root, unit)
    os.mkdir(cgroup)
    try:
        h = hold(netns, "l = listen(); ready()")
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(h.pid))
        result = netns.python(f"""
            from portscope.errors import KillRefused
            from portscope.kill import plan_kill, terminate
            with plan_kill(8080, unit_path=[{str(tmp_path)!r}]) as plan:
                print(plan.targets[0].respawner.command)
                try:
                    terminate(plan)
                except KillRefused as exc:
                    print("refused:", "Restart=always" in str(exc))
        """)
        assert result.stdout.splitlines() == [f"systemctl stop {unit}", "refused: True"], \
            result.stderr
        # a drop-in resetting Restart= makes the kill worthwhile again
        (tmp_path / f"{unit}.d").mkdir()
        (tmp_path / f"{unit}.d" / "override.conf").write_text("[Service]\nRestart=no\n")
        result = netns.python(f"""
            from portscope.kill import plan_kill
            with plan_kill(8080, unit_path=[{str(tmp_path)!r}]) as plan:
                print(plan.targets[0].respawner)
        """)
        assert result.stdout.strip() == "None", result.stderr
        assert alive(h.pid)
    finally:
        netns.close()
        os.rmdir(cgroup)


@pytest.mark.parametrize("args", [["0"], ["abc"], ["65536"], ["8080", "--signal", "9"],
                                  ["8080", "--signal", "FOO"], ["8080", "--timeout", "0"],
                                  ["8080", "--timeout", "nan"], ["8080", "--timeout", "-1"],
                                  ["1-3; touch pwned"]])
def test_bad_input(netns, args):
    result = netns.run(sys.executable, "-m", "portscope", "kill", *args, "--yes")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_library_free_port(netns):
    h = hold(netns, "l = listen(); kid = fork_child(); ready(kid=kid)")
    result = netns.python("""
        import json
        from portscope.kill import free_port
        r = free_port(8080, protos=("tcp",), timeout_s=2)
        print(json.dumps([r.freed, sorted((o.pid, o.result) for o in r.outcomes),
                          [c.bindable for c in r.check.checks]]))
    """)
    freed, outcomes, checks = json.loads(result.stdout)
    assert freed and checks == [True], result.stderr
    assert outcomes == sorted([[h.pid, "exited"], [h.info["kid"], "exited"]])
