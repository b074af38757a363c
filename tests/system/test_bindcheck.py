"""``check_bind`` / ``portscope check`` against real holders in a private network namespace.

Every rule is set up for real (a holder process binds in a fresh namespace made by the test),
then the verdict, the errno and the reason codes are checked; unprivileged cases run through
setpriv. ``test_rules_match_kernel`` compares the rules alone (no trial) with what the kernel
does for every address pair and option combination.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from netns import NOBODY, netns  # noqa: F401  (the fixture)
from portscope.bindcheck import REASON_CODES, WARNING_CODES

SOCKS = """
def sock(addr, port, *, udp=False, ra=0, rp=0, v6only=None, listen=True):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    if ra: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rp: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if v6only is not None: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port))
    if listen and not udp: s.listen()
    return s
def time_wait(port, ra=0, rp=0):
    l = sock("127.0.0.1", port, ra=ra, rp=rp)
    c = socket.create_connection(("127.0.0.1", port)); a, _ = l.accept()
    a.close(); time.sleep(0.05); c.close(); l.close(); time.sleep(0.05)
"""


def check(ns, *args, user=None):
    """``portscope check ARGS --json`` in ``ns``: (exit code, document, reason codes)."""
    code, doc = ns.portscope_json("check", *args, user=user)
    reasons = {r["code"] for r in doc["reasons"]}
    assert reasons <= REASON_CODES.keys(), "codes come from the documented list"
    assert {w["code"] for w in doc["warnings"]} <= WARNING_CODES.keys()
    assert code == (0 if doc["bindable"] else 1)
    return code, doc, reasons


def hold(ns, code, **kwargs):
    """A holder in ``ns`` running ``code`` with the ``SOCKS`` helpers defined."""
    return ns.holder(SOCKS + textwrap.dedent(code), **kwargs)


def test_specific_and_wildcard_block_each_other(netns):
    h = hold(netns, """
        keep = [sock("127.0.0.1", 8080), sock("0.0.0.0", 9090)]
        ready()
    """)
    code, doc, reasons = check(netns, "127.0.0.1:8080")
    assert (code, doc["bindable"], doc["errno"], reasons) == (1, False, "EADDRINUSE", {"in-use"})
    assert [o["pid"] for o in doc["blockers"][0]["owners"]] == [h.pid]
    assert doc["blockers"][0]["state"] == "LISTEN" and doc["blockers"][0]["reasons"] == ["in-use"]
    assert check(netns, "0.0.0.0:8080")[2] == {"wildcard-overlap"}
    assert check(netns, "127.0.0.1:9090")[2] == {"wildcard-overlap"}
    code, doc, reasons = check(netns, "127.0.0.2:8080")
    assert (code, doc["bindable"], doc["errno"], doc["blockers"]) == (0, True, None, [])
    assert doc["trial"] == {"performed": True, "errno": None, "listened": True, "note": ""}


def test_answer_is_per_network_namespace(netns):
    from netns import NetNS
    hold(netns, "keep = sock('0.0.0.0', 8080); ready()")
    other = NetNS()
    try:
        code, doc, _ = check(other, "8080")
        assert code == 0 and doc["blockers"] == []
        assert f"net:[{doc['query']['netns']}]" in other.portscope("check", "8080").stdout
    finally:
        other.close()
    assert check(netns, "8080")[0] == 1


def test_tcp_and_udp_are_separate_port_spaces(netns):
    hold(netns, """
        keep = sock("0.0.0.0", 5353, udp=True)
        ready()
    """)
    assert check(netns, "0.0.0.0:5353")[:2][0] == 0
    code, doc, reasons = check(netns, "-u", "0.0.0.0:5353")
    assert (code, doc["errno"], reasons) == (1, "EADDRINUSE", {"in-use"})
    assert doc["blockers"][0]["proto"] == "udp"


def test_dual_stack_wildcard_covers_ipv4(netns):
    hold(netns, """
        keep = sock("::", 8080, v6only=0)
        ready()
    """)
    for target in ("127.0.0.1:8080", "0.0.0.0:8080"):
        code, doc, reasons = check(netns, target)
        assert (code, reasons) == (1, {"dual-stack-overlap"}), target
    mapped = netns.python("""
        from portscope.bindcheck import check_bind
        d = check_bind(8080, "::ffff:127.0.0.1")
        print(d.binds, d.errno, [r.code for r in d.reasons])
    """)
    assert mapped.stdout.split() == ["('127.0.0.1:8080',)", "EADDRINUSE",
                                     "['dual-stack-overlap']"], mapped.stderr
    assert check(netns, "[::1]:8080")[2] == {"wildcard-overlap"}
    assert check(netns, "8080")[2] == {"in-use"}


def test_v6only_wildcard_leaves_ipv4_free(netns):
    hold(netns, """
        keep = sock("::", 8080, v6only=1)
        ready()
    """)
    assert check(netns, "0.0.0.0:8080")[0] == 0
    assert check(netns, "127.0.0.1:8080")[0] == 0
    code, doc, reasons = check(netns, "8080")           # bindv6only=0: [::] dual-stack
    assert doc["binds"] == ["[::]:8080 (dual-stack)"] and reasons == {"in-use"}
    code, doc, reasons = check(netns, "8080", "--v6only")
    assert doc["binds"] == ["0.0.0.0:8080", "[::]:8080 (v6only)"] and reasons == {"in-use"}


def test_bindv6only_sysctl_is_the_default(netns):
    netns.sysctl("net.ipv6.bindv6only", "1")
    hold(netns, """
        keep = sock("0.0.0.0", 8080)
        ready()
    """)
    code, doc, _ = check(netns, "[::]:8080")
    assert code == 0 and doc["binds"] == ["[::]:8080 (v6only)"]
    assert check(netns, "[::]:8080", "--dual-stack")[2] == {"dual-stack-overlap"}
    code, doc, reasons = check(netns, "8080")
    assert doc["binds"] == ["0.0.0.0:8080", "[::]:8080 (v6only)"] and reasons == {"in-use"}


def test_reuseaddr_never_passes_a_listener(netns):
    hold(netns, """
        keep = sock("127.0.0.1", 8080, ra=1)
        ready()
    """)
    code, doc, reasons = check(netns, "--reuseaddr", "127.0.0.1:8080")
    assert (code, doc["errno"], reasons) == (1, "EADDRINUSE", {"in-use", "reuseaddr-vs-listener"})
    assert doc["trial"]["performed"] and not doc["trial"]["listened"]


@pytest.mark.parametrize("old_reuseaddr", [0, 1])
def test_time_wait_and_inherited_reuseaddr(netns, old_reuseaddr):
    hold(netns, f"""
        time_wait(8080, ra={old_reuseaddr})
        ready()
    """)
    code, doc, reasons = check(netns, "127.0.0.1:8080")
    assert (code, doc["errno"], reasons) == (1, "EADDRINUSE", {"in-use", "time-wait"})
    (tw,) = doc["blockers"]
    assert tw["state"] == "TIME_WAIT" and tw["owners"] == [] and tw["owner_unknown"] == "kernel"
    assert any("60 s" in fix for fix in doc["fixes"])
    code, doc, reasons = check(netns, "--reuseaddr", "127.0.0.1:8080")
    if old_reuseaddr:
        assert (code, doc["bindable"]) == (0, True)
    else:
        assert (code, reasons) == (1, {"in-use", "time-wait", "reuseaddr-not-inherited"})
    assert not any(w["code"] == "rules-trial-disagree" for w in doc["warnings"])


@pytest.mark.parametrize("old_reuseaddr", [0, 1])
def test_open_accepted_connection_after_listener_closed(netns, old_reuseaddr):
    hold(netns, f"""
        l = sock("127.0.0.1", 8080, ra={old_reuseaddr})
        c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept(); l.close()
        ready()
    """)
    code, doc, reasons = check(netns, "--reuseaddr", "127.0.0.1:8080")
    if old_reuseaddr:
        assert code == 0
    else:
        assert reasons == {"in-use", "reuseaddr-not-inherited"}
        assert doc["blockers"][0]["state"] == "ESTABLISHED"
        assert doc["rules_errno"] == "EADDRINUSE", "options read from the holder's descriptor"


def test_bound_inactive_blocks(netns):
    h = hold(netns, """
        keep = sock("127.0.0.1", 8080, listen=False)
        ready()
    """)
    code, doc, reasons = check(netns, "8080")
    assert (code, reasons) == (1, {"dual-stack-overlap", "bound-inactive"})
    assert doc["blockers"][0]["state"] == "BOUND_INACTIVE"
    assert doc["blockers"][0]["owners"][0]["pid"] == h.pid


def test_reuseport_needs_every_socket(netns):
    hold(netns, """
        keep = [sock("127.0.0.1", 8080, rp=1), sock("127.0.0.1", 9090)]
        ready()
    """)
    code, doc, _ = check(netns, "--reuseport", "127.0.0.1:8080")
    assert code == 0
    assert doc["trial"]["listened"] is False and "SO_REUSEPORT group" in doc["trial"]["note"]
    assert check(netns, "127.0.0.1:8080")[2] == {"in-use", "reuseport-mismatch"}
    assert check(netns, "--reuseport", "127.0.0.1:9090")[2] == {"in-use", "reuseport-mismatch"}


def test_reuseport_needs_the_same_user(netns):
    hold(netns, """
        keep = sock("127.0.0.1", 8080, rp=1)
        ready()
    """)
    # a real unprivileged caller: rules and trial agree
    code, doc, reasons = check(netns, "--reuseport", "127.0.0.1:8080", user="nobody")
    assert (code, reasons) == (1, {"in-use", "reuseport-other-user"})
    assert doc["query"]["uid"] == 65534 and doc["trial"]["errno"] == "EADDRINUSE"
    # root evaluating as nobody: the trial runs in a child that became nobody
    code, doc, reasons = check(netns, "--reuseport", "--user", "nobody", "127.0.0.1:8080")
    assert (code, reasons) == (1, {"in-use", "reuseport-other-user"})
    assert doc["trial"]["performed"] and doc["trial"]["errno"] == "EADDRINUSE"


def test_reuseport_same_unprivileged_user(netns):
    hold(netns, """
        keep = sock("127.0.0.1", 8080, rp=1)
        ready()
    """, user=NOBODY)
    code, doc, _ = check(netns, "--reuseport", "127.0.0.1:8080", user="nobody")
    assert code == 0 and doc["bindable"]


def test_privileged_port_and_eacces_hides_eaddrinuse(netns):
    hold(netns, """
        keep = sock("127.0.0.1", 80)
        ready()
    """)
    assert check(netns, "127.0.0.2:80")[0] == 0                    # root
    code, doc, reasons = check(netns, "127.0.0.2:80", user="nobody")
    assert (code, doc["errno"], reasons) == (1, "EACCES", {"privileged-port"})
    assert doc["trial"]["errno"] == "EACCES"
    code, doc, reasons = check(netns, "127.0.0.1:80", user="nobody")
    assert (doc["errno"], reasons) == ("EACCES", {"privileged-port", "in-use"}), \
        "a trial alone would only have said EACCES"
    code, doc, reasons = check(netns, "--user", "nobody", "127.0.0.1:80")
    assert (doc["errno"], reasons) == ("EACCES", {"privileged-port", "in-use"})


def test_unprivileged_port_start_sysctl(netns):
    netns.sysctl("net.ipv4.ip_unprivileged_port_start", "2000")
    code, doc, reasons = check(netns, "127.0.0.1:1500", user="nobody")
    assert (code, doc["errno"], reasons) == (1, "EACCES", {"privileged-port"})
    assert check(netns, "127.0.0.1:2000", user="nobody")[0] == 0


def test_address_not_configured_and_zone_required(netns):
    code, doc, reasons = check(netns, "10.255.255.1:8080")
    assert (code, doc["errno"], reasons) == (1, "EADDRNOTAVAIL", {"address-not-available"})
    code, doc, reasons = check(netns, "[fe80::1]:8080")
    assert (code, doc["errno"], reasons) == (1, "EINVAL", {"zone-required"})


def test_errno_order_differs_by_family(netns):
    """IPv4 checks the address before the privilege; IPv6 the privilege first."""
    code, doc, reasons = check(netns, "10.255.255.1:80", user="nobody")
    assert doc["errno"] == "EADDRNOTAVAIL" and reasons == {"address-not-available",
                                                           "privileged-port"}
    code, doc, reasons = check(netns, "[2001:db8::1]:80", user="nobody")
    assert doc["errno"] == "EACCES" and reasons == {"address-not-available", "privileged-port"}


def test_udp_reuseaddr_rules_and_no_trial_into_a_live_socket(netns):
    hold(netns, """
        keep = [sock("127.0.0.1", 5353, udp=True, ra=1), sock("127.0.0.1", 5354, udp=True)]
        ready()
    """)
    code, doc, _ = check(netns, "-u", "--reuseaddr", "127.0.0.1:5353")
    assert code == 0 and not doc["trial"]["performed"]
    assert "datagrams" in doc["trial"]["note"]
    code, doc, reasons = check(netns, "-u", "--reuseaddr", "127.0.0.1:5354")
    assert (code, reasons) == (1, {"in-use", "reuseaddr-mismatch"})


def test_warnings_ephemeral_and_reserved(netns):
    netns.sysctl("net.ipv4.ip_local_reserved_ports", "40001")
    _, doc, _ = check(netns, "40000")
    assert [w["code"] for w in doc["warnings"]] == ["ephemeral-range"]
    _, doc, _ = check(netns, "40001")
    assert [w["code"] for w in doc["warnings"]] == ["ephemeral-range", "reserved-port"]
    _, doc, _ = check(netns, "8080")
    assert doc["warnings"] == []


def test_json_shape_and_text_output(netns):
    h = hold(netns, """
        keep = sock("127.0.0.1", 8080)
        ready()
    """)
    code, doc, _ = check(netns, "8080")
    assert {"bindable", "errno", "reasons", "warnings", "blockers"} <= doc.keys()
    blocker = doc["blockers"][0]
    assert {"proto", "family", "local", "remote", "state", "inode", "uid", "owners",
            "owner_unknown"} <= blocker.keys()
    text = netns.portscope("check", "8080")
    assert text.returncode == 1
    assert "NOT bindable (EADDRINUSE)" in text.stdout and str(h.pid) in text.stdout
    assert "dual-stack-overlap" in text.stdout and "fix: stop every holder" in text.stdout
    assert netns.portscope("check", "127.0.0.2:8080").stdout.startswith(
        "127.0.0.2:8080 tcp as root: bindable")


@pytest.mark.parametrize("bad", ["0", "65536", "80a", "+80", "::1:80", "127.1:80",
                                 "[::1]", "010.0.0.1:80", "fe80::1%nosuchif0:80"])
def test_bad_input_is_a_usage_error(netns, bad):
    result = netns.portscope("check", bad)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unknown_user_is_a_usage_error(netns):
    result = netns.portscope("check", "--user", "no-such-user-xyz", "8080")
    assert result.returncode == 2 and "unknown user" in result.stderr


RULES_VS_KERNEL = "import socket, time\n" + SOCKS + """
import errno, itertools, json, os
from portscope.bindcheck import check_bind
ADDRS = [("0.0.0.0", None), ("127.0.0.1", None), ("127.0.0.2", None), ("::", 0), ("::", 1),
         ("::1", None), ("::ffff:127.0.0.1", 0), ("::ffff:0.0.0.0", 0)]
