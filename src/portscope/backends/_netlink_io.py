"""NETLINK_SOCK_DIAG transport: open the socket, send a dump request, read the multipart reply.

Errors are translated here: a failed ``socket()`` is ``BackendUnavailable``, an ``NLMSG_ERROR``
reply or a failed ``recv()`` is ``BackendError``.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

from ..errors import BackendError, BackendUnavailable
from ._netlink_wire import NETLINK_INET_DIAG, nlmsgerr_errno

RECV_BYTES = 1 << 18     # the kernel fills at most ~32 KiB per recv of a dump; room to spare


def open_diag_socket() -> socket.socket:
    """A NETLINK_SOCK_DIAG socket in the caller's current network namespace.

    Raises:
        BackendUnavailable: netlink sock_diag is not available (not Linux, seccomp, no module).
    """
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_INET_DIAG)
    except (OSError, AttributeError) as exc:
        raise BackendUnavailable(f"netlink sock_diag unavailable: {exc}") from None


def request_chunks(sock: socket.socket, request: bytes) -> Iterator[bytes]:
    """Send ``request`` and yield each datagram of the reply (a run of netlink messages).

    The consumer stops iterating at ``NLMSG_DONE``; it calls ``raise_error`` on ``NLMSG_ERROR``.

    Raises:
        BackendError: the send or a receive failed.
    """
    try:
        sock.send(request)
        recv = sock.recv
        while True:
            yield recv(RECV_BYTES)
    except OSError as exc:
        raise BackendError(f"netlink sock_diag dump failed: {exc}") from None


def raise_error(buf: bytes, offset: int) -> None:
    """Raise the ``BackendError`` carried by the NLMSG_ERROR message at ``offset``.

    Raises:
        BackendUnavailable: the kernel has no handler for the request (ENOENT, EOPNOTSUPP).
        BackendError: any other error.
    """
    code = nlmsgerr_errno(buf, offset)
    message = f"netlink sock_diag: {os.strerror(code)}"
    if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
        raise BackendUnavailable(message)
    raise BackendError(message)
