"""The inventory against real sockets and processes: every socket, every owner."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import portscope
from portscope import OwnerUnknown, Proto, SocketFilter, State

pytestmark = [pytest.mark.skipif(not os.path.exists("/proc/self/ns/net"), reason="Linux only"),
              pytest.mark.usefixtures("fd_scan")]      # every test with both owner scans


def on_port(port: int, udp: bool = False, **kwargs):
    """Sockets of one protocol on local ``port`` (TCP unless ``udp``): the other protocol's
    port space may hold the same number at the same time."""
    flt = SocketFilter(protos=frozenset({Proto.UDP if udp else Proto.TCP}),
                       port_range=(port, port))
    return portscope.take_snapshot(flt, **kwargs).sockets


def test_forked_listener_lists_every_holder(holder):
    h = holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
        kids = [fork_sleeper() for _ in range(3)]
        ready(port=l.getsockname()[1], kids=kids)
    """)
    port = h.info["port"]
    sockets = [s for s in on_port(port) if s.state is State.LISTEN]
    assert len(sockets) == 1, "one kernel socket, however many processes hold it"
    assert {o.pid for o in sockets[0].owners} == {h.pid, *h.info["kids"]}
    assert all(o.process.ppid == h.pid for o in sockets[0].owners if o.pid != h.pid)
    assert {o.pid for o in portscope.owners_of(port)} == {h.pid, *h.info["kids"]}


def test_reuseport_pair_is_two_sockets(holder):
    first = holder("""
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0)); s.listen(); ready(port=s.getsockname()[1])
    """)
    port = first.info["port"]
    second = holder(f"""
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", {port})); s.listen(); ready()
    """)
    listening = [s for s in on_port(port) if s.state is State.LISTEN]
    assert len(listening) == 2
    assert sorted(o.pid for s in listening for o in s.owners) == sorted([first.pid, second.pid])
    assert len({s.inode for s in listening}) == 2


@pytest.mark.parametrize("v6only", [0, 1])
def test_ipv6_wildcard_v6only_flag(holder, v6only):
    h = holder(f"""
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, {v6only})
        s.bind(("::", 0)); s.listen(); ready(port=s.getsockname()[1])
    """)
    (sock,) = on_port(h.info["port"])
    assert sock.local.address == "::" and sock.family == "ipv6"
    assert sock.v6only is bool(v6only)
    assert [o.pid for o in sock.owners] == [h.pid]


def test_udp_bound_and_connected(holder):
    h = holder("""
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
        b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); b.bind(("::1", 0))
        b.connect(("::1", 9))
        ready(bound=a.getsockname()[1], connected=b.getsockname()[1])
    """)
    (bound,) = on_port(h.info["bound"], udp=True)
    assert (bound.proto, bound.state, bound.remote) == ("udp", State.UNCONN, None)
    (connected,) = on_port(h.info["connected"], udp=True)
    assert connected.state is State.ESTABLISHED and connected.remote == ("::1", 9)
    assert bound.owners[0].pid == connected.owners[0].pid == h.pid
    listener_ports = {s.local.port for s in portscope.listeners()}
    assert h.info["bound"] in listener_ports and h.info["connected"] not in listener_ports


def test_time_wait_is_kept_as_kernel_held(holder, cli):
    h = holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(); port = l.getsockname()[1]
        c = socket.create_connection(l.getsockname()); a, _ = l.accept()
        a.close(); time.sleep(0.05); c.close(); l.close()   # the server side closes first
        ready(port=port)
    """)
    port = h.info["port"]
    (tw,) = on_port(port)
    assert tw.state is State.TIME_WAIT and tw.inode == 0
    assert tw.owners == () and tw.owner_unknown is OwnerUnknown.KERNEL
    result = cli(str(port), "-t", "--json", "--netns", "host")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [s["owner_unknown"] for s in doc["sockets"]] == ["kernel"]


def test_bound_inactive_socket_is_found_with_owner(holder):
    if tuple(map(int, os.uname().release.split(".")[:2])) < (6, 8):
        pytest.skip("the kernel dumps bound-inactive TCP sockets from 6.8 on")
    h = holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 0)); ready(port=s.getsockname()[1])
    """)
    (sock,) = on_port(h.info["port"])
    assert sock.state is State.BOUND_INACTIVE
    assert [o.pid for o in sock.owners] == [h.pid]
    ss = subprocess.run(["ss", "-Htan", f"sport = :{h.info['port']}"], capture_output=True,
                        text=True, check=True).stdout
    assert ss.strip() == "", "ss cannot see it: this is what portscope adds"
    assert h.info["port"] in {s.local.port for s in portscope.listeners()}


def test_accepted_connections_counted_for_listener(holder, cli):
    h = holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
        pairs = []
        for _ in range(3):
            c = socket.create_connection(l.getsockname()); pairs.append((c, l.accept()[0]))
        ready(port=l.getsockname()[1])
    """)
    result = cli(str(h.info["port"]), "-t", "--json", "--netns", "host")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    (listener,) = [s for s in doc["sockets"] if s["state"] == "LISTEN"]
    assert listener["accepted_connections"] == 3
    # only local-port matches: the 3 accepted ends, never the 3 clients (remote port = port)
    others = [s for s in doc["sockets"] if s["state"] != "LISTEN"]
    assert len(others) == 3 and all(s["local"]["port"] == h.info["port"] for s in others)


def test_root_listener_seen_unprivileged(holder, cli):
    h = holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); ready(port=s.getsockname()[1])
    """)
    port = str(h.info["port"])
    result = cli(port, "-t", "--json", "--netns", "host", user="nobody")
    assert result.returncode == 0, result.stderr
    (sock,) = json.loads(result.stdout)["sockets"]
    assert sock["owners"] == [] and sock["owner_unknown"] == "permission"
    assert sock["uid"] == 0, "the kernel still tells the socket's uid"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no visible owner" in lines[0] and "CAP_SYS_PTRACE" in lines[0]
    listing = cli(user="nobody")
    assert listing.returncode == 0 and port in listing.stdout and "(permission)" in listing.stdout
    assert "no visible owner" in listing.stderr


