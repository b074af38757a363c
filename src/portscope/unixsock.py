"""UNIX domain sockets: peers joined both ways, and socket files told by their inode.

The backends dump each network namespace's UNIX sockets without owners or peers
(``linux_netlink.dump_unix``, ``linux_procfs.dump_unix``); ``UnixJoin`` joins them, over every
namespace covered (a socket file reaches across namespaces), with the owners of the snapshot's
single descriptor pass: each socket gets its owners, ``remote`` (its peer's name) and
``unix.peers`` (every socket it talks to, with their owners).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .filters import SocketFilter
from .types import (Endpoint, Owner, OwnerUnknown, Peer, Proto, Snapshot, Socket, State,
                    UnixInfo)


class UnixJoin:
    """The UNIX sockets of a snapshot, selected by a filter, to be joined with owners and
    peers.

    Args:
        sockets: every UNIX socket of the covered namespaces (unfiltered: the peers of the
            selected ones are found among them).
        flt: the selection; its socket predicates choose ``selected``.
        select: a further predicate on the sockets (``unixsock.selector``), or None.

    ``deferred`` makes one whose sockets are decoded only when a share of them is joined.
    """

    def __init__(self, sockets: Sequence[Socket], flt: SocketFilter,
                 select: Callable[[Socket], bool] | None = None) -> None:
        self._flt, self._select = flt, select
        self._decode: Callable[[int, int], list[Socket]] | None = None
        self._selected = self._choose(sockets)
        self._size = self.REPLY_BYTES * len(self._selected)
        names: dict[int, Endpoint] = {}
        referrers: list[int] = []
        waiting_at: dict[int, int] = {}
        for s in sockets:
            inode = s.inode
            if inode:
                names[inode] = s.local
            info = s.unix
            if info.peer_inode:
                referrers += (info.peer_inode, inode)
            for client in info.pending:
                # a client not accepted yet: its peer is a socket without inode, not dumped;
                # the listener is what it waits at
                waiting_at[client] = inode
        self._link(names, referrers, waiting_at)

    @classmethod
    def deferred(cls, flt: SocketFilter, names: dict[int, Endpoint], referrers: list[int],
                 waiting_at: dict[int, int], decode: Callable[[int, int], list[Socket]],
                 size_bytes: int) -> UnixJoin:
        """A join of sockets not decoded yet: each share of them is decoded when it is joined
        (``joined``), so that processes writing shares of a large listing decode theirs
        beside each other; what the join needs of every socket comes beforehand, read
        without decoding them (``linux_netlink.link_unix``).

        Args:
            flt: the selection (its socket predicates).
            names: socket inode -> name (``local``) of every named socket.
            referrers: flat pairs ``peer inode, inode`` of every socket with a peer.
            waiting_at: inode of a client in a listener's accept queue -> the listener's.
            decode: ``(k, n)`` -> the sockets of the k-th of n consecutive slices of the
                dumps (together every socket once).
            size_bytes: the size of the kernel's replies.
        """
        join = cls.__new__(cls)
        join._flt, join._select = flt, None
        join._decode, join._selected, join._size = decode, None, size_bytes
        join._link(names, referrers, waiting_at)
        return join

    def _link(self, names: dict[int, Endpoint], referrers: list[int],
              waiting_at: dict[int, int]) -> None:
        """Keep the maps the join looks peers up in; ``_back``: inode -> the socket whose
        peer it is (an int: most often), or the list of them."""
        self._names, self._waiting_at = names, waiting_at
        self._back: dict[int, int | list[int]] = {}
        back = self._back
        pairs = iter(referrers)
        for peer in pairs:
            inode = next(pairs)
            found = back.get(peer)
            if found is None:
                back[peer] = inode
            elif found.__class__ is int:
                back[peer] = [found, inode]
            else:
                found.append(inode)

    def _choose(self, sockets: Sequence[Socket]) -> list[Socket]:
        """The sockets the filter (and ``select``) take."""
        if Proto.UNIX not in self._flt.protos:
            return []
        check, select = self._flt.match_socket, self._select
        return [s for s in sockets if check(s) and (select is None or select(s))]

    @property
    def selected(self) -> list[Socket]:
        """The sockets the filter selects (of a deferred join: every socket decoded now)."""
        if self._selected is None:
            self._selected = self._choose(self._decode(0, 1))
        return self._selected

    #: bytes of a unix_diag reply per socket, about (``size_bytes``)
    REPLY_BYTES = 120

    def size_bytes(self) -> int:
        """About how large the kernel's reply for the selected sockets was, in bytes (of a
        deferred join: the whole reply; the snapshot shares large listings between two
        processes by this measure)."""
        return self._size

    def peer_inodes(self, sock: Socket) -> list[int]:
        """The inodes of every socket ``sock`` talks to: its peer (for a client not accepted
        yet, the listener it waits at), the sockets whose peer it is, and a listener's pending
        clients (each once, in that order)."""
        info = sock.unix
        peer = info.peer_inode or self._waiting_at.get(sock.inode)
        found = [peer] if peer else []
        back = self._back.get(sock.inode, ())
        for inode in (*((back,) if back.__class__ is int else back), *info.pending):
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

    def joined(self, share: tuple[int, int] = (0, 1)
               ) -> Iterator[tuple[Socket, Sequence[int], Endpoint | None]]:
        """Share ``k`` of ``n`` (consecutive slices; of a deferred join, the selected sockets of
        a slice of the dumps) of the selected sockets, each with what
        the join adds but owners: ``(socket, peer inodes, remote)``, the inodes of every socket
        it talks to (``peer_inodes``: its peer first) and, when it has a peer, that peer's name
        (``""`` for an unnamed one), else None. ``sockets`` builds on it, and so does the JSON
        writer of a large listing (``render.jsonfmt.UnixRows``)."""
        k, n = share
        if self._selected is None:      # deferred: this share only is decoded
            chosen = self._choose(self._decode(k, n))
        else:
            chosen = self._selected[k * len(self._selected) // n:
                                    (k + 1) * len(self._selected) // n]
        names = self._names
        back, waiting_at = self._back, self._waiting_at
        unnamed = tuple.__new__(Endpoint, ("", None))
        for s in chosen:
            info = s[16]
            inode = s[5]
            peer = info[3] or waiting_at.get(inode)
            if not peer:
                yield s, self.peer_inodes(s), None
                continue
            found = back.get(inode, peer)
            if not info[4] and (found == peer or found == [peer]):
                yield s, (peer,), names.get(peer) or unnamed     # the common case
            else:
                yield s, self.peer_inodes(s), names.get(peer) or unnamed

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
        get = owners.get if owners is not None else None
        for s, peers, remote in self.joined(share):
            yield join_one(s, peers, remote, get, missing, container_of)


def join_one(s: Socket, peers: Sequence[int], remote: Endpoint | None,
             get: Callable[..., tuple[Owner, ...]] | None, missing: OwnerUnknown | None,
             container_of=None) -> Socket:
    """One socket of ``UnixJoin.joined`` (with its peer inodes and ``remote``) joined: see
    ``UnixJoin.sockets`` (``get``: its ``owners.get``, or None)."""
    new = tuple.__new__
    (proto, family, local, _remote, state, inode, uid, netns, _v6only, rq, wq, held,
     unknown, cookie, container, _published, info) = s
    if get is None:
        peers = tuple([new(Peer, (i, ())) for i in peers])
    elif len(peers) == 1:
        peers = (new(Peer, (peers[0], get(peers[0], ()))),)
    else:
        peers = tuple([new(Peer, (i, get(i, ()))) for i in peers])
    if get is not None:
        held = get(inode, ()) if inode else ()
        unknown = None if held else (missing if inode else OwnerUnknown.KERNEL)
    if held and container_of is not None and held[0][2].container is not None:
        container = container_of(held[0][2].container, held[0][0])
    return new(Socket, (proto, family, local, remote, state, inode, uid, netns, None, rq, wq,
                        held, unknown, cookie, container, None,
                        new(UnixInfo, (info[0], info[1], info[2], info[3], info[4], peers))))


# ---------------------------------------------------------------------------------------------
# Socket files: told by their inode, never by connecting and never by the path text

#: ``sun_path`` holds 108 bytes with the terminating NUL: a path may have 107
MAX_PATH_BYTES = 107


def is_unix_target(text: str) -> bool:
    """True when a command's argument names a UNIX socket: ``@name`` or a path (holds ``/``;
    ports, addresses and service names never do)."""
    return text.startswith("@") or "/" in text


def parse_target(text: str) -> str:
    """A UNIX socket argument checked: a path or ``@name`` (``\\x00`` in an abstract name
    stands for a NUL byte, as portscope shows them).

    Raises:
        InvalidInput: empty, a NUL byte, longer than 107 bytes, or a directory.
    """
    from .errors import InvalidInput
    if "\0" in text:
        raise InvalidInput("a UNIX socket path cannot hold a NUL byte")
    name = text[1:] if text.startswith("@") else text
    if not name:
        raise InvalidInput(f"empty UNIX socket name {text!r}")
    if len(os.fsencode(name.replace("\\x00", "\0"))) > MAX_PATH_BYTES:
        raise InvalidInput(f"UNIX socket name too long: {len(os.fsencode(name))} bytes "
                           f"(at most {MAX_PATH_BYTES})")
    if not text.startswith("@") and os.path.isdir(text):
        raise InvalidInput(f"{text} is a directory, not a socket file")
    return text


@dataclass(frozen=True, slots=True)
class SocketFile:
    """What is at a path, from ``os.lstat``.

    Attributes:
        path: the path as given.
        error: ``missing``, ``parent-missing`` or ``permission`` when lstat failed, else None.
        is_socket: the file is a socket file (``S_ISSOCK``).
        dev, inode: its ``st_dev`` and ``st_ino``; mode, uid, gid: its permissions and owner.
    """

    path: str
    error: str | None = None
    is_socket: bool = False
    dev: int | None = None
    inode: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    def bound_by(self, sock: Socket) -> bool:
        """True when ``sock`` is bound to this very file: the same device and inode (the
        kernel gives the low 32 bits of the inode)."""
        return self.is_socket and Selector((self.dev, self.inode))(sock)


def socket_file(path: str) -> SocketFile:
    """``SocketFile`` of ``path`` (symbolic links are not followed: bind() does not either)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path) or "."
        return SocketFile(path, "missing" if os.path.isdir(parent) else "parent-missing")
    except NotADirectoryError:
        return SocketFile(path, "parent-missing")
    except PermissionError:
        return SocketFile(path, "permission")
    return SocketFile(path, None, stat.S_ISSOCK(st.st_mode), st.st_dev, st.st_ino,
                      stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which UNIX sockets a target names (``selector``): called on a socket, True when it is
    one of them.

    Attributes:
        file_id: ``(st_dev, st_ino)`` of the socket file: the sockets bound to it (by device
            and inode: a renamed file keeps its sockets); None to select by name.
        names: the names (path texts, ``@name``) of the sockets taken when ``file_id`` is
            None.
    """

    file_id: tuple[int, int] | None
    names: frozenset[str] = frozenset()

    def __call__(self, sock: Socket) -> bool:
        if self.file_id is None:
            return sock.local.address in self.names
        info = sock.unix
        return (info is not None and info.vfs_inode is not None
                and info.vfs_dev == self.file_id[0]
                and info.vfs_inode == self.file_id[1] & 0xFFFFFFFF)


def selector(target: str, file: SocketFile | None) -> Selector:
    """Which sockets a target names: an abstract ``@name`` by its name; a path by the socket
    file's device and inode (a renamed file keeps its sockets); a path with no socket file
    there by the name the sockets were bound with (their file was removed or replaced)."""
    if target.startswith("@"):
        return Selector(None, frozenset({target}))
    if file is not None and file.is_socket:
        return Selector((file.dev, file.inode))
    return Selector(None, frozenset({target, os.path.abspath(target)}))


def lookup(target: str, **kwargs) -> tuple[Snapshot, SocketFile | None]:
    """The UNIX sockets that ``target`` (a path or ``@name``) names, with owners and peers.

    Args:
        target: from ``parse_target``.
        kwargs: ``take_snapshot``'s (``backend``, ``owners``, ``netns``).
    Returns:
        ``(snapshot of the matching sockets, the SocketFile at the path or None for @name)``;
        listeners come first.
    Raises:
        InvalidInput: a path with a backend other than netlink (no socket file inodes).
        BackendUnavailable: a path on a kernel without ``unix_diag``.
    """
    from .errors import InvalidInput
    from .snapshot import take_snapshot
    if not target.startswith("@") and kwargs.get("backend") not in (None, "netlink"):
        raise InvalidInput(f"--backend {kwargs['backend']} gives no socket file inodes: a "
                           "path can only be looked up with netlink")
    file = None if target.startswith("@") else socket_file(target)
    snapshot = take_snapshot(SocketFilter(protos=frozenset({Proto.UNIX})),
                             unix_select=selector(target, file), **kwargs)
    ordered = sorted(snapshot.sockets, key=lambda s: s.state is not State.LISTEN)
    return dataclasses.replace(snapshot, sockets=tuple(ordered)), file


T = TypeVar("T")


def unbound_verdict(target: str, file: SocketFile | None,
                    sockets: Sequence[Socket]) -> PathDiagnosis | None:
    """When a view found no socket (``sockets`` empty) bound to the socket file ``file`` at
    ``target``: ``check_path``'s verdict, over every namespace this caller may enter (its
    ``stale`` only when none is bound to it there and none was left unread); else None."""
    if sockets or file is None or not file.is_socket:
        return None
    return check_path(target)


def read_everywhere(take: Callable[[bool], T]) -> tuple[T, str | None]:
    """``take(True)``: a snapshot (or lookup) whose ``must_enter`` is the argument; when a
    network namespace cannot be entered (setns refused), ``take(False)`` (what the others
    hold) and the line naming that namespace. For a socket file's verdict: a file no socket of
    the namespaces read is bound to may be held in one that was not read, so it is not stale.
    """
    from .errors import AccessDenied
    try:
        return take(True), None
    except AccessDenied as exc:
        return take(False), str(exc)


@dataclass(frozen=True, slots=True)
class PathDiagnosis:
    """Could a server bind a UNIX socket at ``path``?

    Attributes:
        path: the path.
        bindable: True when bind() would succeed now.
        reasons: ``(code, sentence)``: ``in-use``, ``stale-file``, ``not-a-socket``,
            ``parent-missing``, ``permission``, ``path-too-long``.
        file: what is at the path.
        blockers: the live sockets bound to the file (``in-use``), with owners.
        complete: False when some owners could not be read.
    """

    path: str
    bindable: bool
    reasons: tuple[tuple[str, str], ...]
    file: SocketFile | None
    blockers: tuple[Socket, ...] = ()
    complete: bool = True

    @property
    def stale(self) -> bool:
        """True when the path is a socket file no socket is bound to (safe to remove)."""
        return any(code == "stale-file" for code, _ in self.reasons)


def check_path(path: str, **kwargs) -> PathDiagnosis:
    """Whether a server could bind a UNIX socket at ``path``, decided by inode: a socket file
    is in use when a live socket's file inode and device equal the file's (never by
    connecting to it, never by the path text: a renamed live file keeps its old name in the
    kernel's view). Every network namespace is searched (a file reaches across them); a
    caller who cannot enter the others (no CAP_SYS_ADMIN, or setns refused by a sandbox)
    never gets ``stale-file`` but ``permission``.

    Args:
        path: the path (not ``@name``: abstract names have no file).
        kwargs: ``take_snapshot``'s (``netns``, ``backend``).
    Returns:
        a ``PathDiagnosis``.
    Source: ``lstat``, ``access`` and the netlink ``unix_diag`` dump (``UDIAG_SHOW_VFS``).
    """
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        return PathDiagnosis(path, False, (("path-too-long", f"{len(os.fsencode(path))} bytes: "
                                            f"a UNIX socket path holds at most "
                                            f"{MAX_PATH_BYTES}"),), None)
    file = socket_file(path)
    parent = os.path.dirname(path) or "."
    if file.error == "parent-missing":
        return PathDiagnosis(path, False, (("parent-missing",
                                            f"the directory {parent} does not exist"),), file)
    if file.error == "permission":
        return PathDiagnosis(path, False, (("permission", f"no permission to look into "
                                            f"{parent}"),), file)
    creatable = os.access(parent, os.W_OK | os.X_OK)
    denied = () if creatable else (("permission", f"no permission to create a file in "
                                                  f"{parent}"),)
    if file.error == "missing":
        return PathDiagnosis(path, creatable, denied, file)
    if not file.is_socket:
        kind = _file_kind(path)
        return PathDiagnosis(path, False, (("not-a-socket", f"{path} is {kind}, not a socket "
                                            "file: bind() fails with EADDRINUSE"),) + denied,
                             file)
    # a process of any network namespace may be bound to the file: look in every one
    from . import namespaces
    every = namespaces.may_enter()
    kwargs.setdefault("netns", "all" if every else "host")
    (snapshot, _), unread = read_everywhere(lambda strict: lookup(path, must_enter=strict,
                                                                  **kwargs))
    live = tuple(s for s in snapshot.sockets if file.bound_by(s))
    if live:
        return PathDiagnosis(path, False, (("in-use", f"{len(live)} live socket(s) are bound to "
                                            f"this file (inode {file.inode})"),) + denied,
                             file, live, snapshot.complete)
    if unread is not None:
        return PathDiagnosis(path, False, (("permission", "no socket of the network namespaces "
                                            "read is bound to this socket file, but it may be "
                                            f"in use in one that was not: {unread}"),),
                             file, (), False)
    if not every and len(namespaces.discover()) > 1:
        return PathDiagnosis(path, False, (("permission", "no socket of this network namespace "
                                            "is bound to this socket file, but the other "
                                            "namespaces cannot be read without root: it may "
                                            "be in use there"),), file, (), False)
    return PathDiagnosis(path, False, (("stale-file", "a socket file that no socket is bound "
                                        "to: bind() fails with EADDRINUSE until it is removed; "
                                        "safe to remove"),) + denied, file, (),
                         snapshot.complete)


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _file_kind(path: str) -> str:
    mode = os.lstat(path).st_mode
    return next((name for test, name in _KINDS if test(mode)), "not a socket file")


def remove_stale(path: str, *, dry_run: bool = False, **kwargs) -> PathDiagnosis:
    """Remove the socket file at ``path`` only after proving it stale, right before removing:
    ``check_path`` says ``stale-file`` and the file is still the one proven stale (same device
    and inode) when it is unlinked.

    Args:
        path: the socket file.
        dry_run: prove, remove nothing.
        kwargs: ``take_snapshot``'s (``netns``, ``backend``).
    Returns:
        the diagnosis that allowed (``stale``) or refused the removal.
    Raises:
        OSError: the unlink failed (permission, the file went away).
    """
    diagnosis = check_path(path, **kwargs)
    if not diagnosis.stale or dry_run:
        return diagnosis
    again = socket_file(path)
    if (again.dev, again.inode) != (diagnosis.file.dev, diagnosis.file.inode):
        return check_path(path, **kwargs)       # replaced meanwhile: judge the new file
    os.unlink(path)
    return diagnosis
