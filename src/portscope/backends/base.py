"""The contract every socket source meets, as ``typing.Protocol`` classes.

A backend is a module (``linux_netlink``, ``linux_procfs``, ``psutil_backend``) that
``backends.load(name)`` returns; its module-level names satisfy ``Backend`` structurally, and
type checkers check a module against a Protocol as they check a class. Both Protocols are
``runtime_checkable``: ``isinstance(module, RawBackend)`` is how the snapshot asks whether a
backend can keep its reply undecoded (it checks that the names exist; the tests check their
signatures too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import Protocol, runtime_checkable

from ..filters import SocketFilter
from ..types import Container, Owner, OwnerUnknown, Socket


@runtime_checkable
class Backend(Protocol):
    """A socket source.

    Attributes:
        NAME: its name in ``backends.BACKENDS`` (``--backend NAME``).
        PROVIDES_OWNERS: True when ``dump`` fills ``Socket.owners`` itself (psutil); else
            the snapshot joins owners from its own descriptor scan.
    """

    NAME: str
    PROVIDES_OWNERS: bool

    def dump(self, flt: SocketFilter = ..., netns: int | None = None
             ) -> tuple[list[Socket], list[str]]:
        """The TCP and UDP sockets of the caller's network namespace that ``flt`` selects
        (its owner predicates are left to the caller), each recording ``netns`` (the
        namespace inode, None when unknown), and warnings, one line each.

        Raises:
            BackendUnavailable: the source does not exist here.
            BackendError: it exists but could not be read.
        """
        ...

    def dump_unix(self, netns: int | None = None) -> tuple[list[Socket], list[str]]:
        """Every UNIX domain socket of the caller's network namespace (owners, peers and
        ``remote`` left to the snapshot, except where the source names them), and warnings.

        Raises:
            BackendUnavailable, BackendError: as ``dump``.
        """
        ...


@runtime_checkable
class RawBackend(Backend, Protocol):
    """A backend that can keep its reply undecoded (netlink): the snapshot scans owners for
    exactly the reply's inodes, and decodes while it streams, in one or two processes."""

    def collect(self, flt: SocketFilter = ..., netns: int | None = None,
                counts: object | None = None) -> tuple[Sized, list[str]]:
        """Run the dumps ``flt`` needs and return ``(raw reply, warnings)``; ``counts``
        (``sockstat.SocketCounts``) lets it skip dumps that would come back empty."""
        ...

    def inodes(self, raw: Sized) -> set[int]:
        """The socket inodes of a raw reply, read without decoding it."""
        ...

    def split(self, raw: Sized, count: int) -> list[Sized]:
        """``raw`` cut into ``count`` parts that decode independently."""
        ...

    def decode(self, raw: Sized, owners: Mapping[int, tuple[Owner, ...]] | None = None,
               missing: OwnerUnknown | None = None, kernel: OwnerUnknown | None = None,
               cgroups: Mapping[int, Container] | None = None) -> Iterator[Socket]:
        """The sockets of a raw reply, lazily, with their owners joined from ``owners``;
        ``missing``/``kernel``: ``owner_unknown`` for a socket with an inode but no owner, and
        for one without an inode; ``cgroups``: socket cgroup id -> container."""
        ...
