"""Kernel structures of NETLINK_SOCK_DIAG / NETLINK_INET_DIAG, under their kernel names.

Pure bytes -> values, no I/O. Sources: ``include/uapi/linux/netlink.h``,
``include/uapi/linux/sock_diag.h``, ``include/uapi/linux/inet_diag.h``,
``include/net/tcp_states.h``, ``include/uapi/linux/unix_diag.h``.
"""

from __future__ import annotations

import os
import socket
import struct
from array import array

NETLINK_INET_DIAG = 4          # == NETLINK_SOCK_DIAG
NLM_F_REQUEST = 0x01
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCPDIAG_GETSOCK = 18           # legacy request: one walk returns TCP over IPv4 and IPv6
SOCK_DIAG_BY_FAMILY = 20

# tcp_states.h
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5
TCP_TIME_WAIT = 6
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8
TCP_LAST_ACK = 9
TCP_LISTEN = 10
TCP_CLOSING = 11
TCP_NEW_SYN_RECV = 12
TCP_BOUND_INACTIVE = 13        # kernel >= 6.8: dumped from the bind hash, reported as TCP_CLOSE

# sock_diag.h: multicast groups that report destroyed sockets
SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET_UDP_DESTROY = 2
SKNLGRP_INET6_TCP_DESTROY = 3
SKNLGRP_INET6_UDP_DESTROY = 4

# inet_diag request attribute (enum in inet_diag.h): a filter program run on each socket
INET_DIAG_REQ_BYTECODE = 1
# its operations (struct inet_diag_bc_op: code, yes, no; a port comparison is followed by a
# second op whose ``no`` holds the port): on "yes" the program moves on by ``yes`` bytes, on
# "no" by ``no`` bytes; a socket is taken when the program ends exactly at its end, dropped
# when it jumps 4 bytes past it. INET_DIAG_BC_JMP always moves by ``no``.
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_BC_OP = struct.Struct("=BBH")

# inet_diag attribute types (enum in inet_diag.h)
INET_DIAG_PROTOCOL = 10
INET_DIAG_SKV6ONLY = 11
INET_DIAG_CGROUP_ID = 21

# struct nlmsghdr: len, type, flags, seq, pid
NLMSGHDR = struct.Struct("=IHHII")

# struct inet_diag_sockid: sport, dport (network order), src[4], dst[4], if, cookie[2]
# The ports are read as two native u16 and byte-swapped with BSWAP16 (cheaper than a second
# unpack in network order).
# nlmsghdr + struct inet_diag_msg, as one struct: the fields in kernel order are
# len type flags seq pid | family state timer retrans | sport dport src dst if cookie |
# expires rqueue wqueue uid inode
NLMSG_INET_DIAG_MSG = struct.Struct("=IHHIIBBBBHH16s16sIQIIIII")
ATTRS_OFFSET = NLMSG_INET_DIAG_MSG.size          # 16 + 72 = 88
IDIAG_INODE_OFFSET = ATTRS_OFFSET - 4            # idiag_inode, the last u32 of inet_diag_msg
# the same message read for a socket's local endpoint and inode only: len type | family |
# sport src | if | inode
NLMSG_INET_DIAG_LOCAL = struct.Struct("=IH10xB3xH2x16s16xI24xI")
assert NLMSG_INET_DIAG_LOCAL.size == ATTRS_OFFSET
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")                         # INET_DIAG_CGROUP_ID's payload

NLATTR = struct.Struct("=HH")

# index: a u16 as read natively -> its value in network order: every u16 in order, each
# written in network order (high byte first) and read natively (built from bytes: 0.1 ms at
# import, against 2 ms from range(65536))
_NETWORK_ORDER = bytearray(2 * 65536)
_NETWORK_ORDER[0::2] = b"".join(bytes((high,)) * 256 for high in range(256))
_NETWORK_ORDER[1::2] = bytes(range(256)) * 256
BSWAP16 = array("H", _NETWORK_ORDER)
del _NETWORK_ORDER


def states_mask(states) -> int:
    """``idiag_states``: one bit per kernel state number."""
    mask = 0
    for state in states:
        mask |= 1 << state
    return mask


