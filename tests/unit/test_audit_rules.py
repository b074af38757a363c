"""The audit rules as pure functions: hand-made sockets, processes and executable facts."""

from __future__ import annotations

import pytest

from portscope import services
from portscope.audit import rules
from portscope.audit.rules import (EXPECTED_PROGRAMS, AuditContext, ExeFacts, Listener, Severity,
                                   evaluate, hidden_sockets, is_server_socket,
                                   unexplained_refusals)
from portscope.ports import HostPortRanges
from portscope.types import Endpoint, Family, Proto, ProcessInfo, Socket, State

RANGES = HostPortRanges(ephemeral=(32768, 60999), reserved=((40000, 40000),),
                        unprivileged_start=1024)
CTX = AuditContext(RANGES, EXPECTED_PROGRAMS, lambda port, proto: port == 4444)
PYTHON = "/usr/bin/python3.11"
SHA = "a" * 64


def sock(address="127.0.0.1", port=8080, proto=Proto.TCP, state=State.LISTEN, v6only=None,
         inode=1000, remote=None):
    family = Family.IPV6 if ":" in address else Family.IPV4
    if family is Family.IPV6 and v6only is None and state is not State.ESTABLISHED:
        v6only = False
    return Socket(proto, family, Endpoint(address, port), remote, state, inode, 0,
                  v6only=v6only)


def listener(s=None, *, exe=PYTHON, name=None, cmdline=None, deleted=False, on_disk="same",
             world_writable=False, sha256=SHA, first=True, pid=100):
    s = s or sock()
    base = exe.rsplit("/", 1)[-1] if exe else None
    process = ProcessInfo(pid=pid, name=name or (base or "x")[:15], exe=exe,
                          cmdline=cmdline if cmdline is not None else (exe or "x",),
                          user="root", uid=0)
    facts = ExeFacts(exe, sha256, deleted, on_disk, world_writable) if exe else None
    return Listener(s, process, facts, (pid,), "root", first)


def rule_ids(l, ctx=CTX):
    return {f.rule for f in evaluate([l], ctx)}


# --- which sockets are judged --------------------------------------------------------------------

@pytest.mark.parametrize("s, judged", [
    (sock(), True),
    (sock(state=State.BOUND_INACTIVE), True),
    (sock(state=State.ESTABLISHED, remote=Endpoint("127.0.0.1", 5)), False),
    (sock(proto=Proto.UDP, state=State.UNCONN, port=5353), True),
    (sock(proto=Proto.UDP, state=State.UNCONN, port=45000), False),    # an ephemeral client
    (sock(proto=Proto.UDP, state=State.UNCONN, port=40000), True),     # reserved: a server
    (sock(proto=Proto.UDP, state=State.ESTABLISHED, port=5353,
          remote=Endpoint("127.0.0.1", 53)), False),
    (sock(port=0, state=State.BOUND_INACTIVE), False),
])
def test_server_sockets(s, judged):
    assert is_server_socket(s, RANGES) is judged


# --- exposure ------------------------------------------------------------------------------------

@pytest.mark.parametrize("address, v6only, rule, words", [
    ("0.0.0.0", None, "exposed-all-interfaces", "every IPv4 address"),
    ("::", False, "exposed-all-interfaces", "every IPv6 and every IPv4 address"),
    ("::", True, "exposed-all-interfaces", "every IPv6 address ([::], v6only)"),
    ("192.168.1.5", None, "exposed-address", "private address 192.168.1.5"),
    ("8.8.8.8", None, "exposed-address", "public address"),
    ("fe80::1%eth0", True, "exposed-address", "link-local"),
])
def test_exposure(address, v6only, rule, words):
    findings = [f for f in evaluate([listener(sock(address, v6only=v6only), exe="/usr/sbin/x")],
                                    CTX) if f.rule.startswith("exposed")]
    assert [f.rule for f in findings] == [rule]
    assert words in findings[0].message
    assert findings[0].address == address and findings[0].port == 8080


