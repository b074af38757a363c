"""Socket sources. Each backend module meets ``base.Backend`` (``NAME``, ``PROVIDES_OWNERS``,
``dump(flt, netns) -> (sockets, warnings)``, ``dump_unix(netns)``), netlink also
``base.RawBackend``; ``load(name)`` returns one, ``default_backend()`` names the best one for
this system."""

from __future__ import annotations

import sys

from ..errors import BackendUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import Backend

BACKENDS = ("netlink", "procfs", "psutil")


def default_backend() -> str:
    """The best backend for this system: netlink on Linux, psutil elsewhere."""
    return "netlink" if sys.platform.startswith("linux") else "psutil"


def load(name: str) -> Backend:
    """Import and return the backend module ``name`` (one of ``BACKENDS``).

    Raises:
        ValueError: unknown name.
        BackendUnavailable: the backend cannot run on this system.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name in ("netlink", "procfs") and not sys.platform.startswith("linux"):
        raise BackendUnavailable(f"the {name} backend needs Linux")
    if name == "netlink":
        from . import linux_netlink as module
    elif name == "procfs":
        from . import linux_procfs as module
    else:
        from . import psutil_backend as module
    return module


def unix_name(raw: bytes) -> str:
    """A UNIX socket address (``sun_path`` bytes as the kernel holds them) as text: the path
    (up to its first NUL), ``@name`` for an abstract name (first byte NUL; the name may hold
    more NULs), ``""`` when unnamed. NUL bytes inside an abstract name are shown as ``\\x00``,
    bytes that are not UTF-8 as ``\\xNN``."""
    if not raw:
        return ""
    if raw[0] == 0:
        return "@" + raw[1:].decode("utf-8", "backslashreplace").replace("\0", "\\x00")
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")



def unix_raw_names(name: str) -> list[bytes] | None:
    """Every ``sun_path`` the kernel may hold for a socket that ``unix_name`` shows as
    ``name``: a path with its terminating NUL; for ``@name`` the abstract name (from its
    leading NUL) and a relative path that begins with ``@``. None for ``""`` (unnamed) and
    for a name with a backslash or not encodable in UTF-8 (the escapes ``unix_name`` writes
    make many byte strings show alike)."""
    if not name or "\\" in name:
        return None
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return [b"\0" + raw[1:], raw + b"\0"] if name.startswith("@") else [raw + b"\0"]