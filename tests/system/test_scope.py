"""One scope for every command: each command that reads sockets takes ``--netns``; views
(listeners, PORT, list, explain) cover every namespace by default (as root), the commands that
act in one namespace (check, free, kill, audit) answer for the caller's own; a suggested command
carries the namespace it was computed in, and a kill there stops that namespace's holders
only. Two real namespaces, each with a listener on port 8080."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from netns import NetNS, alive, can_use_netns

LISTEN_8080 = "l = socket.socket(); l.bind(('127.0.0.1', 8080)); l.listen(); ready()"


@contextlib.contextmanager
def two_namespaces(holder_code: str):
    """Two namespaces ``[a, b]``, each with a holder running ``holder_code`` (``a.pid``,
    ``b.pid`` name them); both deleted on exit."""
    if not can_use_netns():
        pytest.skip("needs root and ip(8) to create network namespaces")
    made = []
    try:
        for _ in range(2):
            ns = NetNS()
            made.append(ns)
            ns.pid = ns.holder(holder_code).pid
        yield made
    finally:
        for ns in made:
            ns.close()


@pytest.fixture
def pair():
    """Two namespaces ``(a, b)``, each with a listener on 127.0.0.1:8080."""
    with two_namespaces(LISTEN_8080) as made:
        yield made


def owner_pids(doc_sockets) -> set[int]:
    return {o["pid"] for s in doc_sockets for o in s["owners"]}


def test_explain_covers_what_portscope_port_covers(pair):
    a, b = pair
    code, who = a.portscope_json("8080")
    assert code == 0 and {a.pid, b.pid} <= owner_pids(who["sockets"])
    code, doc = a.portscope_json("explain", "8080")
    explained = owner_pids(x for s in doc["sections"] for x in s["sockets"])
    assert code == 0 and {a.pid, b.pid} <= explained, doc["summary"]
    # two namespaces' listeners are two listeners, not one SO_REUSEPORT group
    assert not any("separate sockets" in line for s in doc["sections"] for line in s["lines"])
    assert any(b.name in s["title"] for s in doc["sections"]), [s["title"]
                                                                for s in doc["sections"]]


def test_explain_netns_names_one_namespace(pair):
    a, b = pair
    code, doc = a.portscope_json("explain", "8080", "--netns", b.name)
    explained = owner_pids(x for s in doc["sections"] for x in s["sockets"])
    assert code == 0 and b.pid in explained and a.pid not in explained


def test_check_in_a_namespace_suggests_commands_for_that_namespace(pair, cli):
    _a, b = pair
    result = cli("check", "127.0.0.1:8080", "--netns", b.name, "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 1 and not doc["bindable"]
    assert f"stop every holder: portscope kill 8080 --netns {b.name}" in doc["fixes"]
    assert f"or use another port: portscope free --near 8080 --netns {b.name}" in doc["fixes"]
    text = cli("check", "127.0.0.1:8080", "--netns", b.name).stdout
    assert f"fix: stop every holder: portscope kill 8080 --netns {b.name}" in text


def test_kill_in_another_namespace_stops_only_its_holders(pair, cli):
    a, b = pair
    result = cli("kill", "8080", "--netns", b.name, "--yes", "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert [t["pid"] for t in doc["plan"]["targets"]] == [b.pid]
    assert alive(a.pid) and not alive(b.pid)
    assert doc["freed"]


def test_kill_by_default_stays_in_its_own_namespace(pair):
    a, b = pair
    result = a.portscope("kill", "8080", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert [t["pid"] for t in json.loads(result.stdout)["plan"]["targets"]] == [a.pid]
    assert alive(b.pid) and not alive(a.pid)


def test_audit_reads_the_namespace_it_is_given(pair, cli):
    _a, b = pair
    result = cli("audit", "--netns", b.name, "--json", "--fail-on", "high")
    doc = json.loads(result.stdout)
    assert result.returncode in (0, 1), result.stderr
    assert doc["listeners"] == 1


@pytest.mark.parametrize("args", [[], ["8080"], ["list", "-l"], ["explain", "8080"],
                                  ["check", "8080"], ["free"], ["kill", "8080", "--dry-run"],
                                  ["audit"]])
def test_every_socket_reading_command_takes_netns(pair, args):
    a, b = pair
    result = a.portscope(*args, "--netns", b.name)
    assert result.returncode in (0, 1), (args, result.stderr)
    assert "unrecognized arguments" not in result.stderr


def test_one_namespace_commands_refuse_all(cli):
    if not can_use_netns():
        pytest.skip("needs root")
    for args in (["check", "8080"], ["free"], ["kill", "8080", "--dry-run"], ["audit"]):
        result = cli(*args, "--netns", "all")
        assert result.returncode == 2 and "one network namespace" in result.stderr, args


def test_netns_help_is_the_same_in_every_view(cli):
    def netns_help(*args):
        text = cli(*args, "--help").stdout
        entry = text[text.index("\n  --netns "):]
        return " ".join(entry[1:].split("\n  -")[0].split("\n\n")[0].split())
    views = [netns_help(*args) for args in (["listeners"], ["who"], ["list"], ["explain"])]
    ones = [netns_help(*args) for args in (["check"], ["free"], ["kill"], ["audit"])]
    assert len(set(views)) == 1 and len(set(ones)) == 1, (views, ones)


def test_unprivileged_explain_says_it_sees_only_its_namespace(pair):
    a, _b = pair
    result = subprocess.run(
        [*a.prefix("nobody"), sys.executable, "-m", "portscope", "explain", "8080"],
        capture_output=True, text=True, timeout=60)
    assert "showing this network namespace only" in result.stderr


def test_kill_of_an_abstract_unix_name_acts_in_the_namespace_given(cli):
    """An abstract UNIX name is per network namespace: ``kill @NAME --netns NS`` stops the
    holder in NS only, as ``kill PORT --netns NS`` does."""
    with two_namespaces("u = socket.socket(socket.AF_UNIX); "
                        "u.bind('\\0ps-scope-test'); u.listen(); ready()") as (a, b):
        result = cli("kill", "@ps-scope-test", "--netns", b.name, "--yes", "--json")
        assert result.returncode == 0, result.stderr
        assert [t["pid"] for t in json.loads(result.stdout)["plan"]["targets"]] == [b.pid]
        assert alive(a.pid) and not alive(b.pid)