@pytest.mark.parametrize("address", ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_not_exposed(address):
    assert not {r for r in rule_ids(listener(sock(address), exe="/usr/sbin/x"))
                if r.startswith("exposed")}


def test_bound_inactive_is_not_exposed():
    l = listener(sock("0.0.0.0", state=State.BOUND_INACTIVE), exe="/usr/sbin/x")
    assert not {r for r in rule_ids(l) if r.startswith("exposed")}


def test_dual_stack_counts_both_families():
    (f,) = [f for f in evaluate([listener(sock("::", v6only=False), exe="/usr/sbin/x")], CTX)
            if f.rule == "exposed-all-interfaces"]
    assert "IPv4" in f.message and "IPv6" in f.message
    (g,) = [f for f in evaluate([listener(sock("::", v6only=True), exe="/usr/sbin/x")], CTX)
            if f.rule == "exposed-all-interfaces"]
    assert "IPv4" not in g.message


# --- executables ---------------------------------------------------------------------------------

def test_deleted_executable():
    l = listener(exe="/opt/app/server", deleted=True, on_disk="missing")
    assert "exe-deleted" in rule_ids(l) and "exe-replaced" not in rule_ids(l)
    (f,) = [f for f in evaluate([l], CTX) if f.rule == "exe-deleted"]
    assert f.severity is Severity.HIGH and f.exe == "/opt/app/server" and f.pid == 100


def test_memfd_executable():
    l = listener(exe="/memfd:payload", deleted=True, on_disk="missing")
    (f,) = [f for f in evaluate([l], CTX) if f.rule == "exe-deleted"]
    assert "anonymous memory file" in f.message


@pytest.mark.parametrize("on_disk, rule", [("other", "exe-replaced"), ("unknown", "exe-replaced"),
                                           ("same", None)])
def test_replaced_executable(on_disk, rule):
    ids = rule_ids(listener(exe="/opt/app/server", deleted=True, on_disk=on_disk))
    assert "exe-deleted" not in ids
    assert ("exe-replaced" in ids) is (rule is not None)


@pytest.mark.parametrize("path, rule", [
    ("/tmp/x/python3", "exe-temp-dir"),
    ("/dev/shm/.x", "exe-temp-dir"),
    ("/var/tmp/srv", "exe-temp-dir"),
    ("/home/alice/.cache/updater", "exe-hidden-dir"),
    ("/root/.local/share/x/agent", "exe-hidden-dir"),
    ("/home/alice/bin/server", None),
    ("/usr/sbin/sshd", None),
    ("/tmpfoo/bin/x", None),
])
def test_executable_location(path, rule):
    ids = rule_ids(listener(exe=path)) & {"exe-temp-dir", "exe-hidden-dir"}
    assert ids == ({rule} if rule else set())


def test_world_writable_executable():
    assert "exe-temp-dir" in rule_ids(listener(exe="/opt/x/server", world_writable=True))


# --- shells, interpreters, names -----------------------------------------------------------------

@pytest.mark.parametrize("exe, name, address, rule", [
    ("/usr/bin/bash", None, "0.0.0.0", "shell-listener"),
    ("/usr/bin/ncat", None, "192.0.2.1", "shell-listener"),
    ("/usr/bin/socat", None, "::", "shell-listener"),
    ("/bin/busybox", "nc", "0.0.0.0", "shell-listener"),
    ("/usr/bin/bash", None, "127.0.0.1", None),
    ("/usr/bin/python3.11", "python3", "0.0.0.0", "interpreter-listener"),
    ("/usr/bin/perl5.36", "perl", "0.0.0.0", "interpreter-listener"),
    ("/usr/bin/python3.11", "python3", "::1", None),
    ("/usr/bin/node", None, "0.0.0.0", None),
])
def test_shells_and_interpreters(exe, name, address, rule):
    l = listener(sock(address, v6only=True if ":" in address else None), exe=exe, name=name)
    ids = rule_ids(l) & {"shell-listener", "interpreter-listener"}
    assert ids == ({rule} if rule else set())


def test_kernel_thread_name_is_impersonation():
    l = listener(name="[kworker/0:1]", cmdline=(PYTHON, "-c", "pass"))
    ids = rule_ids(l)
    assert "kthread-impersonation" in ids and "name-mismatch" not in ids


@pytest.mark.parametrize("name, exe, cmdline, mismatch", [
    ("sshd", PYTHON, ("/usr/bin/python3", "-c", "..."), True),
    ("python3", PYTHON, ("python3", "-m", "http.server"), False),
    ("myserver", PYTHON, ("/usr/bin/python3", "/opt/app/myserver"), False),     # shebang script
    ("gunicorn: maste", PYTHON, ("gunicorn: master [app]",), False),            # setproctitle
    ("nginx", "/usr/sbin/nginx", ("nginx: worker process",), False),
    ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", ("/lib/systemd/systemd-resolved",),
     False),                                                                    # comm truncation
    ("sh", "/bin/busybox", ("sh",), False),
    ("chrome", "/usr/bin/python3.11", ("/usr/bin/python3.11",), True),
])
def test_name_mismatch(name, exe, cmdline, mismatch):
    assert ("name-mismatch" in rule_ids(listener(exe=exe, name=name, cmdline=cmdline))) \
        is mismatch


