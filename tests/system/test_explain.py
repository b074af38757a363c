"""``portscope explain`` on the inventory's scenarios, each built for real in a private network
namespace: the words must match what the sockets really are."""

from __future__ import annotations

import textwrap

import pytest

from netns import netns  # noqa: F401  (the fixture)


def explain(ns, *args):
    """``portscope explain ARGS --json``: (exit code, document, all text joined by newlines)."""
    code, doc = ns.portscope_json("explain", *args, "--netns", "host")
    text = "\n".join([doc["summary"]] + [line for s in doc["sections"]
                                          for line in (s["title"], *s["lines"])])
    return code, doc, text


def titles(doc):
    return [s["title"] for s in doc["sections"]]


def test_forked_listener_with_accepted_connections_and_clients(netns):
    h = netns.holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        kids = [fork_sleeper() for _ in range(3)]
        pairs = [(c, l.accept()[0]) for c in
                 [socket.create_connection(("127.0.0.1", 8080)) for _ in range(2)]]
        ready(kids=kids, clients=[c.getsockname()[1] for c, _ in pairs])
    """)
    code, doc, text = explain(netns, "8080")
    assert code == 0 and doc["kind"] == "port" and doc["found"]
    assert titles(doc) == ["TCP listener 127.0.0.1:8080", "Clients of this port", "In short"]
    listener = doc["sections"][0]
    assert "loopback only, IPv4" in text
    assert ("held by 4 processes through this one socket" in text.lower()
            and "3 forked child(ren)" in text and "fork()" in text)
    for pid in h.info["kids"]:
        assert str(pid) in listener["lines"][1]
    assert "2 connection(s) accepted from it" in text and "4-tuple" in text
    for port in h.info["clients"]:
        assert f"127.0.0.1:8080 <-> 127.0.0.1:{port}  ESTABLISHED" in text
        assert f"127.0.0.1:{port} -> 127.0.0.1:8080  ESTABLISHED" in text
    assert "ephemeral range 32768-60999" in text
    assert "registered port" in text and "http-alt" in text
    assert "A PID names a process; a port names an endpoint" in text
    assert [s["state"] for s in listener["sockets"]] == ["LISTEN", "ESTABLISHED", "ESTABLISHED"]


def test_reuseport_pair(netns):
    pids = [netns.holder("""
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 8080)); s.listen(); ready()
    """).pid for _ in range(2)]
    code, doc, text = explain(netns, "8080")
    assert titles(doc)[0] == "TCP listener 127.0.0.1:8080 (2 sockets)"
    assert "2 separate sockets are bound to 127.0.0.1:8080" in text
    assert "SO_REUSEPORT group (SO_REUSEPORT confirmed on each)" in text
    assert "This differs from fork sharing" in text and "forked" not in text
    assert all(str(pid) in text for pid in pids)
    assert len({s["inode"] for s in doc["sections"][0]["sockets"]}) == 2


@pytest.mark.parametrize("v6only, words", [
    (0, "all interfaces, IPv6 and IPv4 (dual-stack: v6only is off"),
    (1, "all interfaces, IPv6 only (v6only is on"),
])
def test_ipv6_wildcard(netns, v6only, words):
    netns.holder(f"""
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, {v6only})
        s.bind(("::", 8080)); s.listen(); ready()
    """)
    code, doc, text = explain(netns, "8080")
    assert code == 0 and titles(doc)[0] == "TCP listener [::]:8080" and words in text


def test_udp_bound_and_connected(netns):
    h = netns.holder("""
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 5353))
        b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); b.bind(("::1", 5354))
        b.connect(("::1", 9))
        ready()
    """)
    code, doc, text = explain(netns, "5353")
    assert titles(doc)[0] == "UDP bound socket 127.0.0.1:5353"
    assert "unconnected UDP socket" in text and "no accept()" in text and "mdns" in text
    code, doc, text = explain(netns, "5354")
    assert titles(doc)[0] == "UDP connected socket [::1]:5354"
    assert "connected UDP socket: connect() fixed its peer to [::1]:9" in text
    code, doc, text = explain(netns, "--pid", str(h.pid))
    assert code == 0 and doc["kind"] == "pid"
    assert f"PID {h.pid} names a process" in text and "2 TCP/UDP socket(s)" in text
    assert "UDP bound socket 127.0.0.1:5353" in " ".join(titles(doc))


def test_time_wait(netns):
    netns.holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        c = socket.create_connection(("127.0.0.1", 8080)); a, _ = l.accept()
        a.close(); time.sleep(0.05); c.close(); l.close()
        ready()
    """)
    code, doc, text = explain(netns, "8080")
    assert code == 0
    assert titles(doc) == ["Closed connections kept by the kernel", "In short"]
    assert "TIME_WAIT" in text and "no process, for up to 60 s" in text
    assert "EADDRINUSE unless both the old listener and the new socket set SO_REUSEADDR" in text
    assert doc["sections"][0]["sockets"][0]["owner_unknown"] == "kernel"


