"""Hostile process names and undecodable paths, through every renderer.

Two real processes in a private network namespace:

- one renamed (PR_SET_NAME) to ``=1+1`` with ``@SUM(A1)`` as argv[0]: a spreadsheet would run
  both as formulas (CWE-1236); CSV cells must start with ``'``;
- one whose executable lives in a directory named with byte 0xFF (not UTF-8) and whose name
  (ending in byte 0xFF too) and argv carry bidi controls (U+202E, U+2066), a zero-width space
  and ESC: terminals must see them escaped, JSON and SARIF must be strict (no lone surrogate
  ``\\udcff``) and show the byte as ``\\xff``, the same way everywhere.

And a network namespace named with ESC and U+202E (``ip netns add`` takes any name without
``/``): every line naming it, on stdout and on stderr, shows them escaped, including the
warning about a namespace that cannot be entered (portscope under a seccomp filter refusing
``setns``, as systemd's ``RestrictNamespaces=`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import seccomp
from conftest import run_cli
from holders import PRELUDE
from netns import NetNS, can_use_netns, netns  # noqa: F401  (the fixture)
from terminal import run_on_terminal

BIDI_NAME = "e\u202el\u2066x\u200bz"           # 13 bytes (+ 0xFF: 14): fits comm's 15
BIDI_ARG = "argv\u202ecod\u2069\u2067\x1b[31m"
RAW = ("\u202e", "\u2066", "\u2067", "\u2069", "\u200b", "\x1b", "\udcff")
FORMULA_HOLDER = """
_libc.prctl(15, b"=1+1")                        # PR_SET_NAME
l = socket.socket(); l.bind(("0.0.0.0", 8080)); l.listen()
ready()
"""
BIDI_COMM = BIDI_NAME.encode() + b"\xff"        # and a byte that is not UTF-8
BIDI_HOLDER = f"""
_libc.prctl(15, {BIDI_COMM!r})
l = socket.socket(); l.bind(("0.0.0.0", 8081)); l.listen()
ready()
"""


def exec_as(path: bytes, argv0: str, code: str) -> str:
    """A holder snippet that re-executes itself as ``path`` (argv[0] ``argv0``), running
    ``code`` after the prelude."""
    body = PRELUDE + textwrap.dedent(code)
    return f"os.execv({path!r}, [{argv0!r}, '-c', {body!r}])\n"


def strict_json(text: str):
    """Parse ``text`` as RFC 8259 JSON the way strict parsers do: no NaN, and every string
    must be Unicode text (a lone surrogate ``\\udcff`` is rejected)."""
    def constant(name):
        raise ValueError(f"not JSON: {name}")

    def check(value):
        if isinstance(value, str):
            value.encode("utf-8")                 # UnicodeEncodeError on a lone surrogate
        elif isinstance(value, dict):
            for key, item in value.items():
                check(key)
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        return value
    text.encode("utf-8")
    return check(json.loads(text, parse_constant=constant))


@pytest.fixture
def hostile(netns, tmp_path):
    """The namespace with both holders; returns (namespace, the bidi holder's exe as bytes,
    its PID)."""
    directory = os.path.join(os.fsencode(tmp_path), b"bin\xff")
    os.mkdir(directory)
    exe = os.path.join(directory, b"python3")
    shutil.copy2(os.path.realpath(sys.executable), exe)
    netns.holder(exec_as(os.fsencode(os.path.realpath(sys.executable)), "@SUM(A1)",
                         FORMULA_HOLDER))
    bidi = netns.holder(exec_as(exe, BIDI_ARG, BIDI_HOLDER))   # the same process, after exec
    return netns, exe, bidi.pid


def assert_escaped(text: str, where) -> None:
    assert not any(ch in text for ch in RAW), (where, [ch for ch in RAW if ch in text], text)


TEXT_RUNS = [["--netns", "host"], ["8081"], ["list", "-l", "--netns", "host"],
             ["explain", "8081"], ["check", "0.0.0.0:8081"], ["kill", "8081", "--dry-run"],
             ["audit", "--fail-on", "high"]]


@pytest.mark.parametrize("args", TEXT_RUNS, ids=" ".join)
def test_text_and_tables_show_escapes(hostile, args):
    ns, _, _ = hostile
    piped = ns.portscope(*args)
    assert piped.returncode in (0, 1), piped.stderr
    assert "Traceback" not in piped.stderr and "internal error" not in piped.stderr
    assert_escaped(piped.stdout, ("pipe", args))
    assert_escaped(piped.stderr, ("stderr", args))
    if args[0] in ("--netns", "8081", "list", "explain", "kill"):
        assert "e\\u202el\\u2066x\\u200bz" in piped.stdout, piped.stdout
    code, drawn = run_on_terminal([*ns.prefix(), sys.executable, "-m", "portscope", *args],
                                  columns=120, term="xterm")
    assert code == piped.returncode, drawn
    # rich draws bold with ESC sequences of its own: the process's ESC[31m must not be there
    assert_escaped(drawn.replace("\x1b[", "").replace("\\x1b[31m", ""), ("terminal", args))
    assert "\x1b[31m" not in drawn


def test_kill_plan_escapes_the_command_line_and_audit_the_path(hostile):
    ns, _, _ = hostile
    plan = ns.portscope("kill", "8081", "--dry-run").stdout
    assert "argv\\u202ecod\\u2069\\u2067\\x1b[31m" in plan, plan
    audit = ns.portscope("audit", "--fail-on", "high").stdout
    assert "bin\\xff/python3" in audit, audit


def test_csv_cells_cannot_start_a_formula(hostile):
    ns, _, _ = hostile
    for args in (["--csv", "--netns", "host"], ["list", "-l", "--csv", "--netns", "host"],
                 ["8080", "--csv"]):
        result = ns.portscope(*args)
        assert result.returncode == 0, result.stderr
        import csv
        import io
        cells = [cell for row in csv.reader(io.StringIO(result.stdout)) for cell in row]
        assert "'=1+1" in cells, (args, cells)
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")
                    or (c[:1] == "-" and c != "-" and not c.lstrip("-").isdigit())], cells
        assert_escaped(result.stdout, args)


JSON_RUNS = [["--json", "--netns", "host"], ["8081", "--json"],
             ["list", "-l", "--json", "--netns", "host"], ["explain", "8081", "--json"],
             ["explain", "--pid", "PID", "--json"], ["check", "0.0.0.0:8081", "--json"],
             ["kill", "8081", "--dry-run", "--json"],
             ["audit", "--json", "--fail-on", "high"],
             ["audit", "--sarif", "--fail-on", "high"]]


@pytest.mark.parametrize("args", JSON_RUNS, ids=" ".join)
def test_json_and_sarif_are_strict(hostile, args):
    ns, _, pid = hostile
    args = [str(pid) if a == "PID" else a for a in args]
    result = ns.portscope(*args)
    assert result.returncode in (0, 1), result.stderr
    doc = strict_json(result.stdout)
    text = json.dumps(doc, ensure_ascii=False)
    assert "bin\\\\xff/python3" in text, text[:2000]       # the byte, escaped as in text
    assert BIDI_NAME in text or args[0] == "audit", "JSON keeps names exact"


NETNS_SUFFIX = "-x\x1b[31m\u202ered"            # ESC[31m, then right-to-left
NETNS_SHOWN = "-x\\x1b[31m\\u202ered"


@pytest.fixture
def hostile_netns():
    """A namespace named ``pstest-PID-N`` + ``NETNS_SUFFIX`` with a TCP listener on port
    8082; deleted after the test whatever happens."""
    if not can_use_netns():
        pytest.skip("needs root and ip(8) to create network namespaces")
    ns = NetNS(NETNS_SUFFIX)
    try:
        ns.holder("""
            l = socket.socket(); l.bind(("0.0.0.0", 8082)); l.listen()
            ready()
        """)
        yield ns
    finally:
        ns.close()


def assert_named_escaped(result, name: str, where) -> None:
    """Neither stream of ``result`` holds the name's raw characters; one of them shows it
    escaped."""
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, \
        (where, result.stderr)
    assert_escaped(result.stdout, ("stdout", where))
    assert_escaped(result.stderr, ("stderr", where))
    shown = name.replace(NETNS_SUFFIX, NETNS_SHOWN)
    assert shown in result.stdout + result.stderr, (where, result)


# (arguments, exit code): the namespace's column, explain's words, check's suggested command
# (--netns NAME), an unknown name (the error line)
NAMING_RUNS = [(["list", "-l", "--netns", "all"], 0), (["explain", "8082", "--netns", "all"], 0),
               (["check", "0.0.0.0:8082", "--netns", "NAME"], 1),
               (["list", "--netns", "NAME?"], 2)]


@pytest.mark.parametrize("args,code", NAMING_RUNS, ids=[" ".join(a) for a, _ in NAMING_RUNS])
def test_a_namespace_name_is_shown_escaped(hostile_netns, args, code):
    name = hostile_netns.name
    args = [a.replace("NAME", name) for a in args]
    result = run_cli(*args)
    assert result.returncode == code, result
    assert_named_escaped(result, name, args)


def test_a_namespace_that_cannot_be_entered_is_named_escaped(hostile_netns):
    """setns refused (EPERM): a view of every namespace warns that it cannot be entered, a
    view of it alone is access denied (exit 4), each in one escaped line."""
    import errno
    sandboxed = seccomp.portscope_refusing("setns", errno.EPERM, probe=seccomp.SETNS_PROBE)
    name = hostile_netns.name
    inode = os.stat(f"/run/netns/{name}").st_ino
    for args, code in ((["list", "-a", "--netns", name], 4), (["--netns", "all"], 0),
                       (["8082", "--netns", name], 4)):
        result = subprocess.run([*sandboxed, *args], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == code, (args, result)
        assert_named_escaped(result, name, args)
        denied = "access denied: " if code == 4 else ""
        assert (f"portscope: {denied}cannot enter network namespace "
                f"{name.replace(NETNS_SUFFIX, NETNS_SHOWN)}"
                f" ({inode}): Operation not permitted\n"
                in result.stderr), (args, result.stderr)