# --- ports ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("port, exe, name, proto, rule", [
    (22, "/usr/sbin/sshd", None, Proto.TCP, None),
    (22, PYTHON, "sshd", Proto.TCP, "unexpected-program"),   # the name is not trusted
    (22, "/usr/lib/systemd/systemd", None, Proto.TCP, None),  # socket activation
    (53, "/usr/sbin/dnsmasq", None, Proto.UDP, None),
    (53, "/usr/bin/nc.openbsd", None, Proto.UDP, "unexpected-program"),
    (8080, PYTHON, None, Proto.TCP, None),                   # not in the map
])
def test_unexpected_program(port, exe, name, proto, rule):
    state = State.UNCONN if proto is Proto.UDP else State.LISTEN
    l = listener(sock("0.0.0.0", port, proto, state), exe=exe, name=name)
    ids = rule_ids(l) & {"unexpected-program"}
    assert ids == ({rule} if rule else set())


def test_expected_programs_can_be_overridden():
    l = listener(sock("0.0.0.0", 22), exe=PYTHON)
    allowed = AuditContext(RANGES, {**EXPECTED_PROGRAMS, (22, "tcp"): frozenset({"python3.11"})},
                           CTX.unauthorized_use)
    off = AuditContext(RANGES, {**EXPECTED_PROGRAMS, (22, "tcp"): frozenset()},
                       CTX.unauthorized_use)
    assert "unexpected-program" in rule_ids(l)
    assert "unexpected-program" not in rule_ids(l, allowed)
    assert "unexpected-program" not in rule_ids(l, off)
    (f,) = [f for f in evaluate([l], CTX) if f.rule == "unexpected-program"]
    assert "--expect 22/tcp=python3.11" in f.fix


def test_unauthorized_use_port():
    assert "unauthorized-use-port" in rule_ids(listener(sock(port=4444)))
    assert "unauthorized-use-port" not in rule_ids(listener(sock(port=4445)))
    # the shipped IANA registry reports 4444 (a well-known backdoor default)
    assert services.is_unauthorized_use(4444, "tcp")


@pytest.mark.parametrize("port, state, flagged", [
    (45000, State.LISTEN, True), (40000, State.LISTEN, False),     # reserved
    (8080, State.LISTEN, False), (45000, State.BOUND_INACTIVE, False),
])
def test_ephemeral_port_listener(port, state, flagged):
    assert ("ephemeral-port-listener" in rule_ids(listener(sock(port=port, state=state)))) \
        is flagged


# --- evaluation ----------------------------------------------------------------------------------

def test_socket_rules_run_once_per_socket_program_rules_per_program():
    s = sock("0.0.0.0", 22)
    activator = listener(s, exe="/usr/lib/systemd/systemd", pid=1)
    daemon = listener(s, exe="/tmp/sshd", first=False, pid=200)
    findings = evaluate([activator, daemon], CTX)
    assert [f.rule for f in findings].count("exposed-all-interfaces") == 1
    assert [(f.rule, f.pid) for f in findings if f.rule == "exe-temp-dir"] == \
        [("exe-temp-dir", 200)]