OPTS = [(0, 0), (1, 0), (0, 1), (1, 1)]
port = 20000
bad = []
def attempt(addr, v6only, udp, ra, rp):
    try:
        s = sock(addr, port, udp=udp, ra=ra, rp=rp, v6only=v6only); s.close(); return None
    except OSError as exc:
        return errno.errorcode[exc.errno]
def case(old, new, udp, old_opts, new_opts, state):
    global port
    port += 1
    keep = []
    if state == "TIME_WAIT":
        time_wait(port, ra=old_opts[0], rp=old_opts[1])
    else:
        keep.append(sock(old[0], port, udp=udp, ra=old_opts[0], rp=old_opts[1], v6only=old[1],
                         listen=state == "LISTEN"))
    d = check_bind(port, new[0], proto="udp" if udp else "tcp", reuseaddr=bool(new_opts[0]),
                   reuseport=bool(new_opts[1]), v6only=None if new[1] is None else bool(new[1]),
                   trial=False)
    real = attempt(new[0], new[1], udp, *new_opts)
    predicted = d.errno
    if predicted != real:
        bad.append([old, new, udp, old_opts, new_opts, state, predicted, real])
    for s in keep: s.close()
for udp in (False, True):
    for old, new in itertools.product(ADDRS, ADDRS):
        case(old, new, udp, (0, 0), (0, 0), "UNCONN" if udp else "LISTEN")
for udp, state in ((False, "LISTEN"), (False, "BOUND_INACTIVE"), (False, "TIME_WAIT"),
                   (True, "UNCONN")):
    for old_opts, new_opts in itertools.product(OPTS, OPTS):
        case(("127.0.0.1", None), ("127.0.0.1", None), udp, old_opts, new_opts, state)
print(json.dumps({"cases": port - 20000, "mismatches": bad}))
"""


def test_rules_match_kernel(netns):
    """The rules alone (trial=False) against real binds: every address pair for TCP and UDP,
    and every SO_REUSEADDR/SO_REUSEPORT combination against LISTEN, BOUND_INACTIVE,
    TIME_WAIT and UDP sockets."""
    result = netns.python(RULES_VS_KERNEL, pidns=True)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["cases"] == 2 * 64 + 4 * 16
    # TIME_WAIT's old options cannot be read (no descriptor): the rules answer "unknown" and
    # assume the worst; everything else must match the kernel exactly
    mismatches = [m for m in doc["mismatches"] if not (m[5] == "TIME_WAIT" and m[7] is None)]
    assert mismatches == []