def inet_diag_req_v2(family: int, protocol: int, states: int, sport: int = 0,
                     ext: int = 0, seq: int = 1) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request (``struct inet_diag_req_v2``).

    Args:
        family: AF_INET or AF_INET6.
        protocol: IPPROTO_TCP or IPPROTO_UDP.
        states: ``idiag_states`` bit mask.
        sport: local port to filter on in the kernel (0 = any).
        ext: ``idiag_ext`` bits of extra attributes.
    """
    body = struct.pack("=BBBxI", family, protocol, ext, states) + _sockid(sport)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def inet_diag_req_v1(states: int, sport: int = 0, ext: int = 0, seq: int = 1,
                     bytecode: bytes = b"") -> bytes:
    """A legacy TCPDIAG_GETSOCK dump request (``struct inet_diag_req``): TCP over IPv4 and IPv6
    in one walk of the kernel's hash tables (measured 22-25 % cheaper than two requests);
    ``bytecode`` (``port_filter``), when given, is sent as ``INET_DIAG_REQ_BYTECODE``."""
    body = struct.pack("=BBBB", socket.AF_INET, 0, 0, ext) + _sockid(sport) \
        + struct.pack("=II", states, 0)
    if bytecode:
        body += NLATTR.pack(NLATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), TCPDIAG_GETSOCK,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def port_filter(ranges: list[tuple[int, int]]) -> bytes:
    """An ``INET_DIAG_REQ_BYTECODE`` program taking the sockets whose local port lies in one
    of ``ranges`` (sorted, disjoint, inclusive ``(low, high)``): a balanced search over them,
    so that each socket costs about log2(len(ranges)) + 2 comparisons in the kernel (a chain of
    one test per port measured 10x the cost of the dump's walk at 300 ports).

    Each leaf is ``port >= low`` and ``port <= high`` (else: drop), then a jump to the end
    (take); an inner node tests ``port <= high`` of the last range of its left half and goes
    on in the left half (yes) or the right one (no). Every "yes" moves to the next op, as the
    kernel's checker (``inet_diag_bc_audit``) walks them.

    Raises:
        ValueError: no range, or so many that a jump exceeds the op's 16-bit ``no``.
    """
    op = INET_DIAG_BC_OP.pack
    leaf, node = 2 * 8 + 4, 8

    def size(count: int) -> int:
        return count * leaf + (count - 1) * node

    if not ranges:
        raise ValueError("port_filter needs at least one range")
    total = size(len(ranges))
    if total + 4 > 0xFFFF:
        raise ValueError(f"port_filter: {len(ranges)} ranges do not fit in one program")
    out = bytearray()

    def emit(part: list[tuple[int, int]]) -> None:
        at = len(out)
        if len(part) == 1:
            low, high = part[0]
            drop = total + 4 - at
            out.extend(op(INET_DIAG_BC_S_GE, 8, drop) + op(0, 0, low)
                       + op(INET_DIAG_BC_S_LE, 8, drop - 8) + op(0, 0, high)
                       + op(INET_DIAG_BC_JMP, 4, total - at - 16))
            return
        half = len(part) // 2
        out.extend(op(INET_DIAG_BC_S_LE, 8, node + size(half)) + op(0, 0, part[half - 1][1]))
        emit(part[:half])
        emit(part[half:])

    emit(ranges)
    return bytes(out)


def _sockid(sport: int) -> bytes:
    # struct inet_diag_sockid with only idiag_sport set; cookie = INET_DIAG_NOCOOKIE
    return struct.pack("!HH16s16s", sport, 0, b"", b"") + struct.pack("=III", 0, 0xFFFFFFFF,
                                                                      0xFFFFFFFF)


def find_attr(buf, start: int, end: int, attr_type: int) -> int:
    """Offset of the payload of the first ``attr_type`` attribute in ``buf[start:end]``,
    or -1. Attributes are ``struct nlattr`` (len, type) padded to 4 bytes."""
    unpack = NLATTR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            return -1
        if kind & 0x3FFF == attr_type:
            return start + 4
        start += (length + 3) & ~3
    return -1


def nlmsgerr_errno(buf, offset: int) -> int:
    """The (positive) errno of an NLMSG_ERROR message at ``offset``."""
    (error,) = struct.unpack_from("=i", buf, offset + NLMSGHDR.size)
    return -error


# unix_diag.h: request flags (udiag_show) and attribute types
UDIAG_SHOW_NAME = 0x01
UDIAG_SHOW_VFS = 0x02
UDIAG_SHOW_PEER = 0x04
UDIAG_SHOW_ICONS = 0x08
UDIAG_SHOW_RQLEN = 0x10
UDIAG_SHOW_UID = 0x40          # kernel >= 5.3; older kernels leave the attribute out
UNIX_DIAG_NAME = 0
UNIX_DIAG_VFS = 1
UNIX_DIAG_PEER = 2
UNIX_DIAG_ICONS = 3
UNIX_DIAG_RQLEN = 4
UNIX_DIAG_SHUTDOWN = 6
UNIX_DIAG_UID = 7
# what portscope's UNIX dump asks for: every attribute above
UNIX_SHOW = (UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS
             | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID)

# nlmsghdr + struct unix_diag_msg: family type state pad | ino | cookie[2]
NLMSG_UNIX_DIAG_MSG = struct.Struct("=IHHIIBBBxIQ")
UNIX_ATTRS_OFFSET = NLMSG_UNIX_DIAG_MSG.size      # 16 + 16 = 32
UNIX_DIAG_VFS_STRUCT = struct.Struct("=II")       # udiag_vfs_ino, udiag_vfs_dev
# The attributes a reply ends with (Linux >= 5.3 fills them in this order): PEER (a connected
# socket's), RQLEN, SHUTDOWN (a u8, padded) and UID, each header read as one u32, to be
# compared with UNIX_TAIL_HEADERS
UNIX_TAIL = struct.Struct("=IIIIIIBxxxII")
UNIX_TAIL_HEADERS = tuple(U32.unpack(NLATTR.pack(length, kind))[0] for length, kind in (
    (8, UNIX_DIAG_PEER), (12, UNIX_DIAG_RQLEN), (5, UNIX_DIAG_SHUTDOWN), (8, UNIX_DIAG_UID)))
UNIX_PEER_BYTES = 8


def unix_diag_req(show: int, states: int = 0xFFFFFFFF, seq: int = 1) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for AF_UNIX (``struct unix_diag_req``).

    Args:
        show: ``udiag_show`` bits (``UDIAG_SHOW_*``): which attributes each reply carries.
        states: ``udiag_states`` bit mask (default: every state).
    """
    body = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF,
                       0xFFFFFFFF)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def kernel_dev_to_user(dev: int) -> int:
    """A kernel-internal ``dev_t`` (``MAJOR << 20 | MINOR``, as ``udiag_vfs_dev`` holds it)
    as user space's ``st_dev`` (``os.makedev``)."""
    return os.makedev(dev >> 20, dev & 0xFFFFF)


def unix_vfs_attr(dev: int, inode: int) -> bytes | None:
    """The ``UNIX_DIAG_VFS`` attribute, header included, of a socket bound to the file of
    ``st_dev`` ``dev`` and ``st_ino`` ``inode`` (the kernel gives the low 32 bits of the
    inode, and the device as ``MAJOR << 20 | MINOR``); None when ``dev`` has no such form."""
    major, minor = os.major(dev), os.minor(dev)
    if major >> 12 or minor >> 20:
        return None
    return NLATTR.pack(4 + UNIX_DIAG_VFS_STRUCT.size, UNIX_DIAG_VFS) \
        + UNIX_DIAG_VFS_STRUCT.pack(inode & 0xFFFFFFFF, major << 20 | minor)


def unix_name_attr(raw: bytes) -> bytes:
    """The ``UNIX_DIAG_NAME`` attribute, header included, of a socket bound to ``raw``
    (``sun_path`` as the kernel holds it: a path with its terminating NUL, an abstract name
    from its leading NUL)."""
    return NLATTR.pack(4 + len(raw), UNIX_DIAG_NAME) + raw