def test_baselined_listener_skips_baselinable_rules_only():
    l = listener(sock("0.0.0.0"), exe="/tmp/x/python3", deleted=True, on_disk="missing")
    ids = {f.rule for f in evaluate([l], CTX, accepted=[l])}
    assert ids == {"exe-deleted"}


def test_skip():
    l = listener(sock("0.0.0.0"), exe="/tmp/x/python3")
    assert "exe-temp-dir" not in {f.rule for f in evaluate([l], CTX, skip=["exe-temp-dir"])}


def test_finding_fields():
    (f,) = [f for f in evaluate([listener(sock("0.0.0.0", 8081), exe="/usr/sbin/x")], CTX)]
    assert (f.rule, f.severity, f.proto, f.address, f.port, f.pid, f.exe, f.user) == \
        ("exposed-all-interfaces", Severity.MEDIUM, "tcp", "0.0.0.0", 8081, 100, "/usr/sbin/x",
         "root")
    assert f.fix and "\n" not in f.message


def test_registry_ids_are_unique_and_documented():
    ids = [r.id for r in rules.RULES]
    assert len(ids) == len(set(ids))
    for rule_id in ids:
        assert rule_id in rules.__doc__


# --- hidden sockets ------------------------------------------------------------------------------

def test_hidden_in_every_round_is_reported():
    shown, hidden = sock(port=31337, inode=1), sock(port=22, inode=2)
    result = hidden_sockets(None, [shown, hidden], [shown])
    result = hidden_sockets(result, [shown, hidden], [shown])
    only_first, only_second = result
    assert list(only_first.values()) == [hidden] and not only_second


def test_churn_is_not_reported():
    stable, closed, opened = sock(port=1, inode=1), sock(port=2, inode=2), sock(port=3, inode=3)
    # round 1: "closed" was closed between the two dumps, "opened" opened between them
    result = hidden_sockets(None, [stable, closed], [stable, opened])
    assert any(result)
    result = hidden_sockets(result, [stable, opened], [stable, opened])
    assert not any(result)


def test_address_spelling_and_blind_states_are_not_differences():
    netlink = [sock("fe80::1%eth0", inode=5), sock("::ffff:127.0.0.1", inode=6),
               sock(state=State.BOUND_INACTIVE, inode=7)]
    procfs = [sock("fe80::1", inode=5), sock("::ffff:7f00:1", inode=6)]
    assert not any(hidden_sockets(None, netlink, procfs))


def test_unexplained_refusals():
    visible = [sock(port=80), sock("::", 443, Proto.UDP, State.UNCONN, v6only=True)]
    refused = [("tcp", "ipv4", 80), ("tcp", "ipv6", 80), ("udp", "ipv4", 443),
               ("tcp", "ipv4", 31337), ("udp", "ipv4", 80)]
    assert unexplained_refusals(refused, visible) == {("tcp", "ipv4", 31337),
                                                      ("udp", "ipv4", 80)}


def test_difference_of_a_later_round_only_is_not_reported():
    early, late = sock(port=1, inode=1), sock(port=2, inode=2)
    result = hidden_sockets(None, [early], [])
    result = hidden_sockets(result, [late], [early])
    assert not any(result)


def test_exposure_of_a_published_port_names_its_container():
    from portscope.types import Container, Published
    c = Container("a" * 64, "web", "docker")
    sock = Socket(Proto.TCP, Family.IPV4, Endpoint("0.0.0.0", 8080), None, State.LISTEN, 1, 0,
                  container=c, published=Published(c, "172.17.0.2", 80, "docker-proxy"))
    hit = rules.exposed_all_interfaces(Listener(sock, None, None, (), None), None)
    assert hit.message == ("accepts traffic on every IPv4 address (0.0.0.0), published for "
                           "container web port 80")