def test_bound_but_not_listening(netns):
    h = netns.holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 8080)); ready()
    """)
    code, doc, text = explain(netns, "8080")
    assert titles(doc)[0] == "TCP bound, not listening 127.0.0.1:8080"
    assert "BOUND_INACTIVE" in text and "a new bind() gets EADDRINUSE" in text
    assert f"pid {h.pid}" in text


def test_pid_with_listener_and_outgoing_connection(netns):
    server = netns.holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
        import threading
        conns = []
        threading.Thread(target=lambda: conns.append(l.accept()), daemon=True).start()
        ready()
    """)
    client = netns.holder("""
        c = socket.create_connection(("127.0.0.1", 8080)); ready(port=c.getsockname()[1])
    """)
    code, doc, text = explain(netns, "--pid", str(client.pid))
    assert code == 0 and titles(doc) == ["Outgoing connections", "In short"]
    assert f"127.0.0.1:{client.info['port']} -> 127.0.0.1:8080  ESTABLISHED  (ephemeral port)" \
        in text
    code, doc, text = explain(netns, str(server.pid))     # a number no socket uses: a PID
    assert doc["kind"] == "pid" and "TCP listener 127.0.0.1:8080" in titles(doc)[0]
    assert "1 connection(s) accepted from it" in text


def test_nothing_there(netns):
    code, doc, text = explain(netns, "--port", "8080")
    assert code == 1 and not doc["found"] and "No socket uses it" in text
    code, doc, text = explain(netns, "--pid", "4194303")
    assert code == 1 and doc["kind"] == "pid" and "No process has PID 4194303" in text


def test_text_output_escapes_process_names(netns):
    netns.holder("""
        _libc.prctl(15, b"evil\\x1b[2Jname")      # PR_SET_NAME with an escape sequence
        l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen(); ready()
    """)
    result = netns.portscope("explain", "8080")
    assert result.returncode == 0
    assert "\x1b" not in result.stdout and "evil\\x1b[2Jname" in result.stdout


@pytest.mark.parametrize("bad", ["0", "65536", "abc:80", "--pid", "-1"])
def test_bad_input(netns, bad):
    args = ["--pid", "0"] if bad == "--pid" else [bad]
    result = netns.portscope("explain", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(textwrap.dedent(result.stderr).strip().splitlines()) == 1


def test_the_ipv4_mapped_wildcard_is_the_ipv4_wildcard(netns):
    """An IPv6 socket bound to ::ffff:0.0.0.0 receives on every IPv4 address and no IPv6 one
    (the kernel says so: a connection to 127.0.0.1 is accepted): every command calls it the
    IPv4 wildcard, none "one IPv4 address" or dual-stack."""
    netns.holder("""
        l = socket.socket(socket.AF_INET6); l.bind(("::ffff:0.0.0.0", 8080)); l.listen()
        c = socket.create_connection(("127.0.0.1", 8080))
        ready()
    """)
    code, doc, text = explain(netns, "8080")
    assert code == 0
    assert "all interfaces, IPv4 only" in text and "one IPv4 address" not in text
    code, found = netns.portscope_json("127.0.0.1:8080", "--netns", "host")
    assert code == 0 and [s["local"]["address"] for s in found["sockets"]
                          if s["state"] == "LISTEN"] == ["::ffff:0.0.0.0"]
    code, check = netns.portscope_json("check", "127.0.0.1:8080")
    assert code == 1 and check["reasons"][0]["code"] == "wildcard-overlap"
    code, check = netns.portscope_json("check", "[::1]:8080", "--no-trial")
    assert code == 0, check["reasons"]
