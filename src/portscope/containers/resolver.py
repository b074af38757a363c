"""``ContainerResolver``: container attribution for one snapshot, forwarders resolved to the
container and the listeners they reach, and ``State.PUBLISHED`` rows."""

from __future__ import annotations

import os
import pwd
import struct
from collections.abc import Callable, Iterable, Iterator

from ..filters import address_covers
from ..types import (LISTENER_STATES, Container, Endpoint, Family, Owner, OwnerUnknown, Proto,
                     Published, Socket, State)
from .cgroups import (PROC, CgroupRef, cgroup2_mount, cgroup_containers, parse_cgroup, pids_of,
                      read_text)
from .forwarders import FORWARDERS, ProxyTarget, parse_conmon, parse_docker_proxy
from .runtimes import (PODMAN_ROOTS, ROOTLESS_PODMAN_ROOT, TIMEOUT_S, ContainerRecord,
                       docker_containers, docker_socket_path, podman_containers)


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
                ref = parse_cgroup(read_text(f"{PROC}/{pid}/cgroup"))[1]
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
                pids.extend(pids_of(path))
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
                        for p in pids_of(path)]
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


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"{PROC}/{pid}/ns/net").st_ino
    except OSError:
        return None              # gone, or not ours to see

