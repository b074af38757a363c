"""Containers on real engines: a Docker engine (dockerd started here) and rootful Podman.

The engines, the busybox image (built offline from busybox-static and imported) and every
container are created by the ``engines`` fixture and removed at the end of the session, even
when a test fails. Podman runs with a private containers.conf (runc, netavark, low ulimits:
see shared/research/CONTAINERS.md); dockerd gets its own data root, exec root and API socket,
which the tests hand to portscope through ``DOCKER_HOST``.

Needs root and the packages of .ci/run (podman netavark runc busybox-static docker.io);
elsewhere the module skips with the reason.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

import portscope
from portscope import SocketFilter, State

TOOLS = ("podman", "dockerd", "runc", "conmon", "netavark", "busybox")
DOCKER = "/usr/bin/docker"           # the CLI that matches Debian's dockerd (not a newer one)
NETAVARK_PATHS = ("/usr/lib/podman/netavark", "/usr/libexec/podman/netavark")
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None and not (
        t == "netavark" and any(os.path.exists(p) for p in NETAVARK_PATHS))
               and not (t == "busybox" and os.path.exists("/bin/busybox"))]
    if missing or not os.path.exists(DOCKER):
        return f"needs {', '.join(missing or [DOCKER])} (installed by .ci/run)"
    return None


def free_port() -> int:
    """A port that binds now, outside the ephemeral range (other tests' clients use that)."""
    while True:
        port = random.randrange(18000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_for(predicate, timeout_s: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def serving(port: int) -> bool:
    reply = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while chunk := s.recv(4096):     # a proxy may pass headers and body apart
                reply += chunk
    except OSError:
        pass                                 # refused, reset or timed out: judged below
    return b"hello" in reply


class Engines:
    """dockerd and podman for this session, with every container they ran."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.tag = f"pst{uuid.uuid4().hex[:6]}"
        self.image = f"localhost/{self.tag}-bb:latest"
        self.docker_sock = os.path.join(work, "docker.sock")
        self.env = {**os.environ, "CONTAINERS_CONF": os.path.join(work, "containers.conf"),
                    "DOCKER_HOST": f"unix://{self.docker_sock}"}
        self.dockerd: subprocess.Popen | None = None
        self.podman_names: list[str] = []
        self.docker_names: list[str] = []
        # a bridge of our own (not docker0, which another engine on this host may use)
        self.bridge = self.tag
        self.bridge_address = f"172.30.{random.randrange(256)}.1/24"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120)
        if check and result.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        return result

    # -- image
    def build_image(self) -> str:
        rootfs = os.path.join(self.work, "rootfs")
        for d in ("bin", "www", "etc", "tmp"):
            os.makedirs(os.path.join(rootfs, d))
        busybox = shutil.which("busybox") or "/bin/busybox"
        shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in ("sh", "httpd", "sleep", "cat"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/:/bin/sh\n")
        with open(os.path.join(rootfs, "www", "index.html"), "w") as f:
            f.write("hello\n")
        tar = os.path.join(self.work, "bb.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tar, "."], check=True)
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write(CONTAINERS_CONF)
        return tar

    # -- dockerd
    def start_dockerd(self, *extra: str) -> None:
        if not os.path.exists(f"/sys/class/net/{self.bridge}"):
            for argv in (("ip", "link", "add", self.bridge, "type", "bridge"),
                         ("ip", "addr", "add", self.bridge_address, "dev", self.bridge),
                         ("ip", "link", "set", self.bridge, "up")):
                subprocess.run(argv, check=True, capture_output=True)
        log = open(os.path.join(self.work, "dockerd.log"), "ab")
        self.dockerd = subprocess.Popen(
            ["dockerd", "--data-root", os.path.join(self.work, "docker-data"),
             "--exec-root", os.path.join(self.work, "docker-exec"),
             "--pidfile", os.path.join(self.work, "docker.pid"),
             "-H", f"unix://{self.docker_sock}", "--bridge", self.bridge, *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for(lambda: self.dockerd.poll() is not None or
                 self.run(DOCKER, "version", check=False).returncode == 0, 30, "dockerd ready")
        if self.dockerd.poll() is not None:
            raise RuntimeError(f"dockerd exited with {self.dockerd.returncode}")

    def stop_dockerd(self) -> None:
        if self.dockerd is None:
            return
        if self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.dockerd.pid, signal.SIGKILL)
                self.dockerd.wait(10)
        self.dockerd = None

    # -- containers
    def podman_run(self, suffix: str, *args: str) -> dict:
        name = f"{self.tag}-{suffix}"
        self.podman_names.append(name)
        self.run("podman", "run", "-d", "--name", name, *args)
        return self.inspect("podman", name)

    def docker_run(self, suffix: str, *args: str) -> dict:
        name = f"{self.tag}-{suffix}"
        self.docker_names.append(name)
        self.run(DOCKER, "run", "-d", "--name", name, *args)
        return self.inspect(DOCKER, name)

    def inspect(self, tool: str, name: str) -> dict:
        (doc,) = json.loads(self.run(tool, "inspect", name).stdout)
        return {"id": doc["Id"], "name": name, "pid": doc["State"]["Pid"]}

    def close(self) -> None:
        if self.podman_names:
            self.run("podman", "rm", "-f", "-t", "0", *self.podman_names, check=False)
        self.run("podman", "rmi", "-f", self.image, check=False)
        if self.dockerd is not None and self.dockerd.poll() is None and self.docker_names:
            self.run(DOCKER, "rm", "-f", *self.docker_names, check=False)
        self.stop_dockerd()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        for mount_point in self._mounts_below_work():     # Docker's host netns bind mount
            subprocess.run(["umount", mount_point], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def _mounts_below_work(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return sorted((p for p in points if p.startswith(self.work + "/")), reverse=True)


def _httpd(port: int | str) -> tuple[str, ...]:
    return ("httpd", "-f", "-p", str(port), "-h", "/www")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    eng = Engines(str(tmp_path_factory.mktemp("engines")))
    try:
        tar = eng.build_image()
        eng.run("podman", "import", tar, eng.image)
        eng.start_dockerd()
        eng.run(DOCKER, "import", tar, eng.image)
        eng.ports = {k: free_port() for k in ("pweb", "phost", "dweb", "dhost", "dnat")}
        eng.pweb = eng.podman_run("pweb", "-p", f"127.0.0.1:{eng.ports['pweb']}:8080",
                                  eng.image, *_httpd(8080))
        eng.phost = eng.podman_run("phost", "--network", "host", eng.image,
                                   *_httpd(f"127.0.0.1:{eng.ports['phost']}"))
        eng.dweb = eng.docker_run("dweb", "-p", f"127.0.0.1:{eng.ports['dweb']}:8080",
                                  eng.image, *_httpd(8080))
        eng.dhost = eng.docker_run("dhost", "--network", "host", eng.image,
                                   *_httpd(f"127.0.0.1:{eng.ports['dhost']}"))
        for key in ("pweb", "phost", "dweb", "dhost"):
            wait_for(lambda: serving(eng.ports[key]), 20, f"{key} serving")
        yield eng
    finally:
        eng.close()


@pytest.fixture
def docker_api(engines, monkeypatch):
    """Point portscope (in this process) at the test's dockerd."""
    monkeypatch.setenv("DOCKER_HOST", engines.env["DOCKER_HOST"])
    return engines


def _listeners_on(port: int, snap) -> list:
    host = snap.namespaces[0].inode
    return [s for s in snap.sockets if s.local.port == port and s.netns == host]


def _check_published(sock, forwarder: str, container: dict, runtime: str, image: str,
                     port: int = 8080):
    assert [o.process.name for o in sock.owners] == [forwarder]
    assert sock.container.id == container["id"]
    assert sock.container.name == container["name"]
    assert sock.container.runtime == runtime and sock.container.image == image
    published = sock.published
    assert published.forwarder == forwarder and published.port == port
    assert published.container == sock.container and published.address
    assert [o.pid for o in published.served_by] == [container["pid"]]
    assert published.served_by[0].process.container == container["id"]


def test_podman_published_port_through_conmon(docker_api):
    eng = docker_api
    snap = portscope.take_snapshot(SocketFilter.listeners(), netns="all", published=True)
    (sock,) = _listeners_on(eng.ports["pweb"], snap)
    _check_published(sock, "conmon", eng.pweb, "podman", eng.image)
    # the container's own listener, in its namespace, is attributed and kept apart
    inner = [s for s in snap.sockets if s.owners and s.owners[0].pid == eng.pweb["pid"]]
    assert inner and all(s.netns != snap.namespaces[0].inode for s in inner)
    assert all(s.container.name == eng.pweb["name"] and s.published is None for s in inner)


def test_docker_published_port_through_docker_proxy(docker_api):
    eng = docker_api
    snap = portscope.take_snapshot(SocketFilter.listeners(), netns="all", published=True)
    (sock,) = _listeners_on(eng.ports["dweb"], snap)
    _check_published(sock, "docker-proxy", eng.dweb, "docker", eng.image)
    assert sock.published.address.startswith(eng.bridge_address.rsplit(".", 1)[0] + ".")


@pytest.mark.parametrize("key, runtime", [("phost", "podman"), ("dhost", "docker")])
def test_host_network_container_owns_a_host_socket(docker_api, key, runtime):
    eng = docker_api
    container = getattr(eng, key)
    snap = portscope.take_snapshot(SocketFilter(port_range=(eng.ports[key],) * 2),
                                   netns="host")
    (sock,) = [s for s in snap.sockets if s.state is State.LISTEN]
    assert [o.pid for o in sock.owners] == [container["pid"]]
    assert sock.container.id == container["id"] and sock.container.runtime == runtime
    assert sock.container.name == container["name"] and sock.published is None


def test_single_port_query_finds_the_inner_server_and_names_the_container(engines):
    eng = engines
    for key, forwarder in (("dweb", "docker-proxy"), ("pweb", "conmon")):
        container = getattr(eng, key)
        result = subprocess.run([sys.executable, "-m", "portscope", str(eng.ports[key]),
                                 "--json"], capture_output=True, text=True, env=eng.env,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        (sock,) = [s for s in json.loads(result.stdout)["sockets"]
                   if s["state"] == "LISTEN"]
        assert sock["container"]["name"] == container["name"]
        assert sock["published"]["forwarder"] == forwarder
        assert sock["published"]["port"] == 8080
        assert [o["pid"] for o in sock["published"]["served_by"]] == [container["pid"]]
        text = subprocess.run([sys.executable, "-m", "portscope", str(eng.ports[key])],
                              capture_output=True, text=True, env=eng.env, timeout=60)
        assert container["name"] in text.stdout and f"httpd/{container['pid']}" in text.stdout
    listing = subprocess.run([sys.executable, "-m", "portscope"], capture_output=True,
                             text=True, env=eng.env, timeout=60)
    assert "Container" in listing.stdout and eng.dhost["name"] in listing.stdout


@pytest.mark.parametrize("key, forwarder, runtime",
                         [("pweb", "conmon", "podman"), ("dweb", "docker-proxy", "docker")])
def test_kill_on_a_published_port_proposes_stopping_the_container(engines, key, forwarder,
                                                                 runtime):
    eng = engines
    container = getattr(eng, key)
    result = subprocess.run([sys.executable, "-m", "portscope", "kill", str(eng.ports[key]),
                             "--yes"], capture_output=True, text=True, env=eng.env, timeout=60)
    assert result.returncode == 5, (result.stdout, result.stderr)
    assert f"{runtime} stop {container['name']}" in result.stdout + result.stderr
    # nothing was signalled: the forwarder and the container still serve
    assert serving(eng.ports[key])
    forwarders = [o for s in portscope.take_snapshot(
        SocketFilter.listeners(port_range=(eng.ports[key],) * 2)).sockets for o in s.owners]
    assert [o.process.name for o in forwarders] == [forwarder]


def test_runtime_api_down_shows_ids_and_does_not_fail(engines, tmp_path):
    eng = engines
    dead = tmp_path / "dead.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(dead))            # exists, but nobody ever accepts: the request times out
    server.listen()
    try:
        env = {**eng.env, "DOCKER_HOST": f"unix://{dead}"}
        result = subprocess.run([sys.executable, "-m", "portscope", str(eng.ports["dweb"]),
                                 "--json"], capture_output=True, text=True, env=env,
                                timeout=60)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert "did not answer" in result.stderr
    (sock,) = [s for s in json.loads(result.stdout)["sockets"] if s["state"] == "LISTEN"]
    assert sock["container"]["id"] == eng.dweb["id"] and sock["container"]["name"] is None
    # the kernel still tells where docker-proxy forwards and who serves it
    assert [o["pid"] for o in sock["published"]["served_by"]] == [eng.dweb["pid"]]


def test_port_published_by_nat_only_is_listed(docker_api):
    eng = docker_api
    container = eng.docker_run("dnat", "-p", f"127.0.0.1:{eng.ports['dnat']}:8080", eng.image,
                               *_httpd(8080))
    wait_for(lambda: serving(eng.ports["dnat"]), 20, "dnat serving")
    snap = portscope.take_snapshot(SocketFilter(port_range=(eng.ports["dnat"],) * 2),
                                   netns="host")
    (proxy,) = [s for s in snap.sockets if s.state is State.LISTEN]
    proxy_pid = proxy.owners[0].pid
    assert proxy.owners[0].process.name == "docker-proxy"
    os.kill(proxy_pid, signal.SIGKILL)     # a proxy of our own dockerd: now NAT rules only
    wait_for(lambda: not os.path.exists(f"/proc/{proxy_pid}/stat")
             or open(f"/proc/{proxy_pid}/stat").read().split(") ")[1][0] == "Z", 10, "exit")
    # the kernel may finish closing the proxy's listener a moment after the process exits
    wait_for(lambda: not portscope.take_snapshot(
        SocketFilter.listeners(port_range=(eng.ports["dnat"],) * 2), owners=False).sockets,
        10, "the proxy's listener closed")
    snap = portscope.take_snapshot(SocketFilter.listeners(port_range=(eng.ports["dnat"],) * 2),
                                   netns="all", published=True)
    rows = [s for s in snap.sockets if s.local.port == eng.ports["dnat"]]
    assert len(rows) == 1, (rows, subprocess.run(["ss", "-tlnpe"], capture_output=True,
                                                 text=True).stdout)
    (row,) = rows
    assert row.state is State.PUBLISHED and row.inode == 0 and row.owner_unknown == "dnat"
    assert row.container.name == container["name"] and row.published.forwarder is None
    assert [o.pid for o in row.published.served_by] == [container["pid"]]
    # without published=True (library default) there is no such row
    plain = portscope.take_snapshot(SocketFilter.listeners(port_range=(eng.ports["dnat"],) * 2))
    assert plain.sockets == ()


def test_docker_without_userland_proxy_dockerd_holds_the_port(engines, monkeypatch):
    eng = engines
    monkeypatch.setenv("DOCKER_HOST", eng.env["DOCKER_HOST"])
    eng.run(DOCKER, "rm", "-f", *eng.docker_names, check=False)
    eng.docker_names.clear()
    eng.stop_dockerd()
    eng.start_dockerd("--userland-proxy=false")
    port = free_port()
    container = eng.docker_run("noproxy", "-p", f"127.0.0.1:{port}:8080", eng.image,
                               *_httpd(8080))
    snap = wait_for(lambda: [s for s in portscope.take_snapshot(
        SocketFilter.listeners(), netns="all", published=True).sockets
        if s.local.port == port and s.published and s.published.served_by], 20, "attributed")
    (sock,) = snap
    _check_published(sock, "dockerd", container, "docker", eng.image)
