"""``pick_free_ports`` / ``portscope free`` in a private network namespace: every port it
returns really binds on IPv4 and IPv6, and no socket in any state holds it."""

from __future__ import annotations

import json
import textwrap

import pytest

from netns import netns  # noqa: F401  (the fixture)

BINDS_BOTH = """
import json, socket, sys
ports = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {ports}
kinds = {kinds}
held = []
for port in ports:
    for kind in kinds:
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(fam, kind)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port)); held.append(s)
print("ok")
"""


def bind_all(ns, ports, kinds="[socket.SOCK_STREAM]"):
    """Bind every port on 0.0.0.0 and [::] (v6only) without SO_REUSEADDR inside ``ns``."""
    result = ns.python(BINDS_BOTH.format(ports=ports, kinds=kinds))
    return result.stdout.strip() == "ok", result.stderr


def free(ns, *args, user=None):
    result = ns.portscope("free", *args, "--json", user=user)
    return result.returncode, (json.loads(result.stdout)["ports"] if result.stdout else None), \
        result.stderr


def test_ports_really_bind_on_both_families(netns):
    code, ports, err = free(netns, "--count", "5")
    assert code == 0, err
    assert len(ports) == len(set(ports)) == 5
    assert all(1024 <= p <= 65535 and not 32768 <= p <= 60999 for p in ports)
    assert bind_all(netns, ports) == (True, "")


def test_held_ports_are_skipped_whatever_the_state_or_protocol(netns):
    netns.holder("""
        keep = []
        for port in (20000, 20001):
            s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen(); keep.append(s)
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::1", 20002))
        keep.append(u)
        b = socket.socket(); b.bind(("127.0.0.1", 20003)); keep.append(b)      # BOUND_INACTIVE
        l = socket.socket(); l.bind(("127.0.0.1", 20004)); l.listen()
        c = socket.create_connection(("127.0.0.1", 20004)); a, _ = l.accept()
        a.close(); time.sleep(0.05); c.close(); l.close()                    # TIME_WAIT
        ready()
    """)
    code, ports, _ = free(netns, "--range", "20000-20005", "--count", "1")
    assert (code, ports) == (0, [20005])
    code, ports, err = free(netns, "--range", "20000-20005", "--count", "2")
    assert (code, ports) == (1, [20005]) and "only 1 of 2" in err


def test_ephemeral_and_reserved_ports_are_skipped(netns):
    netns.sysctl("net.ipv4.ip_local_port_range", "20000 20010")
    netns.sysctl("net.ipv4.ip_local_reserved_ports", "20011")
    code, ports, _ = free(netns, "--range", "19990-20015", "--count", "100")
    assert code == 1
    assert sorted(ports) == [*range(19990, 20000), *range(20012, 20016)]


def test_near_prefers_close_unassigned_ports(netns):
    from portscope.services import service_name
    code, ports, _ = free(netns, "--near", "20000", "--count", "4")
    assert code == 0
    assert all(service_name(p, "tcp") is None for p in ports)
    distances = [abs(p - 20000) for p in ports]
    assert distances == sorted(distances) and distances[-1] < 50


def test_unassigned_ports_come_first(netns):
    from portscope.services import service_name
    code, ports, _ = free(netns, "--range", "8000-8100", "--count", "3")
    assert code == 0 and all(service_name(p, "tcp") is None for p in ports)


def test_tcp_and_udp(netns):
    netns.holder("""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 21000))
        ready()
    """)
    code, ports, _ = free(netns, "--range", "21000-21001", "--tcp-and-udp", "--count", "2")
    assert (code, ports) == (1, [21001])
    assert bind_all(netns, [21001], "[socket.SOCK_STREAM, socket.SOCK_DGRAM]") == (True, "")
    code, ports, _ = free(netns, "-u", "--count", "3")
    assert code == 0 and bind_all(netns, ports, "[socket.SOCK_DGRAM]") == (True, "")


def test_host_option(netns):
    netns.holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 22000)); s.listen(); ready()
    """)
    code, ports, _ = free(netns, "--host", "127.0.0.2", "--range", "22000-22000")
    assert (code, ports) == (1, []), "a socket on the port disqualifies it, on any address"
    code, ports, _ = free(netns, "--host", "::1", "--range", "22000-22002", "--count", "2")
    assert (code, ports) == (0, [22001, 22002]) or (code, ports) == (0, [22002, 22001])
    result = netns.portscope("free", "--host", "10.255.255.1")
    assert result.returncode == 2 and "10.255.255.1" in result.stderr


def test_unprivileged_caller(netns):
    code, ports, err = free(netns, "--count", "2", user="nobody")
    assert code == 0 and len(ports) == 2, err
    code, ports, _ = free(netns, "--range", "80-90", user="nobody")
    assert (code, ports) == (1, []), "privileged ports do not bind for nobody"


def test_bound_variant_keeps_the_port(netns):
    result = netns.python("""
        import json, socket
        from portscope.bindcheck import check_bind
        from portscope.freeport import bind_free_ports
        (bound,) = bind_free_ports(1, protos=("tcp",))
        fds = [s.fileno() for s in bound.sockets]
        held = check_bind(bound.port, trial=False)
        bound.sockets[0].listen()
        c = socket.create_connection(("127.0.0.1", bound.port)); c.close()
        bound.close()
        freed = check_bind(bound.port)
        print(json.dumps([len(fds), held.bindable, sorted({r.code for r in held.reasons}),
                          freed.bindable]))
    """)
    assert json.loads(result.stdout) == [2, False, ["bound-inactive", "dual-stack-overlap",
                                                    "in-use"], True], result.stderr


def test_help_states_the_race(netns):
    result = netns.portscope("free", "--help")
    assert "pick-then-use race" in " ".join(result.stdout.split())
    from portscope import freeport
    assert "race" in freeport.pick_free_ports.__doc__


@pytest.mark.parametrize("args", [["--count", "0"], ["--count", "1001"], ["--count", "x"],
                                  ["--range", "5-3"], ["--range", "1-70000"], ["--near", "abc"],
                                  ["--host", "127.1"]])
def test_bad_input(netns, args):
    result = netns.portscope("free", *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_library_reproducible_with_rng(netns):
    code = textwrap.dedent("""
        import random
        from portscope.freeport import pick_free_ports
        print(pick_free_ports(3, rng=random.Random(7)) == pick_free_ports(3, rng=random.Random(7)))
    """)
    assert netns.python(code).stdout.strip() == "True"
