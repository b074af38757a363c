"""UNIX domain sockets: peers joined both ways, and socket files told by their inode.

The backends dump each network namespace's UNIX sockets without owners or peers
(``linux_netlink.dump_unix``, ``linux_procfs.dump_unix``); ``UnixJoin`` joins them, over every
namespace covered (a socket file reaches across namespaces), with the owners of the snapshot's
single descriptor pass: each socket gets its owners, ``remote`` (its peer's name) and
``unix.peers`` (every socket it talks to, with their owners).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from .filters import SocketFilter
from .types import Endpoint, Owner, OwnerUnknown, Peer, Proto, Socket


class UnixJoin:
    """The UNIX sockets of a snapshot, selected by a filter, to be joined with owners and
    peers.

    Args:
        sockets: every UNIX socket of the covered namespaces (unfiltered: the peers of the
            selected ones are found among them).
        flt: the selection; its socket predicates choose ``selected``.
    """

    def __init__(self, sockets: Sequence[Socket], flt: SocketFilter) -> None:
        self.all = sockets
        check = flt.match_socket
        self.selected = [s for s in sockets if check(s)] if Proto.UNIX in flt.protos else []
        self._names: dict[int, Endpoint] = {}
        self._back: dict[int, list[int]] = {}
        self._waiting_at: dict[int, int] = {}
        names, back = self._names, self._back
        for s in sockets:
            inode = s.inode
            if inode:
                names[inode] = s.local
            info = s.unix
            peer = info.peer_inode
            if peer:
                found = back.get(peer)
                if found is None:
                    back[peer] = [inode]
                else:
                    found.append(inode)
            for client in info.pending:
                # a client not accepted yet: its peer is a socket without inode, not dumped;
                # the listener is what it waits at
                self._waiting_at[client] = inode

    def peer_inodes(self, sock: Socket) -> list[int]:
        """The inodes of every socket ``sock`` talks to: its peer (for a client not accepted
        yet, the listener it waits at), the sockets whose peer it is, and a listener's pending
        clients (each once, in that order)."""
        info = sock.unix
        peer = info.peer_inode or self._waiting_at.get(sock.inode)
        found = [peer] if peer else []
        for inode in (*self._back.get(sock.inode, ()), *info.pending):
            if inode and inode not in found:
                found.append(inode)
        return found

    def wanted(self) -> set[int]:
        """Socket inodes whose owners the selected sockets need: theirs and their peers'."""
        found: set[int] = set()
        for s in self.selected:
            if s.inode:
                found.add(s.inode)
            found.update(self.peer_inodes(s))
        return found

    def sockets(self, owners: Mapping[int, tuple[Owner, ...]] | None = None,
                missing: OwnerUnknown | None = None, container_of=None,
                share: tuple[int, int] = (0, 1)) -> Iterator[Socket]:
        """The selected sockets (share ``k`` of ``n`` of them), joined.

        Args:
            owners: socket inode -> owners (an ``OwnerIndex``); None keeps the owners the
                backend gave (psutil) and leaves peers without owners.
            missing: ``owner_unknown`` of a socket with an inode and no visible owner.
            container_of: ``(container id, pid) -> Container``, to name the container of a
                socket whose first owner runs in one.
            share: ``(k, n)``: the k-th of n consecutive slices of the selection.
        Yields:
            sockets with ``owners`` (or ``owner_unknown``), ``remote`` (the peer's name, ``""``
            for an unnamed one, when connected) and ``unix.peers``.
        """
        k, n = share
        chosen = self.selected[k * len(self.selected) // n:(k + 1) * len(self.selected) // n]
        get = owners.get if owners is not None else None
        names = self._names
        new = tuple.__new__
        unnamed = new(Endpoint, ("", None))
        kernel = OwnerUnknown.KERNEL
        for s in chosen:
            info = s.unix
            peers = tuple(new(Peer, (i, get(i, ()) if get else ())) for i in self.peer_inodes(s))
            remote = None
            peer = info.peer_inode or self._waiting_at.get(s.inode)
            if peer:
                local = names.get(peer)
                remote = unnamed if local is None else new(Endpoint, (local.address, None))
            if get is None:
                held, unknown = s.owners, s.owner_unknown
            else:
                held = get(s.inode, ()) if s.inode else ()
                unknown = None if held else (missing if s.inode else kernel)
            container = s.container
            if held and container_of is not None and held[0].process.container is not None:
                container = container_of(held[0].process.container, held[0].pid)
            yield new(Socket, (s.proto, s.family, s.local, remote, s.state, s.inode, s.uid,
                               s.netns, None, s.rx_queue_bytes, s.tx_queue_bytes, held, unknown,
                               s.cookie, container, None, info._replace(peers=peers)))