def _ss_listeners() -> set[tuple[str, str, int]]:
    out = subprocess.run(["ss", "-Htuln"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        netid, _state, _rq, _sq, local, _peer = line.split()[:6]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        found.add((netid, "::" if address == "*" else address, int(port)))
    return found


def test_listener_set_equals_ss(holder):
    holder("""
        keep = []
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(fam, kind); s.bind((addr, 0))
                if kind == socket.SOCK_STREAM: s.listen()
                keep.append(s)
        ready()
    """)
    mine = set()
    for s in portscope.listeners(owners=False):
        if s.state is State.BOUND_INACTIVE:
            continue             # invisible to ss by design
        address = s.local.address.split("%")[0]
        if s.family == "ipv6" and address == "::" and s.v6only is False:
            address = "::"       # ss prints a dual-stack wildcard as *
        mine.add((s.proto.value, address, s.local.port))
    assert mine == _ss_listeners()


def test_pipe_closed_early_is_quiet(holder):
    holder("""
        keep = [socket.socket() for _ in range(30)]
        for s in keep: s.bind(("127.0.0.1", 0)); s.listen()
        ready()
    """)
    import sys
    shell = f"{sys.executable} -m portscope list -a | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "Traceback" not in result.stderr and "pipe" not in result.stderr.lower()
    assert result.stdout.split()[:2] in (["Proto", "State"], ["Netns", "Proto"])


def test_no_owners_skips_scan_and_keeps_rows(holder, cli):
    h = holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); ready(port=s.getsockname()[1])
    """)
    result = cli("list", "-l", "-n", "--json", "--netns", "host")
    sock = [s for s in json.loads(result.stdout)["sockets"]
            if s["local"]["port"] == h.info["port"]]
    assert len(sock) == 1 and sock[0]["owners"] == [] and sock[0]["owner_unknown"] is None


def test_list_filters_by_pid_process_user(holder, cli):
    h = holder("""
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); ready(port=s.getsockname()[1])
    """)
    by_pid = json.loads(cli("list", "-a", "--pid", str(h.pid), "--json", "--netns",
                            "host").stdout)["sockets"]
    assert [s["local"]["port"] for s in by_pid] == [h.info["port"]]
    name = by_pid[0]["owners"][0]["process"]["name"]
    by_name = json.loads(cli("list", "-l", "--process", name, "--json").stdout)["sockets"]
    assert h.info["port"] in [s["local"]["port"] for s in by_name]
    by_user = json.loads(cli("list", "-l", "--user", "nobody", "--json").stdout)["sockets"]
    assert h.info["port"] not in [s["local"]["port"] for s in by_user]


def test_who_port_exit_codes_in_private_netns():
    """In a new network namespace nothing holds port 8080 (exit 1); a listener there does."""
    import sys
    script = ("import json, socket, subprocess, sys\n"
              "cmd = [sys.executable, '-m', 'portscope', '8080', '--netns', 'host']\n"
              "empty = subprocess.run(cmd, capture_output=True, text=True)\n"
              "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 8080)); s.listen()\n"
              "held = subprocess.run(cmd, capture_output=True, text=True)\n"
              "print(json.dumps([empty.returncode, held.returncode, empty.stderr, held.stdout]))\n")
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=60)
    empty_rc, held_rc, empty_err, held_out = json.loads(result.stdout)
    assert (empty_rc, held_rc) == (1, 0), result
    assert "no socket" in empty_err
    assert "127.0.0.1:8080" in held_out


def test_json_listing_rendered_in_two_processes_holds_every_socket_once(holder, tmp_path):
    from portscope.render import listing
    from portscope.snapshot import open_snapshot
    h = holder("""
        keep = []
        for _ in range(300):
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); keep.append(s)
        ready(ports=[s.getsockname()[1] for s in keep])
    """)
    stream = open_snapshot(netns="host")
    assert stream.divisible
    path = tmp_path / "listing.json"
    with open(path, "w", encoding="utf-8") as out:
        listing.write_json_in_two(out, stream, {"query": None})
    doc = json.loads(path.read_text())
    mine = [s for s in doc["sockets"] if s["local"]["port"] in set(h.info["ports"])
            and s["state"] == "LISTEN"]
    assert sorted(s["local"]["port"] for s in mine) == sorted(h.info["ports"])
    assert all([o["pid"] for o in s["owners"]] == [h.pid] for s in mine)
    # a socket nothing asked for its cookie yet (read by the BPF walk) has none: its inode
    keys = [(s["proto"], s["netns"], s["cookie"] if s["cookie"] is not None else s["inode"])
            for s in doc["sockets"]]
    assert len(keys) == len(set(keys)), "no socket written twice"
    assert doc["complete"] is (not any(s["owner_unknown"] == "permission"
                                       for s in doc["sockets"]))
