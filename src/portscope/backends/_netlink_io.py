"""NETLINK_SOCK_DIAG transport: open the socket, send a dump request, read the multipart reply.

Errors are translated here: a failed ``socket()`` is ``BackendUnavailable``, an ``NLMSG_ERROR``
reply or a failed ``recv()`` is ``BackendError``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

from ..errors import BackendError, BackendUnavailable
from . import _netlink_wire as w

MAX_DUMP_ATTEMPTS = 3    # a dump flagged as interrupted (NLM_F_DUMP_INTR) is asked again
RECV_BYTES = 1 << 18     # the kernel fills at most ~32 KiB per recv of a dump; room to spare


def open_diag_socket() -> socket.socket:
    """A NETLINK_SOCK_DIAG socket in the caller's current network namespace.

    Raises:
        BackendUnavailable: netlink sock_diag is not available (not Linux, seccomp, no module).
    """
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             w.NETLINK_INET_DIAG)
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


def interrupted_warning(what: str) -> str:
    """The warning for a dump of ``what`` sockets (``tcp``, ``unix``) that the kernel flagged
    as interrupted ``MAX_DUMP_ATTEMPTS`` times: its last reply is kept, duplicates dropped."""
    return (f"the {what} socket dump was interrupted {MAX_DUMP_ATTEMPTS} times by changes and "
            "may be inconsistent")


def raise_error(buf: bytes, offset: int) -> None:
    """Raise the ``BackendError`` carried by the NLMSG_ERROR message at ``offset``.

    Raises:
        BackendUnavailable: the kernel has no handler for the request (ENOENT, EOPNOTSUPP).
        BackendError: any other error.
    """
    code = w.nlmsgerr_errno(buf, offset)
    message = f"netlink sock_diag: {os.strerror(code)}"
    if code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
        raise BackendUnavailable(message)
    raise BackendError(message)


def receive(datagrams, min_length: int, prior: list[bytes] | None = None
            ) -> tuple[list[bytes], bool]:
    """Read datagrams up to NLMSG_DONE (walking message headers only); return them and
    whether the kernel flagged the dump as interrupted.

    Every message is checked to lie within its datagram, and each socket message to be at
    least ``min_length`` bytes (its fixed part), so that the decoders read whole messages.
    A datagram equal to the one at its place in ``prior`` (an uninterrupted reply read
    here before) was checked then: it is not walked again, and the last of ``prior`` ends
    the reply as it did.

    Raises:
        BackendError: an NLMSG_ERROR reply, or a malformed one (``"netlink sock_diag:
            malformed reply ..."``).
    """
    header = w.NLMSGHDR.unpack_from
    done, error, intr = w.NLMSG_DONE, w.NLMSG_ERROR, w.NLM_F_DUMP_INTR
    error_length = w.NLMSGHDR.size + 4
    chunks = []
    interrupted = False
    last = len(prior) - 1 if prior else -1
    try:
        for index, chunk in enumerate(datagrams):
            chunks.append(chunk)
            if index <= last and chunk == prior[index]:
                if index == last:
                    return chunks, interrupted
                continue
            size = len(chunk)
            off = 0
            while off < size:
                length, kind, flags, _seq, _pid = header(chunk, off)
                if flags & intr:
                    interrupted = True
                if kind == done:
                    return chunks, interrupted
                if kind == error:
                    if length < error_length or off + length > size:
                        raise BackendError(f"netlink sock_diag: malformed reply (an error "
                                           f"message of {length} bytes)")
                    raise_error(chunk, off)
                if length < min_length or off + length > size:
                    raise BackendError(f"netlink sock_diag: malformed reply (a message of "
                                       f"{length} bytes at offset {off} of {size})")
                off += (length + 3) & ~3
    except struct.error:                    # a datagram that ends inside a message header
        raise BackendError("netlink sock_diag: malformed reply (a cut header)") from None
    raise BackendError("netlink sock_diag: the reply ended without NLMSG_DONE")
