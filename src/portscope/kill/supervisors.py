"""What would start a port's holder again after it is killed: systemd units (``Restart=``,
socket activation), containers and their runtimes' forwarders, supervisord, pm2."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..containers import FORWARDERS
from ..owners.process import process_info
from ..types import Container, ProcessInfo

#: systemd's system unit search path (systemd.unit(5)), highest priority first
SYSTEM_UNIT_PATH = (
    "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
    "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached",
    "/run/systemd/system", "/run/systemd/system.attached", "/run/systemd/generator",
    "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system",
    "/run/systemd/generator.late")


@dataclass(frozen=True, slots=True)
class Respawner:
    """What would start a holder again after it dies.

    Attributes:
        kind: ``"systemd"``, ``"container"``, a container runtime's forwarder (``"docker-proxy"``,
            ``"conmon"``, ``"dockerd"``, ``"rootlessport"``), ``"supervisord"``, ``"pm2"``.
        name: the unit, container id, or program name, when known.
        command: the command that stops it for good.
        detail: one sentence, for people.
    """

    kind: str
    name: str | None
    command: str
    detail: str


def _read_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    env = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def _unit_settings(unit: str, search_path: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    """``(section, key, value)`` of every setting of a systemd unit: its unit file (or
    template) in ``search_path``, then the drop-ins ``UNIT.d/*.conf``, in the order systemd
    applies them (a later one wins)."""
    names = [unit]
    prefix, at, rest = unit.partition("@")
    if at:
        names.insert(0, f"{prefix}@{rest[rest.rfind('.'):]}")          # foo@.service
    files: list[Path] = []
    for name in names:
        found = next((Path(d) / name for d in search_path if (Path(d) / name).is_file()), None)
        if found is not None:
            files.append(found)
        dropins: dict[str, Path] = {}
        for d in reversed(search_path):        # a higher-priority directory wins a name
            folder = Path(d) / f"{name}.d"
            if folder.is_dir():
                dropins.update((p.name, p) for p in folder.glob("*.conf"))
        files.extend(dropins[n] for n in sorted(dropins))
    for path in files:
        section = ""
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif "=" in line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                yield section, key.strip(), value.strip()


def unit_restart(unit: str, search_path: Sequence[str] = SYSTEM_UNIT_PATH) -> str:
    """The ``Restart=`` setting of a systemd unit: its unit file (or template) in
    ``search_path`` and the drop-ins ``UNIT.d/*.conf``, later settings winning.

    Returns:
        the value (``"no"`` when unset or no file is found).
    """
    value = "no"
    for section, key, setting in _unit_settings(unit, search_path):
        if section == "[Service]" and key == "Restart":
            value = setting or "no"
    return value


_LISTEN_KEYS = frozenset({"ListenStream", "ListenDatagram", "ListenSequentialPacket"})


def activating_socket(unit: str, target: int | str,
                      search_path: Sequence[str] = SYSTEM_UNIT_PATH) -> str | None:
    """The systemd ``.socket`` unit that starts service ``unit`` on the next connection, or
    None: the one of the same name; for a UNIX socket ``target`` (a path or ``@name``), also
    any ``.socket`` unit listening there (``ListenStream=``, ``ListenDatagram=``,
    ``ListenSequentialPacket=``) whose ``Service=`` is ``unit``.

    Args:
        unit: a ``.service`` unit name.
        target: the port or the UNIX socket being freed.
    Source: the unit files and drop-ins in ``search_path``.
    """
    same = unit[:-len(".service")] + ".socket"
    if any((Path(d) / same).is_file() for d in search_path):
        return same
    if isinstance(target, int):
        return None
    seen: set[str] = set()
    for d in search_path:
        for path in sorted(Path(d).glob("*.socket")) if Path(d).is_dir() else ():
            if path.name in seen:
                continue
            seen.add(path.name)
            listens, service = set(), path.name[:-len(".socket")] + ".service"
            for section, key, value in _unit_settings(path.name, search_path):
                if section == "[Socket]" and key in _LISTEN_KEYS:
                    listens = set() if not value else listens | {value}   # empty resets
                elif section == "[Socket]" and key == "Service":
                    service = value
            if service == unit and any(_same_socket(listen, target) for listen in listens):
                return path.name
    return None


def _same_socket(listen: str, target: str) -> bool:
    """True when a ``Listen*=`` value names the UNIX socket ``target``: the same abstract
    name, or the same socket file (device and inode; the path text when one is missing)."""
    if listen.startswith("@") or target.startswith("@"):
        return listen == target
    try:
        one, other = os.stat(listen), os.stat(target)
    except OSError:
        return os.path.abspath(listen) == os.path.abspath(target)
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _own_container() -> str | None:
    own = process_info(os.getpid())
    return own.container if own else None


def _stop_container(container: Container) -> str:
    """The command that stops ``container`` with its runtime (docker when unknown)."""
    name = container.name or container.id[:12]
    runtime = container.runtime if container.runtime in ("docker", "podman") else "docker"
    return f"{runtime} stop {name}"


def find_respawner(process: ProcessInfo, target: int | str,
                   unit_path: Sequence[str] = SYSTEM_UNIT_PATH,
                   container: Container | None = None) -> Respawner | None:
    """What would restart ``process`` after it dies, or None.

    Args:
        process: a holder of ``target``.
        target: what is being freed: a port, or a UNIX socket (a path or ``@name``).
        unit_path: where systemd units are looked up.
        container: the container of the holder's sockets (``Socket.container``), when known.

    Sources: the systemd unit from ``/proc/PID/cgroup`` and its ``Restart=`` (see
    ``unit_restart``; a ``.socket`` unit that activates it restarts it on the next connection:
    ``activating_socket``); the container id from the cgroup, named by ``container`` when
    known; for a port, a forwarder that holds it for ``container`` (docker-proxy, conmon,
    dockerd, rootlessport), or ``docker-proxy`` by name (forwarders publish ports, never a
    UNIX socket); supervisord and pm2 by the variables they set for their children
    (``SUPERVISOR_PROCESS_NAME``, ``pm_id``) in ``/proc/PID/environ`` (readable by root and the
    same user).
    """
    unit = process.unit
    if unit and unit.endswith(".service"):
        restart = unit_restart(unit, unit_path)
        socket_unit = activating_socket(unit, target, unit_path)
        if restart != "no" or socket_unit:
            stop = f"systemctl stop {socket_unit} {unit}" if socket_unit else \
                f"systemctl stop {unit}"
            why = f"Restart={restart}" if restart != "no" else f"socket activation by {socket_unit}"
            return Respawner("systemd", unit, stop,
                             f"systemd would start {unit} again ({why})")
    port = target if isinstance(target, int) else None
    if (port is not None and container is not None and process.name in FORWARDERS
            and process.container is None):
        name = container.name or container.id[:12]
        return Respawner(process.name, name, _stop_container(container),
                         f"{process.name} publishes the port for container {name}: stop the "
                         f"container, not its {process.name}")
    if port is not None and process.name == "docker-proxy":
        return Respawner("docker-proxy", None,
                         f"docker stop $(docker ps -q --filter publish={port})",
                         "docker-proxy publishes the port for a container: stop the container, "
                         "not its proxy")
    if process.container and process.container != _own_container():
        known = container if container is not None and container.id == process.container \
            else Container(process.container)
        name = known.name or known.id[:12]
        return Respawner("container", name, _stop_container(known),
                         f"the holder runs in container {name}; its runtime may restart it")
    env = _read_environ(process.pid)
    if "SUPERVISOR_PROCESS_NAME" in env:
        name = env["SUPERVISOR_PROCESS_NAME"]
        group = env.get("SUPERVISOR_GROUP_NAME", name)
        full = name if group == name else f"{group}:{name}"
        return Respawner("supervisord", full, f"supervisorctl stop {full}",
                         f"supervisord runs it as program {full} and may restart it")
    if "pm_id" in env:
        pm_id = env["pm_id"]
        return Respawner("pm2", env.get("name") or pm_id, f"pm2 stop {pm_id}",
                         f"pm2 runs it as app {env.get('name') or pm_id} and restarts it")
    return None
