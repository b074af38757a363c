"""Container attribution, pure parts: cgroup paths, forwarder command lines, runtime state
formats (a BoltDB file built here, Docker API items), the resolver with a runtime that does
not answer, and the rendering of published ports."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

import pytest

from portscope import containers
from portscope.containers import runtimes
from portscope.containers import (BoltFile, CgroupRef, ContainerResolver, PortBinding,
                                  parse_cgroup, parse_conmon,
                                  parse_docker_proxy)
from portscope.render import columns
from portscope.types import (Container, Endpoint, Family, Owner, ProcessInfo, Proto, Published,
                             Socket, State)

A, B, C, D, P = ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64)
UID = "1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize("text, unit, container", [
    ("0::/system.slice/nginx.service\n", "nginx.service", None),
    ("0::/user.slice/user-1000.slice/session-2.scope\n", "session-2.scope", None),
    # Docker: systemd and cgroupfs drivers
    (f"0::/system.slice/docker-{A}.scope\n", f"docker-{A}.scope", CgroupRef(A, "docker", None)),
    (f"12:pids:/docker/{B}\n0::/docker/{B}\n", None, CgroupRef(B, "docker", None)),
    # Podman: systemd (a scope with a container child), cgroupfs, pods of both
    (f"0::/machine.slice/libpod-{C}.scope/container\n", f"libpod-{C}.scope",
     CgroupRef(C, "podman", None)),
    (f"9:name=systemd:/libpod_parent/libpod-{C}\n0::/\n", None, CgroupRef(C, "podman", None)),
    (f"0::/libpod_parent/{P}/libpod-{C}\n", None, CgroupRef(C, "podman", P)),
    (f"0::/machine.slice/machine-libpod_pod_{P}.slice/libpod-{C}.scope\n", f"libpod-{C}.scope",
     CgroupRef(C, "podman", P)),
    # conmon's own scope is not the container
    (f"0::/machine.slice/libpod-conmon-{C}.scope\n", f"libpod-conmon-{C}.scope", None),
    # Kubernetes: systemd and cgroupfs, each QoS class
    ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
     f"{UID.replace('-', '_')}.slice/cri-containerd-{D}.scope\n", f"cri-containerd-{D}.scope",
     CgroupRef(D, "kubernetes", UID)),
    (f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{D}.scope\n",
     f"crio-{D}.scope", CgroupRef(D, "kubernetes", UID)),
    (f"0::/kubepods/besteffort/pod{UID}/{D}\n", None, CgroupRef(D, "kubernetes", UID)),
    (f"0::/kubepods/pod{UID}/{D}\n", None, CgroupRef(D, "kubernetes", UID)),
    # containerd outside Kubernetes, and a bare id under an unknown parent
    (f"0::/system.slice/cri-containerd-{A}.scope\n", f"cri-containerd-{A}.scope",
     CgroupRef(A, "containerd", None)),
    (f"0::/custom/{A}\n", None, CgroupRef(A, None, None)),
    ("0::/\n", None, None),
    ("", None, None),
])
def test_parse_cgroup(text, unit, container):
    assert parse_cgroup(text) == (unit, container)


def test_cgroup2_mount_hybrid_and_pure():
    hybrid = ("31 1 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
              "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    pure = "29 1 0:25 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    assert containers.cgroup2_mount(hybrid) == "/sys/fs/cgroup/unified"
    assert containers.cgroup2_mount(pure) == "/sys/fs/cgroup"
    assert containers.cgroup2_mount("31 1 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n") is None


def test_cgroup_tree_walk_finds_container_directories(tmp_path):
    (tmp_path / "docker" / A).mkdir(parents=True)
    (tmp_path / "libpod_parent" / f"libpod-{C}" / "container").mkdir(parents=True)
    (tmp_path / "system.slice" / "nginx.service").mkdir(parents=True)
    found = containers.cgroup_containers(str(tmp_path))
    by_path = {path: ref for ref, path in found.values()}
    assert by_path[str(tmp_path / "docker" / A)] == CgroupRef(A, "docker", None)
    assert by_path[str(tmp_path / "libpod_parent" / f"libpod-{C}" / "container")].id == C
    assert len(found) == 3
    assert (tmp_path / "docker" / A).stat().st_ino in found


@pytest.mark.parametrize("argv, expected", [
    (["/usr/sbin/docker-proxy", "-proto", "tcp", "-host-ip", "127.0.0.1", "-host-port", "18083",
      "-container-ip", "172.17.0.2", "-container-port", "8080"],
     (Proto.TCP, "127.0.0.1", 18083, "172.17.0.2", 8080)),
    (["docker-proxy", "--proto=udp", "--host-ip=::", "--host-port=53", "--container-ip=fd00::2",
      "--container-port=5353", "-use-listen-fd"],
     (Proto.UDP, "::", 53, "fd00::2", 5353)),
    (["docker-proxy", "-host-ip", "0.0.0.0", "-host-port", "80", "-container-ip", "10.0.0.2",
      "-container-port", "80"], (Proto.TCP, "0.0.0.0", 80, "10.0.0.2", 80)),
])
def test_parse_docker_proxy(argv, expected):
    assert tuple(parse_docker_proxy(argv)) == expected


@pytest.mark.parametrize("argv", [
    ["docker-proxy"],
    ["docker-proxy", "-host-ip", "127.0.0.1", "-host-port", "80", "-container-ip", "10.0.0.2"],
    ["docker-proxy", "-host-ip", "127.0.0.1", "-host-port", "8O", "-container-ip", "10.0.0.2",
     "-container-port", "80"],
    ["docker-proxy", "-proto", "sctp", "-host-ip", "127.0.0.1", "-host-port", "80",
     "-container-ip", "10.0.0.2", "-container-port", "80"],
    ["docker-proxy", "-host-ip", "127.0.0.1", "-host-port", "70000", "-container-ip",
     "10.0.0.2", "-container-port", "80"],
])
def test_parse_docker_proxy_rejects_incomplete_or_malformed(argv):
    assert parse_docker_proxy(argv) is None


def test_parse_conmon():
    argv = ["/usr/bin/conmon", "--api-version", "1", "-c", C, "-u", C, "-r", "/usr/bin/runc",
            "-b", f"/var/lib/containers/storage/overlay-containers/{C}/userdata", "-p",
            "/run/pidfile", "-n", "web", "--exit-dir", "/run/libpod/exits"]
    assert parse_conmon(argv) == (C, "web")
    assert parse_conmon(["conmon", "--cid", C]) == (C, None)
    assert parse_conmon(["conmon", "-c", "not-an-id", "-n", "x"]) is None


# --- BoltDB, built here in bbolt's on-disk format

PAGE = 4096


def _leaf(items: list[tuple[bytes, bytes, int]]) -> bytes:
    """A leaf page body (header + elements + data) for (key, value, flags) items."""
    header = struct.pack("=QHHI", 0, 0x02, len(items), 0)
    elements, data = b"", b""
    for i, (key, value, flags) in enumerate(items):
        pos = (len(items) - i) * 16 + len(data)      # from this element to its key
        elements += struct.pack("=IIII", flags, pos, len(key), len(value))
        data += key + value
    return header + elements + data


def _inline_bucket(items) -> bytes:
    return struct.pack("=QQ", 0, 0) + _leaf(items)


def _meta(pgid: int, root: int, txid: int, pages: int) -> bytes:
    body = struct.pack("=IIII QQ QQQ", 0xED0CDAED, 2, PAGE, 0, root, 0, 2, pages, txid)
    checksum = 0xCBF29CE484222325
    for byte in body:
        checksum = ((checksum ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    page = struct.pack("=QHHI", pgid, 0x04, 0, 0) + body + struct.pack("=Q", checksum)
    return page.ljust(PAGE, b"\0")


def _bolt_file(containers_items) -> bytes:
    """meta 0, meta 1, freelist, a root leaf page holding bucket "ctr" on its own page 4."""
    ctr_page = _leaf(containers_items).ljust(PAGE, b"\0")
    root = _leaf([(b"ctr", struct.pack("=QQ", 4, 0), 0x01),
                  (b"name-registry", _inline_bucket([]), 0x01)]).ljust(PAGE, b"\0")
    freelist = struct.pack("=QHHI", 2, 0x10, 0, 0).ljust(PAGE, b"\0")
    return _meta(0, 3, 4, 5) + _meta(1, 3, 5, 5) + freelist + root + ctr_page


def _podman_items():
    config = {"id": C, "name": "web", "rootfsImageName": "localhost/bb:latest",
              "newPortMappings": [{"host_ip": "127.0.0.1", "container_port": 8080,
                                   "host_port": 18080, "range": 2, "protocol": "tcp,udp"}]}
    state = {"pid": 4242, "networkStatus": {"podman": {"interfaces": {"eth0": {
        "subnets": [{"ipnet": "10.88.0.7/16", "gateway": "10.88.0.1"}]}}}}}
    bucket = _inline_bucket([(b"config", json.dumps(config).encode(), 0),
                             (b"netns", b"/run/netns/netns-x", 0),
                             (b"state", json.dumps(state).encode(), 0)])
    return [(C.encode(), bucket, 0x01)]


def test_bolt_state_of_podman(tmp_path):
    (tmp_path / "libpod").mkdir()
    (tmp_path / "libpod" / "bolt_state.db").write_bytes(_bolt_file(_podman_items()))
    (record,) = containers.podman_containers(str(tmp_path))
    assert record.container == Container(C, "web", "podman", "localhost/bb:latest")
    assert record.addresses == {"10.88.0.7"} and record.pid == 4242
    assert set(record.ports) == {PortBinding(proto, "127.0.0.1", 18080 + i, 8080 + i)
                                 for proto in (Proto.TCP, Proto.UDP) for i in (0, 1)}


def test_bolt_reader_takes_the_valid_meta_page():
    data = bytearray(_bolt_file(_podman_items()))
    data[16 + 40] ^= 0xFF                 # corrupt meta page 0: page 1 must be read
    bolt = BoltFile(bytes(data))
    assert bolt.bucket(bolt.root, b"ctr") is not None
    assert bolt.bucket(bolt.root, b"no-such") is None
    with pytest.raises(ValueError):
        BoltFile(b"\0" * 3 * PAGE)


def test_podman_storage_list_gives_names_without_bolt_state(tmp_path):
    (tmp_path / "overlay-containers").mkdir()
    (tmp_path / "overlay-containers" / "containers.json").write_text(json.dumps([
        {"id": C, "names": ["web"], "metadata": json.dumps({"image-name": "localhost/bb"})}]))
    (record,) = containers.podman_containers(str(tmp_path))
    assert record.container == Container(C, "web", "podman", "localhost/bb")
    assert record.ports == ()
    with pytest.raises(FileNotFoundError):
        containers.podman_containers(str(tmp_path / "missing"))


def test_docker_api_item():
    item = {"Id": A, "Names": ["/web"], "Image": "nginx:1", "Ports": [
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 18080, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"}],
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.3",
                                                    "GlobalIPv6Address": ""}}}}
    record = runtimes._docker_record(item)
    assert record.container == Container(A, "web", "docker", "nginx:1")
    assert record.ports == (PortBinding(Proto.TCP, "127.0.0.1", 18080, 80),)
    assert record.addresses == {"172.17.0.3"}


def test_docker_host_variable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert containers.docker_socket_path() == "/run/user/1000/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert containers.docker_socket_path() is None
    monkeypatch.delenv("DOCKER_HOST")
    assert containers.docker_socket_path() == containers.DOCKER_SOCKET


def test_a_runtime_that_does_not_answer_leaves_ids_and_a_warning(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True)
    thread.start()
    try:
        resolver = ContainerResolver(timeout_s=0.2, docker_socket=path,
                                     podman_roots=[str(tmp_path / "none")])
        container = resolver.container(A)
        assert container == Container(A)
        assert len(resolver.warnings) == 1 and "did not answer" in resolver.warnings[0]
    finally:
        thread.join(5)
        for conn, _ in accepted:
            conn.close()
        server.close()
    refused = ContainerResolver(docker_socket=path, podman_roots=[])
    assert refused.container(A, ref=CgroupRef(A, "docker", None)) == Container(A, None, "docker")
    assert "did not answer" in refused.warnings[0]


def _process(pid: int, name: str, cmdline=(), container=None) -> ProcessInfo:
    return ProcessInfo(pid=pid, name=name, cmdline=tuple(cmdline), container=container)


def _conmon_case(monkeypatch, inner_netns_offset: int) -> tuple:
    """A podman container whose state names this test's own process as its first one (a
    real process: its network namespace is read from /proc, whatever other PIDs exist), an
    inner listener in that namespace (or, with an offset, in another one) and conmon's
    host listener: ``(resolver, record, attributed inner socket, resolved host socket)``."""
    pid = os.getpid()
    netns = os.stat(f"/proc/{pid}/ns/net").st_ino
    record = containers.ContainerRecord(Container(C, "web", "podman", "bb"),
                                        (PortBinding(Proto.TCP, "127.0.0.1", 18080, 8080),),
                                        frozenset({"10.88.0.7"}), pid)
    resolver = ContainerResolver(docker_socket=None, podman_roots=[])
    monkeypatch.setattr(resolver, "records", lambda: {C: record})
    inner = Socket(Proto.TCP, Family.IPV6, Endpoint("::", 8080), None, State.LISTEN, 7, 0,
                   netns + inner_netns_offset, False,
                   owners=(Owner(pid, 3, _process(pid, "httpd", container=C)),))
    host = Socket(Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 18080), None, State.LISTEN, 8,
                  0, 1, owners=(Owner(100, 5, _process(100, "conmon", ["conmon", "-c", C])),))
    assert resolver.attach(host) is None                  # held back
    attributed = resolver.attach(inner)
    (resolved,) = resolver.forwarded()
    return resolver, record, attributed, resolved


def test_conmon_resolved_from_state_with_the_inner_listener(monkeypatch):
    resolver, record, attributed, resolved = _conmon_case(monkeypatch, 0)
    assert attributed.container == record.container
    assert resolved.container == record.container
    assert resolved.published == Published(record.container, "10.88.0.7", 8080, "conmon",
                                           attributed.owners)
    assert columns.published_text(resolved) == f"10.88.0.7:8080 httpd/{os.getpid()}"
    assert columns.container_name(resolved) == "web"
    # the binding is held: no PUBLISHED row; another one without socket gets one
    assert resolver.published_rows(1, {(Proto.TCP, "127.0.0.1", 18080)}) == []
    (row,) = resolver.published_rows(1, set())
    assert row.state is State.PUBLISHED and row.inode == 0 and row.owner_unknown == "dnat"
    assert row.published.forwarder is None and row.published.served_by == attributed.owners
    # a listener on that port in another namespace than the container's serves nothing
    _resolver, record, attributed, resolved = _conmon_case(monkeypatch, 1)
    assert resolved.published == Published(record.container, "10.88.0.7", 8080, "conmon", ())


def test_published_text_when_unknown_or_unserved():
    c = Container(A)
    sock = Socket(Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 1), None, State.LISTEN, 1, 0)
    assert columns.published_text(sock) == "" and columns.container_name(sock) == ""
    unknown = sock._replace(container=c, published=Published(c, None, None, "conmon"))
    assert columns.published_text(unknown) == "port ?"
    assert columns.container_name(unknown) == A[:12]
    unserved = sock._replace(published=Published(c, "fd00::2", 80, "docker-proxy"))
    assert columns.published_text(unserved) == "[fd00::2]:80 (no listener seen)"
