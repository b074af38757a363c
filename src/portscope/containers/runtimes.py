"""What the container runtimes say: the Docker Engine API and Podman's on-disk state (its BoltDB
``libpod/bolt_state.db``, else ``containers.json``): names, images, published ports and
addresses of the running containers."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import NamedTuple

from ..types import Container, Proto

DOCKER_SOCKET = "/var/run/docker.sock"
#: Podman's storage roots (``graphroot``) for root; a rootless user's is under its home.
PODMAN_ROOTS = ("/var/lib/containers/storage",)
ROOTLESS_PODMAN_ROOT = ".local/share/containers/storage"
TIMEOUT_S = 0.5


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
