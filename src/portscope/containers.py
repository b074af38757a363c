"""Containers: which container a process or a socket belongs to, and what a published port
really reaches.

Sources, cheapest first; each one that is missing or fails leaves the id alone, never an error:

* ``/proc/PID/cgroup`` of a socket's owner: Docker (``/docker/ID``, ``docker-ID.scope``),
  Podman (``libpod-ID``, in a pod ``.../POD/libpod-ID``), containerd and CRI-O under Kubernetes
  (``kubepods/.../podUID/ID``, ``cri-containerd-ID.scope``, ``crio-ID.scope``).
* For a socket whose owner cannot be read: the socket's cgroup id (``INET_DIAG_CGROUP_ID`` in
  the sock_diag reply), which is the inode of its directory in the cgroup v2 mount, found
  from ``/proc/self/mountinfo`` (``/sys/fs/cgroup`` on a pure v2 host, ``.../unified`` in
  hybrid mode).
* Names, images and published ports: the Docker Engine API (``GET /containers/json`` over the
  UNIX socket of ``DOCKER_HOST`` or ``/var/run/docker.sock``), Podman's on-disk state (its
  BoltDB ``libpod/bolt_state.db``, else ``overlay-containers/containers.json`` for names and
  images only), and the command lines of the forwarders themselves (``docker-proxy
  -container-ip -container-port``, ``conmon -c ID -n NAME``).

Forwarders: a host port held by ``docker-proxy``, ``conmon``, ``dockerd`` (userland proxy off)
or ``rootlessport`` is resolved to its container, the container-side address and port, and the
processes that listen there inside the container's network namespace. Ports the runtime
publishes with NAT rules only (no host socket) become ``State.PUBLISHED`` rows.

Nothing is cached across snapshots: a ``ContainerResolver`` lives for one snapshot.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from .filters import address_covers
from .types import (LISTENER_STATES, Container, Endpoint, Family, Owner, OwnerUnknown, Proto,
                    Published, Socket, State)

PROC = "/proc"
DOCKER_SOCKET = "/var/run/docker.sock"
#: Podman's storage roots (``graphroot``) for root; a rootless user's is under its home.
PODMAN_ROOTS = ("/var/lib/containers/storage",)
ROOTLESS_PODMAN_ROOT = ".local/share/containers/storage"
TIMEOUT_S = 0.5
#: process names (``comm``) that hold a host port for a container.
FORWARDERS = frozenset({"docker-proxy", "conmon", "dockerd", "rootlessport"})

# ---------------------------------------------------------------------------------------------
# cgroup paths

_ID = r"([0-9a-f]{64})"
_CGROUP_FORMS = (
    # (pattern, runtime); the first that matches a path wins. The last group is the container
    # id, an earlier one the pod. conmon's own systemd scope (libpod-conmon-ID.scope) is not
    # the container: runtime "" marks it.
    (re.compile(r"libpod-conmon-[0-9a-f]{64}"), ""),
    (re.compile(r"/kubepods\b.*?/(?:kubepods-(?:[a-z]+-)?)?pod([0-9a-f_-]{36})(?:\.slice)?/"
                r"(?:cri-containerd-|crio-|docker-)?" + _ID), "kubernetes"),
    (re.compile(r"/docker[-/]" + _ID), "docker"),
    (re.compile(r"/(?:([0-9a-f]{64})/|machine-libpod_pod_([0-9a-f]{64})\.slice/)?libpod-"
                + _ID), "podman"),
    (re.compile(r"/cri-containerd-" + _ID), "containerd"),
    (re.compile(r"/crio-" + _ID), "cri-o"),
    (re.compile(r"/" + _ID + r"(?:\.scope)?$"), None),
)
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".timer")


class CgroupRef(NamedTuple):
    """A container as its cgroup path names it: ``id`` (64 hex digits), ``runtime``
    (``docker``, ``podman``, ``kubernetes``, ``containerd``, ``cri-o``, or None when the path
    does not say) and ``pod`` (Kubernetes pod UID or Podman pod id, else None)."""

    id: str
    runtime: str | None
    pod: str | None


def parse_cgroup_path(path: str) -> CgroupRef | None:
    """The container a cgroup path (``/docker/ID``, ``.../libpod-ID.scope/container``) belongs
    to, or None."""
    for pattern, runtime in _CGROUP_FORMS:
        match = pattern.search(path)
        if match is None:
            continue
        if runtime == "":
            return None
        *pods, container = match.groups()
        pod = next((g for g in pods if g), None)
        if pod and runtime == "kubernetes":
            pod = pod.replace("_", "-")
        return CgroupRef(container, runtime, pod)
    return None


def parse_cgroup(text: str) -> tuple[str | None, CgroupRef | None]:
    """``(systemd unit, container)`` from the text of ``/proc/PID/cgroup`` (every v1 line and
    the v2 ``0::`` line are tried; the first container found wins)."""
    unit = container = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if container is None:
            container = parse_cgroup_path(path)
        if unit is None:
            for part in reversed(path.split("/")):
                if part.endswith(_UNIT_SUFFIXES):
                    unit = part
                    break
    return unit, container


def cgroup2_mount(mountinfo: str | None = None) -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or, in hybrid mode,
    ``/sys/fs/cgroup/unified``), from ``/proc/self/mountinfo``; None when it is not."""
    if mountinfo is None:
        try:
            with open(f"{PROC}/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return None          # not Linux
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        if sep and tail.startswith("cgroup2 "):
            return head.split()[4].replace("\\040", " ")
    return None


def cgroup_containers(root: str) -> dict[int, tuple[CgroupRef, str]]:
    """cgroup id -> (container, directory path), for every container directory under the
    cgroup v2 mount ``root`` (the id of a cgroup is its directory's inode, which ``getdents``
    reports: no ``stat`` per directory). Unreadable directories are skipped."""
    found: dict[int, tuple[CgroupRef, str]] = {}
    stack = [(root, "")]
    while stack:
        path, relative = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue             # removed while walking, or not ours to read
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            child = f"{relative}/{entry.name}"
            ref = parse_cgroup_path(child)
            if ref is not None:
                found[entry.inode()] = (ref, entry.path)
            stack.append((entry.path, child))
    return found


# ---------------------------------------------------------------------------------------------
# Runtime state


class PortBinding(NamedTuple):
    """A port a runtime publishes: host side ``host_address`` (``""`` = every address) and
    ``host_port``, container side ``container_port``, for ``proto``."""

    proto: Proto
    host_address: str
    host_port: int
    container_port: int


class ContainerRecord(NamedTuple):
    """What a runtime says about one running container."""

    container: Container
    ports: tuple[PortBinding, ...]
    addresses: frozenset[str]     # its IP addresses on container networks
    pid: int | None = None        # its first process, when the runtime says


def docker_socket_path() -> str | None:
    """The Docker Engine API socket: ``DOCKER_HOST`` when it is ``unix://PATH``, else
    ``/var/run/docker.sock``; None when ``DOCKER_HOST`` names a TCP endpoint (not used)."""
    host = os.environ.get("DOCKER_HOST")
    if not host:
        return DOCKER_SOCKET
    return host[len("unix://"):] if host.startswith("unix://") else None


def docker_containers(path: str, timeout_s: float = TIMEOUT_S) -> list[ContainerRecord]:
    """Running containers from the Docker Engine API at UNIX socket ``path``.

    Returns:
        one record per container: id, name, image, published ports, IP addresses.
    Raises:
        OSError: no daemon (ENOENT, ECONNREFUSED), permission (EACCES), timeout.
        ValueError: an HTTP error status or a reply that is not the expected JSON.
    Source: ``GET /containers/json`` (one request; answers in about a millisecond).
    """
    import http.client       # 15 ms to import (ssl, email): only when Docker is asked

    class UnixHTTPConnection(http.client.HTTPConnection):
        """HTTP over a UNIX stream socket (the Docker Engine API)."""

        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    conn = UnixHTTPConnection("localhost", timeout=timeout_s)
    try:
        conn.request("GET", "/containers/json")
        reply = conn.getresponse()
        body = reply.read()
    except http.client.HTTPException as exc:
        raise ValueError(f"bad reply: {exc}") from None
    finally:
        conn.close()
    if reply.status != 200:
        raise ValueError(f"HTTP {reply.status}")
    return [_docker_record(item) for item in json.loads(body)]


def _docker_record(item: dict) -> ContainerRecord:
    names = item.get("Names") or []
    name = names[0].lstrip("/") if names else None
    ports = tuple(
        PortBinding(Proto(p.get("Type", "tcp")), p.get("IP") or "", p["PublicPort"],
                    p["PrivatePort"])
        for p in item.get("Ports") or () if p.get("PublicPort") and p.get("Type") in ("tcp", "udp"))
    networks = ((item.get("NetworkSettings") or {}).get("Networks") or {}).values()
    addresses = frozenset(a for n in networks
                          for a in (n.get("IPAddress"), n.get("GlobalIPv6Address")) if a)
    container = Container(id=item["Id"], name=name, runtime="docker", image=item.get("Image"))
    return ContainerRecord(container, ports, addresses)


# Podman's BoltDB state (go.etcd.io/bbolt file format, read only)

_BOLT_MAGIC = 0xED0CDAED
_BOLT_META = struct.Struct("=IIII QQ QQQ Q")   # magic version page_size flags root seq
#                                               freelist pgid txid checksum
_BOLT_PAGE = struct.Struct("=QHHI")             # id flags count overflow
_BOLT_BRANCH = struct.Struct("=IIQ")            # pos ksize pgid
_BOLT_LEAF = struct.Struct("=IIII")             # flags pos ksize vsize
_BOLT_BRANCH_PAGE, _BOLT_LEAF_PAGE, _BOLT_BUCKET_LEAF = 0x01, 0x02, 0x01


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class BoltFile:
    """A read-only view of a BoltDB file (the format of go.etcd.io/bbolt).

    Raises (constructor):
        ValueError: not a BoltDB file, or neither meta page is valid (torn write).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        first = self._meta(0)
        self._page_size = first[2] if first else 4096
        valid = [m for m in (first, self._meta(self._page_size)) if m]
        if not valid:
            raise ValueError("not a valid BoltDB file")
        best = max(valid, key=lambda m: m[8])            # the latest transaction
        self._page_size = best[2]
        self.root = self._page_entries(data, best[4] * self._page_size)

    def _meta(self, offset: int) -> tuple | None:
        """The meta page at ``offset`` when its magic and checksum are right, else None."""
        start = offset + _BOLT_PAGE.size
        if len(self._data) < start + _BOLT_META.size:
            return None
        fields = _BOLT_META.unpack_from(self._data, start)
        if fields[0] != _BOLT_MAGIC or \
                _fnv1a64(self._data[start:start + _BOLT_META.size - 8]) != fields[9]:
            return None
        return fields

    def _page_entries(self, buf: bytes, offset: int) -> dict[bytes, tuple[int, bytes]]:
        """key -> (flags, value) of the B+tree rooted at the page at ``offset`` of ``buf``."""
        out: dict[bytes, tuple[int, bytes]] = {}
        _id, flags, count, _overflow = _BOLT_PAGE.unpack_from(buf, offset)
        base = offset + _BOLT_PAGE.size
        if flags & _BOLT_BRANCH_PAGE:
            for i in range(count):
                _pos, _ksize, child = _BOLT_BRANCH.unpack_from(buf, base + i * 16)
                out.update(self._page_entries(self._data, child * self._page_size))
        elif flags & _BOLT_LEAF_PAGE:
            for i in range(count):
                element = base + i * 16
                eflags, pos, ksize, vsize = _BOLT_LEAF.unpack_from(buf, element)
                key = bytes(buf[element + pos:element + pos + ksize])
                out[key] = (eflags, bytes(buf[element + pos + ksize:element + pos + ksize + vsize]))
        else:
            raise ValueError(f"unexpected BoltDB page flags {flags:#x}")
        return out

    def bucket(self, entries: dict[bytes, tuple[int, bytes]], key: bytes
               ) -> dict[bytes, tuple[int, bytes]] | None:
        """The entries of sub-bucket ``key`` of ``entries`` (inline or on its own pages), or
        None when there is no such bucket."""
        flags, value = entries.get(key, (0, b""))
        if not flags & _BOLT_BUCKET_LEAF:
            return None
        (root,) = struct.unpack_from("=Q", value)
        if root == 0:                               # inline bucket: the page follows
            return self._page_entries(value, 16)
        return self._page_entries(self._data, root * self._page_size)


def podman_containers(root: str) -> list[ContainerRecord]:
    """Containers known to the Podman state under storage root ``root``.

    Returns:
        from ``ROOT/libpod/bolt_state.db``: id, name, image, published ports and IP addresses
        of every container; when that file is missing or unreadable, names and images only
        from ``ROOT/*-containers/containers.json`` (containers/storage's list).
    Raises:
        OSError: neither file is readable (no Podman here, or not root).
        ValueError: unparsable content.
    """
    try:
        with open(os.path.join(root, "libpod", "bolt_state.db"), "rb") as f:
            data = f.read()
    except OSError:
        return _storage_containers(root)
    bolt = BoltFile(data)
    containers = bolt.bucket(bolt.root, b"ctr") or {}
    records = []
    for cid in containers:
        entries = bolt.bucket(containers, cid)
        if entries is None or b"config" not in entries:
            continue
        config = json.loads(entries[b"config"][1])
        state = json.loads(entries[b"state"][1]) if b"state" in entries else {}
        records.append(_podman_record(config, state))
    return records


def _podman_record(config: dict, state: dict) -> ContainerRecord:
    ports = []
    for p in config.get("newPortMappings") or ():
        proto = p.get("protocol", "tcp")
        for offset in range(max(1, p.get("range", 1))):
            for one in proto.split(","):
                if one in ("tcp", "udp"):
                    ports.append(PortBinding(Proto(one), p.get("host_ip") or "",
                                             p["host_port"] + offset,
                                             p["container_port"] + offset))
    addresses = set()
    for network in (state.get("networkStatus") or {}).values():
        for interface in (network.get("interfaces") or {}).values():
            for subnet in interface.get("subnets") or ():
                addresses.add(subnet["ipnet"].split("/", 1)[0])
    container = Container(id=config["id"], name=config.get("name"), runtime="podman",
                          image=config.get("rootfsImageName"), pod=config.get("pod") or None)
    return ContainerRecord(container, tuple(ports), frozenset(addresses), state.get("pid") or None)


def _storage_containers(root: str) -> list[ContainerRecord]:
    records = []
    found = False
    for entry in sorted(os.listdir(root)):
        if not entry.endswith("-containers"):
            continue
        try:
            with open(os.path.join(root, entry, "containers.json"), "rb") as f:
                items = json.load(f)
        except FileNotFoundError:
            continue
        found = True
        for item in items:
            metadata = json.loads(item.get("metadata") or "{}")
            names = item.get("names") or [None]
            records.append(ContainerRecord(
                Container(id=item["id"], name=names[0], runtime="podman",
                          image=metadata.get("image-name")), (), frozenset()))
    if not found:
        raise FileNotFoundError(f"no Podman state under {root}")
    return records


# ---------------------------------------------------------------------------------------------
# Forwarders


class ProxyTarget(NamedTuple):
    """What a ``docker-proxy`` command line forwards: host side and container side."""

    proto: Proto
    host_address: str
    host_port: int
    container_address: str
    container_port: int


def parse_docker_proxy(cmdline: Iterable[str]) -> ProxyTarget | None:
    """The forwarding of a ``docker-proxy -proto tcp -host-ip A -host-port N -container-ip B
    -container-port M`` command line (``-flag value`` or ``-flag=value``, one or two dashes),
    or None when a part is missing or malformed."""
    values = _flags(cmdline)
    try:
        return ProxyTarget(Proto(values.get("proto", "tcp")), values["host-ip"],
                           _port(values["host-port"]), values["container-ip"],
                           _port(values["container-port"]))
    except (KeyError, ValueError):
        return None


def parse_conmon(cmdline: Iterable[str]) -> tuple[str, str | None] | None:
    """``(container id, name)`` from a ``conmon ... -c ID ... -n NAME`` command line (also
    ``--cid``/``--name``), or None without a 64-hex id."""
    values = _flags(cmdline)
    cid = values.get("c") or values.get("cid")
    if not cid or not re.fullmatch(r"[0-9a-f]{64}", cid):
        return None
    return cid, values.get("n") or values.get("name")


def _flags(cmdline: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    args = list(cmdline)
    i = 1
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and len(arg) > 1:
            name = arg.lstrip("-")
            if "=" in name:
                name, value = name.split("=", 1)
                values.setdefault(name, value)
            elif i + 1 < len(args):
                values.setdefault(name, args[i + 1])
                i += 1
        i += 1
    return values


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 65535:
        raise ValueError(text)
    return int(text)


def _local_addresses(pid: int) -> set[str]:
    """The IPv4 addresses local to ``pid``'s network namespace (``/proc/PID/net/fib_trie``:
    an address line followed by ``/32 host LOCAL``)."""
    found = set()
    try:
        with open(f"{PROC}/{pid}/net/fib_trie", encoding="ascii", errors="replace") as f:
            previous = ""
            for line in f:
                text = line.strip()
                if text.startswith("/32 host LOCAL") and previous.startswith(("|--", "+--")):
                    found.add(previous.split()[1])
                previous = text
    except OSError:
        pass                     # gone, or not readable: no addresses known
    return found


def _same_address(a: str, b: str) -> bool:
    return a == b or (a in ("", "0.0.0.0", "::") and b in ("", "0.0.0.0", "::"))


# ---------------------------------------------------------------------------------------------
# The per-snapshot resolver


class ContainerResolver:
    """Container attribution for one snapshot.

    ``get(cgroup_id)`` serves the netlink decoder (sockets without visible owner); ``attach``,
    ``forwarded`` and ``published_rows`` serve the snapshot's join. Runtime state is read at
    most once, and only when a socket needs it. A runtime that fails to answer adds a line to
    ``warnings``; one this caller may not read (EACCES) is left out silently, as are processes
    it may not read.

    Args:
        timeout_s: for each runtime API request.
        docker_socket: the Docker Engine API socket (default: ``docker_socket_path()``).
        podman_roots: Podman storage roots (default: ``PODMAN_ROOTS``).
        listeners_in: ``(pid, pids, proto, port) -> listeners`` with their owners among
            ``pids``, in the network namespace of ``pid``: asked for a container's listeners
            on a published port when the snapshot did not include them (a single-port
            snapshot of the host port, or one namespace only). None: not asked.
    """

    def __init__(self, *, timeout_s: float = TIMEOUT_S, docker_socket: str | None = "",
                 podman_roots: Iterable[str] | None = None,
                 listeners_in: Callable[[int, list[int], Proto, int], list[Socket]] | None = None
                 ) -> None:
        self._timeout_s = timeout_s
        self._listeners_in = listeners_in
        self._docker_socket = docker_socket_path() if docker_socket == "" else docker_socket
        self._podman_roots = list(PODMAN_ROOTS if podman_roots is None else podman_roots)
        self._records: dict[str, ContainerRecord] | None = None
        self._cgroups: dict[int, tuple[CgroupRef, str]] | None = None
        self._by_cgroup: dict[int, Container | None] = {}
        self._containers: dict[str, Container] = {}
        self._inner: list[Socket] = []          # listeners of containers, for served_by
        self._held: list[Socket] = []           # forwarders' listeners, resolved at the end
        self.warnings: list[str] = []

    # -- runtime records
    def records(self) -> dict[str, ContainerRecord]:
        """Every container the runtimes report, by id (read on first use)."""
        if self._records is None:
            self._records = {}
            if self._docker_socket and os.path.exists(self._docker_socket):
                try:
                    for record in docker_containers(self._docker_socket, self._timeout_s):
                        self._records[record.container.id] = record
                except PermissionError:
                    pass            # not this user's engine: ids only, as for its processes
                except (OSError, ValueError) as exc:
                    self.warnings.append(f"the Docker API at {self._docker_socket} did not "
                                         f"answer ({exc}): containers are shown by id")
            for root in self._podman_roots:
                self._read_podman(root)
        return self._records

    def _read_podman(self, root: str) -> None:
        try:
            for record in podman_containers(root):
                self._records.setdefault(record.container.id, record)
        except (FileNotFoundError, PermissionError):
            pass                        # no Podman state there, or not this user's
        except (OSError, ValueError, KeyError, struct.error) as exc:
            self.warnings.append(f"the Podman state under {root} could not be read "
                                 f"({exc}): containers are shown by id")

    def _add_podman_root(self, root: str) -> None:
        if root in self._podman_roots:
            return
        self._podman_roots.append(root)
        if self._records is not None:
            self._read_podman(root)

    def container(self, cid: str, pid: int | None = None, ref: CgroupRef | None = None
                  ) -> Container:
        """The ``Container`` of id ``cid``: from the runtimes when they know it, else from its
        cgroup path (``ref``, or ``/proc/PID/cgroup`` of a member ``pid``), id only at worst."""
        known = self._containers.get(cid)
        if known is not None:
            return known
        record = self.records().get(cid)
        if record is not None:
            result = record.container
        else:
            if ref is None and pid is not None:
                ref = parse_cgroup(_read(f"{PROC}/{pid}/cgroup"))[1]
            if ref is not None and ref.id == cid:
                result = Container(id=cid, runtime=ref.runtime, pod=ref.pod)
            else:
                result = Container(id=cid)
        self._containers[cid] = result
        return result

    # -- sockets without owner: by cgroup id
    def get(self, cgroup_id: int, default: Container | None = None) -> Container | None:
        """The container whose cgroup has id ``cgroup_id`` (``INET_DIAG_CGROUP_ID``), else
        ``default``. The cgroup v2 tree is walked once, on the first call."""
        if cgroup_id in self._by_cgroup:
            return self._by_cgroup[cgroup_id] or default
        ref, _path = self._cgroup_tree().get(cgroup_id, (None, None))
        found = self._by_cgroup[cgroup_id] = \
            None if ref is None else self.container(ref.id, ref=ref)
        return found or default

    def _cgroup_tree(self) -> dict[int, tuple[CgroupRef, str]]:
        if self._cgroups is None:
            root = cgroup2_mount()
            self._cgroups = cgroup_containers(root) if root else {}
        return self._cgroups

    def member_pids(self, cid: str) -> list[int]:
        """The processes of container ``cid``: ``cgroup.procs`` of its cgroup v2 directories,
        else the first process the runtime reports; empty when neither is known."""
        pids: list[int] = []
        for ref, path in self._cgroup_tree().values():
            if ref.id == cid:
                pids.extend(_pids_of(path))
        record = self.records().get(cid)
        if not pids and record is not None and record.pid:
            pids.append(record.pid)
        return pids

    # -- the join
    def attach(self, sock: Socket) -> Socket | None:
        """``sock`` (whose first owner is in a container or is a forwarder) with its
        ``container`` set; None for a forwarder's listener, which is held back until every
        socket was seen (``forwarded()``)."""
        process = sock.owners[0].process
        if process.name in FORWARDERS and sock.state in LISTENER_STATES \
                and process.container is None:
            self._held.append(sock)
            return None
        if process.container is None:
            return sock
        sock = sock._replace(container=self.container(process.container, process.pid))
        if sock.state in LISTENER_STATES:
            self._inner.append(sock)
        return sock

    def remember(self, sock: Socket) -> None:
        """Note a listener already attributed (by its cgroup id) as a possible inner server."""
        if sock.state in LISTENER_STATES:
            self._inner.append(sock)

    def forwarded(self) -> Iterator[Socket]:
        """The held-back forwarders' listeners, each with ``container`` and ``published`` when
        its container could be told (unchanged otherwise)."""
        held, self._held = self._held, []
        for sock in held:
            yield self._resolve(sock)

    def _resolve(self, sock: Socket) -> Socket:
        owner = sock.owners[0]
        name = owner.process.name
        cmdline = owner.process.cmdline or ()
        found: tuple[Container, str | None, int | None] | None = None
        if name == "docker-proxy":
            target = parse_docker_proxy(cmdline)
            if target is not None:
                found = self._by_proxy(target)
        elif name == "conmon":
            parsed = parse_conmon(cmdline)
            if parsed is not None:
                found = self._by_binding(sock, only=parsed[0])
                if found is None:
                    container = self.container(parsed[0])
                    if container.name is None and parsed[1]:
                        container = Container(id=container.id, name=parsed[1],
                                              runtime="podman", pod=container.pod)
                    found = (container, None, None)
        elif name in ("dockerd", "rootlessport"):
            if name == "rootlessport" and owner.process.uid:
                try:
                    home = pwd.getpwuid(owner.process.uid).pw_dir
                    self._add_podman_root(os.path.join(home, ROOTLESS_PODMAN_ROOT))
                except KeyError:
                    pass            # a uid without a home: its state cannot be found
            found = self._by_binding(sock)
        if found is None:
            return sock
        container, address, port = found
        served = self._served_by(container.id, sock.proto, address, port)
        published = Published(container, address, port, name, served)
        return sock._replace(container=container, published=published)

    def _by_binding(self, sock: Socket, only: str | None = None
                    ) -> tuple[Container, str | None, int | None] | None:
        """The container whose runtime-reported port binding is this host socket."""
        for record in self.records().values():
            if only is not None and record.container.id != only:
                continue
            for binding in record.ports:
                if binding.proto == sock.proto and binding.host_port == sock.local.port \
                        and _same_address(binding.host_address, sock.local.address):
                    address = min(record.addresses) if record.addresses else None
                    return record.container, address, binding.container_port
        return None

    def _by_proxy(self, target: ProxyTarget) -> tuple[Container, str | None, int | None] | None:
        """The container a docker-proxy forwards to: the one with its target IP address, by
        the runtime's records, else by the addresses local to each container's namespace."""
        for record in self.records().values():
            if target.container_address in record.addresses:
                return record.container, target.container_address, target.container_port
        seen: set[str] = set()
        for ref, _path in self._cgroup_tree().values():
            if ref.id in seen:
                continue
            seen.add(ref.id)
            pids = self.member_pids(ref.id)
            if pids and target.container_address in _local_addresses(pids[0]):
                return (self.container(ref.id, ref=ref), target.container_address,
                        target.container_port)
        return None

    def _served_by(self, cid: str, proto: Proto, address: str | None, port: int | None
                   ) -> tuple[Owner, ...]:
        """Owners of the listeners on ``port`` in the container's network namespace (shared by
        a whole pod) that receive for ``address``: from the snapshot's sockets, else asked
        for in that namespace, among the processes of every container."""
        if port is None:
            return ()
        pids = self.member_pids(cid)
        netns = _netns_inode(pids[0]) if pids else None
        inner = [s for s in self._inner if s.proto == proto and s.local.port == port
                 and (s.netns == netns if netns is not None else s.container.id == cid)]
        if not inner and pids and self._listeners_in is not None:
            everyone = [p for ref, path in self._cgroup_tree().values()
                        for p in _pids_of(path)]
            inner = self._listeners_in(pids[0], sorted(set(everyone) | set(pids)), proto, port)
        owners: dict[int, Owner] = {}
        for s in inner:
            if address is None or address_covers(s, address):
                for owner in s.owners:
                    owners.setdefault(owner.pid, owner)
        return tuple(owners.values())

    def published_rows(self, host_netns: int | None,
                       present: set[tuple[Proto, str, int | None]]) -> list[Socket]:
        """``State.PUBLISHED`` rows: ports the runtimes publish with no host socket (NAT rules
        only). Call after ``forwarded()`` was consumed.

        Args:
            host_netns: the host's namespace inode, recorded in each row.
            present: ``(proto, address, port)`` of every listener of the host namespace.
        """
        rows = []
        for record in self.records().values():
            for binding in record.ports:
                address = binding.host_address
                if any((binding.proto, a, binding.host_port) in present
                       for a in ((address,) if address else ("0.0.0.0", "::"))):
                    continue
                local = address or "0.0.0.0"
                family = Family.IPV6 if ":" in local else Family.IPV4
                container_address = min(record.addresses) if record.addresses else None
                served = self._served_by(record.container.id, binding.proto,
                                         container_address, binding.container_port)
                rows.append(Socket(
                    binding.proto, family, Endpoint(local, binding.host_port), None,
                    State.PUBLISHED, 0, -1, host_netns, owner_unknown=OwnerUnknown.DNAT,
                    container=record.container,
                    published=Published(record.container, container_address,
                                        binding.container_port, None, served)))
        return rows


def _pids_of(cgroup_dir: str) -> list[int]:
    """The processes of a cgroup (``cgroup.procs``); empty when it is gone."""
    return [int(p) for p in _read(os.path.join(cgroup_dir, "cgroup.procs")).split()]


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"{PROC}/{pid}/ns/net").st_ino
    except OSError:
        return None              # gone, or not ours to see


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""                # gone or unreadable: nothing to parse
