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

Parts: ``cgroups`` (cgroup paths and the cgroup v2 tree), ``runtimes`` (the Docker Engine API,
Podman's state), ``forwarders`` (docker-proxy, conmon... command lines), ``resolver`` (the
per-snapshot ``ContainerResolver``).
"""

from .cgroups import (CgroupRef, cgroup2_mount, cgroup_containers, parse_cgroup,
                      parse_cgroup_path)
from .forwarders import FORWARDERS, ProxyTarget, parse_conmon, parse_docker_proxy
from .resolver import ContainerResolver
from .runtimes import (DOCKER_SOCKET, PODMAN_ROOTS, BoltFile, ContainerRecord, PortBinding,
                       docker_containers, docker_socket_path, podman_containers)

__all__ = ["FORWARDERS", "DOCKER_SOCKET", "PODMAN_ROOTS", "BoltFile", "CgroupRef",
           "ContainerRecord", "ContainerResolver", "PortBinding", "ProxyTarget", "cgroup2_mount",
           "cgroup_containers", "docker_containers", "docker_socket_path", "parse_cgroup",
           "parse_cgroup_path", "parse_conmon", "parse_docker_proxy", "podman_containers"]
