"""The processes that hold a host port for a container (docker-proxy, conmon, dockerd,
rootlessport) and what their command lines say."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from ..types import Proto

#: process names (``comm``) that hold a host port for a container.
FORWARDERS = frozenset({"docker-proxy", "conmon", "dockerd", "rootlessport"})


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
