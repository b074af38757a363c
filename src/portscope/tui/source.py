"""Where the TUI's snapshots come from: the live host (``LiveSource``) or given snapshots
(``FixedSource``: deterministic screenshots, benchmarks, replays). No Textual here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from ..filters import SocketFilter
from ..ports import HostPortRanges, host_port_ranges
from ..services import service_name
from ..render.columns import safe
from ..snapshot import accepted_connections, listeners_accepted, take_snapshot
from ..types import Proto, Snapshot
from .model import View

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..history.store import Holding

#: holdings of a port the detail pane shows from the history database
HISTORY_ROWS = 8


#: the kernel's defaults: ephemeral 32768-60999, none reserved, privileged below 1024
LINUX_DEFAULT_RANGES = HostPortRanges(ephemeral=(32768, 60999), reserved=(),
                                      unprivileged_start=1024)


class LiveSource:
    """Snapshots of this host through ``take_snapshot``.

    Args:
        netns: the network namespaces to cover (``take_snapshot``'s ``netns``: None or
            ``"host"``, ``"all"``, a name or a PID).
        history_path: the history database of ``portscope record`` for the detail pane
            (default: its default path, when a database is there).
    """

    def __init__(self, netns: str | None = None, history_path: str | None = None) -> None:
        self.netns = netns
        self.history_path = history_path

    def history(self, port: int, limit: int = HISTORY_ROWS) -> list[Holding] | None:
        """The last ``limit`` holdings of ``port`` (sockets, oldest first) in the history
        database, or None when there is none (no ``--db`` and nothing at the default path).

        Raises:
            HistoryError: the database cannot be read.
        """
        from ..history import store
        path = self.history_path or store.default_path()
        if self.history_path is None and not os.path.exists(path):
            return None
        with store.open(path) as db:
            return db.holdings(port=port)[-limit:]

    def scope(self, snapshot: Snapshot) -> str:
        """The namespace scope for the header: ``this netns``, ``all netns (3)``,
        ``netns NAME``."""
        if self.netns in (None, "host"):
            return "this netns"
        if self.netns == "all":
            return f"all netns ({len(snapshot.namespaces)})"
        return f"netns {safe(self.netns)}"

    def capture(self, view: View) -> tuple[Snapshot, dict[int, int]]:
        """The sockets ``view`` shows, and its Accepted column: index of each TCP listener in
        the snapshot -> the connections accepted from it (empty: no column).

        The listeners view takes the listeners only and counts their connections without
        building them (``listeners_accepted``: cheap on a busy host); the UDP view takes UDP
        sockets, the UNIX view UNIX domain sockets, the others every TCP and UDP socket (the
        all view counts from its own connections).

        Raises: as ``take_snapshot`` (BackendError, AccessDenied).
        """
        if view.name == "listeners":
            return listeners_accepted(self.netns)
        if view.name == "udp":
            flt = SocketFilter(protos=frozenset({Proto.UDP}))
        elif view.name == "unix":
            flt = SocketFilter(protos=frozenset({Proto.UNIX}))
        else:
            flt = SocketFilter()
        snapshot = take_snapshot(flt, netns=self.netns)
        return snapshot, _accepted_in(view, snapshot)

    def ranges(self) -> HostPortRanges:
        """This host's port ranges (``/proc/sys/net/ipv4``), for the explanations."""
        return host_port_ranges()

    def service_name(self, port: int, proto: str) -> str | None:
        """The service name of ``port/proto`` (``/etc/services``, then IANA)."""
        return service_name(port, proto)

    def port_snapshot(self, port: int, netns: int | None) -> Snapshot:
        """Every socket whose local port is ``port`` in the namespace with inode ``netns``,
        for the detail pane: its listeners and their accepted connections (a dump of one
        port, cheap on any host; clients elsewhere on the host are not looked for)."""
        snapshot = take_snapshot(SocketFilter(port_range=(port, port)), netns=self.netns)
        return _only(snapshot, port, netns)


class FixedSource:
    """Serves given snapshots in turn (the last one again once all were served), for
    deterministic screenshots and benchmarks: nothing is read from this host (port ranges and
    service names are fixed too). ``port_snapshot`` answers from the snapshot served last.

    Args:
        snapshots: at least one.
        scope: the header's namespace scope text.
        ranges: the port ranges explanations use (default: Linux's defaults).
    """

    def __init__(self, snapshots: Sequence[Snapshot], scope: str = "this netns",
                 ranges: HostPortRanges = LINUX_DEFAULT_RANGES) -> None:
        if not snapshots:
            raise ValueError("FixedSource needs at least one snapshot")
        self._snapshots = list(snapshots)
        self._served = -1
        self._scope = scope
        self._ranges = ranges

    def history(self, port: int, limit: int = HISTORY_ROWS) -> None:
        """No history: a fixed source has none."""
        return None

    def ranges(self) -> HostPortRanges:
        """The ranges given at creation."""
        return self._ranges

    def service_name(self, port: int, proto: str) -> str | None:
        """The IANA service name of ``port/proto`` (no ``/etc/services``: that differs
        between hosts)."""
        return service_name(port, proto, etc_services=None)

    def scope(self, snapshot: Snapshot) -> str:
        """The scope text given at creation."""
        return self._scope

    def capture(self, view: View) -> tuple[Snapshot, dict[int, int]]:
        """The next snapshot (the app keeps the sockets ``view`` wants), and its Accepted
        column from the connections in it (``_accepted_in``)."""
        self._served = min(self._served + 1, len(self._snapshots) - 1)
        snapshot = self._snapshots[self._served]
        return snapshot, _accepted_in(view, snapshot)

    def port_snapshot(self, port: int, netns: int | None) -> Snapshot:
        """The sockets of the snapshot served last on ``port`` in namespace ``netns``."""
        return _only(self._snapshots[max(self._served, 0)], port, netns)


def _accepted_in(view: View, snapshot: Snapshot) -> dict[int, int]:
    """For the listeners and all views of a snapshot holding connections: index of each TCP
    listener -> its connections in it (``accepted_connections``); else empty."""
    if view.name not in ("listeners", "all") or not any(s.remote for s in snapshot.sockets):
        return {}
    return {i: len(conns) for i, conns in accepted_connections(snapshot.sockets).items()}


def _only(snapshot: Snapshot, port: int, netns: int | None) -> Snapshot:
    return dataclasses.replace(snapshot, sockets=tuple(
        s for s in snapshot.sockets if s.netns == netns and port in (
            s.local.port, s.remote.port if s.remote else None)))
