"""Baselines: reading, writing and comparing, without touching the system (but tmp_path)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from portscope.audit import baseline as bl
from portscope.audit.rules import ExeFacts, Listener, Severity
from portscope.errors import BaselineError
from portscope.types import Endpoint, Family, Proto, ProcessInfo, Socket, State

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SSHD = "/usr/sbin/sshd"
SHA_A, SHA_B = "a" * 64, "b" * 64


def listener(port=22, address="0.0.0.0", exe=SSHD, sha=SHA_A, user="root", proto=Proto.TCP,
             v6only=None, pid=100, verified=True, container=None):
    family = Family.IPV6 if ":" in address else Family.IPV4
    state = State.UNCONN if proto is Proto.UDP else State.LISTEN
    s = Socket(proto, family, Endpoint(address, port), None, state, pid * 10, 0, v6only=v6only)
    process = ProcessInfo(pid=pid, name=exe.rsplit("/", 1)[-1], exe=exe, user=user, uid=0,
                          container=container)
    facts = ExeFacts(exe, sha if verified else None)
    return Listener(s, process, facts, (pid,), user)


def baseline_of(*listeners, netns=None) -> bl.Baseline:
    text = bl.render([(bl.identity(l, netns), "note") for l in listeners], host="h", when="t")
    return bl.parse(text)


def compare(base, *listeners):
    return bl.compare(base, list(listeners))


def rules_of(comparison):
    return sorted((f.rule, f.port) for f in comparison.findings)


# --- comparing -----------------------------------------------------------------------------------

def test_same_listeners_are_clean():
    l1, l2 = listener(), listener(5353, proto=Proto.UDP, exe="/usr/sbin/avahi-daemon", pid=7)
    result = compare(baseline_of(l1, l2), l1, l2)
    assert result.findings == () and result.accepted == {l1, l2} and result.unverified == 0


def test_pid_is_not_identity():
    assert compare(baseline_of(listener(pid=100)), listener(pid=4242)).findings == ()


def test_new_listener():
    result = compare(baseline_of(listener()), listener(), listener(8080, exe="/tmp/x", pid=9))
    (f,) = result.findings
    assert (f.rule, f.severity, f.port, f.pid, f.exe) == ("baseline-new", Severity.HIGH, 8080, 9,
                                                           "/tmp/x")


@pytest.mark.parametrize("changed, words", [
    (dict(sha=SHA_B), "sha256 aaaaaaaaaaaa... -> bbbbbbbbbbbb..."),
    (dict(user="nobody"), "user root -> nobody"),
    (dict(exe="/tmp/sshd"), "exe /usr/sbin/sshd -> /tmp/sshd"),
    (dict(address="10.1.2.3"), "address 0.0.0.0 -> 10.1.2.3"),
])
def test_changed_listener(changed, words):
    result = compare(baseline_of(listener()), listener(**changed))
    (f,) = result.findings
    assert f.rule == "baseline-changed" and f.severity is Severity.HIGH and f.port == 22
    assert words in f.message and "line " in f.message
    assert not result.accepted


def test_dual_stack_does_not_satisfy_an_ipv4_wildcard_entry():
    """IN18: [::] with v6only off also exposes IPv6, so it is a change of scope."""
    result = compare(baseline_of(listener()), listener(address="::", v6only=False))
    (f,) = result.findings
    assert f.rule == "baseline-changed" and "address 0.0.0.0 -> ::" in f.message
    dual = baseline_of(listener(address="::", v6only=False))
    (g,) = compare(dual, listener(address="::", v6only=True)).findings
    assert "dual_stack true -> false" in g.message


def test_gone_listener():
    base = baseline_of(listener(), listener(443, exe="/usr/sbin/nginx", pid=5))
    (f,) = compare(base, listener()).findings
    assert (f.rule, f.severity, f.port, f.pid, f.exe, f.address) == \
        ("baseline-gone", Severity.LOW, 443, None, "/usr/sbin/nginx", "0.0.0.0")


def test_extra_listener_on_a_matched_port_is_new_not_changed():
    base = baseline_of(listener())
    result = compare(base, listener(), listener(address="::", v6only=True, exe="/tmp/x", pid=7))
    assert rules_of(result) == [("baseline-new", 22)]


def test_repeated_identities_give_one_finding():
    base = baseline_of(listener())
    twins = [listener(8080, pid=p) for p in (7, 8)]      # a SO_REUSEPORT pair
    assert rules_of(compare(base, listener(), *twins)) == [("baseline-new", 8080)]


ENTRY = """schema_version = 1
[[listener]]
proto = "tcp"
port = {port}
exe = "/usr/bin/app"
"""


@pytest.mark.parametrize("port, listening, rules", [
    ('"8000-8099"', 8050, []),
    ('"*"', 31337, []),
    ('"8000-8099"', 8100, [("baseline-new", 8100)]),
    (8000, 8000, []),
])
def test_port_ranges_and_any_port_for_one_binary(port, listening, rules):
    base = bl.parse(ENTRY.format(port=port))
    assert rules_of(compare(base, listener(listening, exe="/usr/bin/app"))) == rules


def test_range_entry_of_another_binary_is_new_and_never_gone():
    base = bl.parse(ENTRY.format(port='"8000-8099"'))
    assert rules_of(compare(base, listener(8050, exe="/usr/bin/other"))) == [("baseline-new", 8050)]
    assert compare(base).findings == ()


def test_range_entry_same_binary_other_user_is_changed():
    base = bl.parse(ENTRY.format(port='"*"') + 'user = "app"\n')
    (f,) = compare(base, listener(9999, exe="/usr/bin/app", user="root")).findings
    assert f.rule == "baseline-changed" and "user app -> root" in f.message


def test_sha_left_out_accepts_any_build():
    base = bl.parse(ENTRY.format(port=22))
    assert compare(base, listener(exe="/usr/bin/app", sha=SHA_B)).findings == ()


def test_unverified_listener_is_compared_by_port_and_scope():
    base = baseline_of(listener())
    unknown = listener(exe="/usr/sbin/sshd", verified=False)
    result = compare(base, unknown)
    assert result.findings == () and result.unverified == 1 and result.accepted == {unknown}
    result = compare(base, listener(address="::", v6only=True, verified=False))
    assert rules_of(result) == [("baseline-changed", 22)]


def test_container_and_netns_are_identity():
    cid = "c" * 64
    base = baseline_of(listener(container=cid), netns=4026532000)
    assert bl.compare(base, [listener(container=cid)], 4026532000).findings == ()
    (f,) = bl.compare(base, [listener(container="d" * 64)], 4026532000).findings
    assert f.rule == "baseline-changed" and "container" in f.message
    (g,) = bl.compare(base, [listener(container=cid)], 4026532999).findings
    assert "netns 4026532000 -> 4026532999" in g.message


# --- writing -------------------------------------------------------------------------------------

def test_render_round_trips_and_explains_itself():
    ls = [listener(), listener(address="::", v6only=False, pid=2),
          listener(53, "127.0.0.53", "/usr/lib/systemd/systemd-resolved", proto=Proto.UDP,
                   user="systemd-resolve", pid=3),
          listener(631, "::1", "/usr/sbin/cupsd", v6only=True, pid=4),
          listener(8080, verified=False, pid=5)]
    text = bl.render([(bl.identity(l, None), "sshd (ssh.service)") for l in ls],
                     host="web1", when="2026-01-01T00:00:00+00:00")
    assert text.startswith("# portscope audit baseline")
    assert "# sshd (ssh.service)" in text and "schema_version = 1" in text
    assert "web1" in text and "dual_stack" in text and "pid" not in text.lower().split("#")[-1]
    entries = bl.parse(text).entries
    assert {bl._without_line(e) for e in entries} == \
        {bl.entry_of(bl.identity(l, None)) for l in ls}
    assert all(e.line > 0 for e in entries)
    (anonymous,) = [e for e in entries if e.single_port == 8080]
    assert anonymous.exe is None and anonymous.sha256 is None and anonymous.user is None


@pytest.mark.parametrize("text", ['plain', 'quote " back \\ slash', "new\nline\ttab\x1b[31m",
                                  "caf\u00e9 \u2603", "\x7f\x00"])
def test_toml_strings(text):
    encoded = bl.toml_string(text)
    assert tomllib.loads(f"k = {encoded}")["k"] == text
    assert "\n" not in encoded


def test_path_that_is_not_utf8_is_matched_by_hash():
    odd = "/opt/\udcff/server"           # os.readlink's surrogateescape for byte 0xff
    assert bl.toml_string(odd) is None
    text = bl.render([(bl.identity(listener(exe=odd), None), None)], host="h", when="t")
    (entry,) = bl.parse(text).entries
    assert entry.exe is None and entry.sha256 == SHA_A


def test_process_name_cannot_inject_entries():
    evil = 'x\n[[listener]]\nproto = "tcp"\nport = "*"'
    text = bl.render([(bl.identity(listener(), None), evil)], host="h", when="t")
    assert len(bl.parse(text).entries) == 1


def test_save_replaces_atomically_and_keeps_mode(tmp_path):
    path = tmp_path / "base.toml"
    path.write_text("old\n")
    os.chmod(path, 0o640)
    bl.save(path, "new\n")
    assert path.read_text() == "new\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["base.toml"]
    fresh = tmp_path / "fresh.toml"
    bl.save(fresh, "x\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_save_never_follows_a_symlink(tmp_path):
    real = tmp_path / "real.toml"
    real.write_text("old\n")
    (tmp_path / "link.toml").symlink_to(real)
    with pytest.raises(BaselineError, match="symbolic link"):
        bl.save(tmp_path / "link.toml", "new\n")
    assert (tmp_path / "link.toml").is_symlink() and real.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["link.toml", "real.toml"]


def test_save_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    with pytest.raises(BaselineError, match="not a regular file"):
        bl.save(tmp_path / "fifo.toml", "new\n")


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "base.toml"
    path.write_text("old\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(BaselineError, match="No space left"):
        bl.save(path, "new\n" * 1000)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["base.toml"]


def test_save_into_a_missing_directory(tmp_path):
    with pytest.raises(BaselineError, match="cannot write baseline"):
        bl.save(tmp_path / "no" / "base.toml", "x\n")


# --- reading errors ------------------------------------------------------------------------------

GOOD = 'schema_version = 1\n\n[[listener]]\nproto = "tcp"\nport = 22\n'


@pytest.mark.parametrize("text, words", [
    ("", "no schema_version"),
    ("schema_version = 2\n", "schema_version 2"),
    ('schema_version = "1"\n', "schema_version '1'"),
    ("schema_version = 1\n[[listener]\n", "not valid TOML"),
    ("schema_version = 1\nport = 22\n", "unknown top-level key 'port'"),
    ("schema_version = 1\nlistener = 3\n", "[[listener]] tables"),
    (GOOD + 'usr = "root"\n', "line 3: unknown key 'usr'"),
    (GOOD.replace("22", "70000"), "out of range"),
    (GOOD.replace("22", "true"), "port must be"),
    (GOOD.replace("22", '"9-3"'), "port must be"),
    (GOOD.replace('"tcp"', '"sctp"'), "proto must be"),
    (GOOD.replace("port = 22\n", ""), "port is required"),
    (GOOD + 'sha256 = "xyz"\n', "64 hex digits"),
    (GOOD + 'address = "127.1"\n', "not an IP address"),
    (GOOD + 'exe = "sshd"\n', "absolute path"),
    (GOOD + 'dual_stack = "yes"\n', "true or false"),
    (GOOD + "netns = -1\n", "namespace inode"),
    (GOOD + GOOD.replace("schema_version = 1\n", ""), "line 7: repeats the entry of line 3"),
    ("schema_version = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n", "baseline"),
])
def test_invalid_baselines_are_errors(text, words):
    with pytest.raises(BaselineError) as info:
        bl.parse(text, "base.toml")
    assert words in str(info.value) and "base.toml" in str(info.value)
    assert "\n" not in str(info.value)


def test_toml_syntax_error_names_the_line():
    with pytest.raises(BaselineError, match=r"line 6, column 8"):
        bl.parse(GOOD + "port = = 3\n")


def test_load_errors(tmp_path):
    with pytest.raises(BaselineError, match="cannot read baseline"):
        bl.load(tmp_path / "missing.toml")
    with pytest.raises(BaselineError, match="cannot read baseline"):
        bl.load(tmp_path)
    (tmp_path / "bin.toml").write_bytes(b"schema_version = 1\n# \xff\n")
    with pytest.raises(BaselineError, match="not UTF-8"):
        bl.load(tmp_path / "bin.toml")
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(bl.MAX_FILE_BYTES + 1)
    with pytest.raises(BaselineError, match="larger than"):
        bl.load(big)


def test_load_good_file(tmp_path):
    path = tmp_path / "base.toml"
    path.write_text(GOOD + 'address = "::FFFF:127.0.0.1"\nsha256 = "' + "A" * 64 + '"\n')
    (entry,) = bl.load(path).entries
    assert entry.address == "::ffff:127.0.0.1" and entry.sha256 == "a" * 64
    assert entry.ports == (22, 22) and entry.line == 3
