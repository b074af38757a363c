"""Same listener, same numbers: however the port is written (``8080``, ``[::]:8080``,
``0.0.0.0:8080``, ``-- 8080``), the same listener gets the same accepted connections; a number
above 65535 that can be a PID (``pid_max`` up to 4194304) is tried as one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netns import netns  # noqa: F401  (the fixture)

DUAL_STACK_WITH_V4_CLIENT = """
    l = socket.socket(socket.AF_INET6); l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    l.bind(("::", 8080)); l.listen()
    c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
    ready()
"""


def accepted(ns, target: str) -> list[int]:
    """The ``accepted_connections`` of every listener ``portscope TARGET --json`` shows."""
    code, doc = ns.portscope_json(target, "--netns", "host")
    assert code == 0
    return [s["accepted_connections"] for s in doc["sockets"] if s["state"] == "LISTEN"]


@pytest.mark.parametrize("target", ["[::]:8080", "[::1]:8080", "127.0.0.1:8080"])
def test_dual_stack_listener_counts_its_v4_mapped_connection(netns, target):
    netns.holder(DUAL_STACK_WITH_V4_CLIENT)
    assert accepted(netns, "8080") == [1]
    assert accepted(netns, target) == [1]


def test_ipv4_wildcard_listener_counts_its_connection(netns):
    netns.holder("""
        l = socket.socket(); l.bind(("0.0.0.0", 8080)); l.listen()
        c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
        ready()
    """)
    assert accepted(netns, "8080") == [1]
    assert accepted(netns, "0.0.0.0:8080") == [1]


def test_address_query_lists_the_connections_it_counts(netns):
    netns.holder(DUAL_STACK_WITH_V4_CLIENT)
    code, doc = netns.portscope_json("[::]:8080", "--netns", "host")
    states = sorted(s["state"] for s in doc["sockets"] if s["local"]["port"] == 8080)
    assert code == 0 and states == ["ESTABLISHED", "LISTEN"]


def test_explain_wildcard_address_counts_the_same(netns):
    netns.holder(DUAL_STACK_WITH_V4_CLIENT)
    for target in ("8080", "[::]:8080"):
        code, doc = netns.portscope_json("explain", target, "--netns", "host")
        text = "\n".join(line for s in doc["sections"] for line in s["lines"])
        assert code == 0 and "1 connection(s) accepted from it" in text, (target, text)


def test_double_dash_before_the_port(netns):
    netns.holder("l = socket.socket(); l.bind(('127.0.0.1', 8080)); l.listen(); ready()")
    plain = netns.portscope("8080", "--netns", "host", "--json")
    dashed = netns.portscope("--", "8080")
    assert dashed.returncode == 0, dashed.stderr
    assert "127.0.0.1:8080" in dashed.stdout and "LISTEN" in dashed.stdout
    assert plain.returncode == 0


def test_explain_number_above_65535_is_tried_as_a_pid():
    """In a PID namespace of its own with pid_max raised, a process gets PID 70000; explain
    70000 must explain that process, not reject 70000 as a bad port."""
    script = (
        "echo 100000 > /proc/sys/kernel/pid_max && echo 69999 > /proc/sys/kernel/ns_last_pid"
        " && { sleep 60 & S=$!; } && "
        f"{sys.executable} -m portscope explain 70000 --json; echo \"rc=$?\"; kill $S"
    )
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                            capture_output=True, text=True, timeout=60)
    if "rc=" not in result.stdout:        # the && chain stopped: pid_max not writable here
        pytest.skip(f"cannot raise pid_max in a PID namespace here: {result.stderr.strip()}")
    out, _, rc = result.stdout.rpartition("rc=")
    assert rc.strip() == "1", result          # found the process, which holds no socket
    doc = json.loads(out)
    assert doc["kind"] == "pid" and doc["subject"] == 70000
    assert "PID 70000 names a process: sleep" in doc["summary"]


def test_explain_number_above_pid_max_is_a_usage_error(cli):
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    result = cli("explain", str(max(pid_max, 65535) + 1))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "neither a port" in result.stderr
