"""check_bind(): could a new socket bind ADDR:PORT here, and if not, which rule and which socket.

The answer comes from Linux's bind rules applied to a snapshot of the caller's network namespace,
then, where it is safe, confirmed by a trial bind. A trial alone is never the answer: EACCES
(privileged port) is returned before the kernel looks for conflicts, so it hides EADDRINUSE, and
a trial cannot say which socket or rule blocks.

The rules (``net/ipv4/inet_connection_sock.c`` ``inet_bind_conflict()`` and
``inet_rcv_saddr_equal()``, ``net/ipv4/udp.c`` ``udp_lib_lport_inuse()``,
``net/ipv6/af_inet6.c`` ``__inet6_bind()``; each is reproduced against the kernel by
``tests/system/test_bindcheck.py``):

- TCP and UDP are separate port spaces. Two sockets conflict only when their addresses overlap:
  a specific address and the wildcard of its family block each other both ways; two different
  specific addresses do not. An IPv6 ``::`` socket with v6only off also covers every IPv4
  address; ``::ffff:a.b.c.d`` is IPv4; a specific IPv6 address is implicitly v6only. A new
  ``::`` socket follows ``net.ipv6.bindv6only`` unless IPV6_V6ONLY is set.
- TCP: overlapping sockets may share a port when both set SO_REUSEADDR and the existing one is
  not listening (a TIME_WAIT socket or an accepted connection carries the listener's
  SO_REUSEADDR, so it helps only when the old listener had it too), or when both set
  SO_REUSEPORT and have the same effective uid (no uid check against TIME_WAIT). SO_REUSEADDR
  never passes a LISTEN socket. A bound-but-not-listening socket (BOUND_INACTIVE), TIME_WAIT
  and FIN_WAIT2 block like any other.
- UDP: both SO_REUSEADDR (any uid), or both SO_REUSEPORT with the same uid.
- Ports below ``net.ipv4.ip_unprivileged_port_start`` need CAP_NET_BIND_SERVICE (EACCES).
- An address not configured here gives EADDRNOTAVAIL (unless non-local binds are allowed); a
  link-local IPv6 address without a zone gives EINVAL.
- Kernel order of the errors: IPv4 checks the address, then the privilege, then conflicts;
  IPv6 checks the privilege first.

What a snapshot cannot show: the SO_REUSEADDR/SO_REUSEPORT flags of existing sockets. They are
read by duplicating a holder's descriptor (``pidfd_getfd``, root or the same user); for sockets
without a descriptor (TIME_WAIT) or an unreadable holder they are unknown, and the trial bind
settles the question. SO_BINDTODEVICE is not modelled (sock_diag does not report it).

Reason codes (``Reason.code``; stable, part of the JSON output):

=========================  =====================================================================
in-use                     a socket is bound to the same address and port
wildcard-overlap           a wildcard and a specific address of one family overlap
dual-stack-overlap         an IPv6 ``::`` socket with v6only off overlaps an IPv4 one
time-wait                  a closed connection the kernel still holds (TIME_WAIT, FIN_WAIT2, ...)
bound-inactive             a TCP socket bound but neither listening nor connected
reuseaddr-vs-listener      SO_REUSEADDR does not pass a listening socket
reuseaddr-not-inherited    the old listener of a TIME_WAIT/accepted socket lacked SO_REUSEADDR
reuseaddr-mismatch         SO_REUSEADDR is not set on both sockets
reuseport-mismatch         SO_REUSEPORT is not set on every socket
reuseport-other-user       SO_REUSEPORT is set on both, but by different users
privileged-port            the port needs CAP_NET_BIND_SERVICE (EACCES)
address-not-available      the address is not configured here (EADDRNOTAVAIL)
zone-required              a link-local IPv6 address needs ``%interface`` (EINVAL)
trial-failed               a trial bind failed where no rule predicts it
=========================  =====================================================================

Warning codes: ``ephemeral-range`` (outgoing connections may take the port at any time),
``reserved-port`` (in ``net.ipv4.ip_local_reserved_ports``), ``options-unknown`` (an existing
socket's flags are unknown and no trial could settle it: the verdict assumes the worst),
``rules-trial-disagree``, ``owners-hidden`` (some holders could not be read).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import ipaddress
import os
import pwd
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .filters import SocketFilter
from .identity import ip_address, is_wildcard, split_zone
from .namespaces import netns_flag
from .owners import visibility
from .ports import endpoint_text, host_port_ranges, parse_address
from .snapshot import take_snapshot
from .types import KERNEL_HELD_STATES, Family, OwnerUnknown, Proto, Snapshot, Socket, State

REASON_CODES = {
    "in-use": "a socket is bound to the same address and port",
    "wildcard-overlap": "a wildcard and a specific address of one family overlap",
    "dual-stack-overlap": "an IPv6 :: socket with v6only off overlaps an IPv4 socket",
    "time-wait": "a closed connection the kernel still holds (TIME_WAIT, FIN_WAIT2)",
    "bound-inactive": "a TCP socket bound but neither listening nor connected",
    "reuseaddr-vs-listener": "SO_REUSEADDR does not pass a listening socket",
    "reuseaddr-not-inherited": "the old listener lacked SO_REUSEADDR",
    "reuseaddr-mismatch": "SO_REUSEADDR is not set on both sockets",
    "reuseport-mismatch": "SO_REUSEPORT is not set on every socket",
    "reuseport-other-user": "SO_REUSEPORT sockets of different users",
    "privileged-port": "the port needs CAP_NET_BIND_SERVICE",
    "address-not-available": "the address is not configured here",
    "zone-required": "a link-local IPv6 address needs a zone",
    "trial-failed": "a trial bind failed where no rule predicts it",
}
WARNING_CODES = {
    "ephemeral-range": "the port is in the ephemeral range",
    "reserved-port": "the port is in ip_local_reserved_ports",
    "options-unknown": "an existing socket's SO_REUSEADDR/SO_REUSEPORT are unknown",
    "rules-trial-disagree": "the rules and a trial bind disagree",
    "owners-hidden": "some holders could not be read",
}

CAP_NET_BIND_SERVICE = 10
IP_BIND_ADDRESS_NO_PORT = 24          # linux/in.h; bind() checks the address, takes no port
SYS_PIDFD_GETFD = 438                 # the same number on every architecture's unified table
_BINDV6ONLY = Path("/proc/sys/net/ipv6/bindv6only")
_OVERLAPS = ("in-use", "wildcard-overlap", "dual-stack-overlap")


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason or warning: ``code`` from ``REASON_CODES``/``WARNING_CODES``, and a sentence."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Trial:
    """The trial bind: ``performed``; ``errno`` name it got (None: it bound); ``listened``
    (TCP: also called listen()); ``note`` says why it was skipped or limited."""

    performed: bool
    errno: str | None = None
    listened: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class BindDiagnosis:
    """The answer of ``check_bind()``.

    Attributes:
        port: the port asked about.
        proto: ``Proto.TCP`` or ``Proto.UDP``.
        binds: the binds evaluated, as text (``"[::]:8080 (dual-stack)"``); without an address,
            the wildcard(s) a server binds: ``::`` dual-stack, or ``0.0.0.0`` plus ``::`` v6only.
        uid: the effective uid evaluated.
        bindable: the verdict.
        errno: the errno name a bind would get (``EADDRINUSE``, ``EACCES``, ``EADDRNOTAVAIL``,
            ``EINVAL``), None when bindable.
        reasons: why not (empty when bindable), ``Reason`` with a code from ``REASON_CODES``.
        warnings: ``Reason`` with a code from ``WARNING_CODES``.
        blockers: the sockets that block, with their owners.
        blocker_codes: for each blocker, its reason codes (parallel to ``blockers``).
        fixes: what to try, one sentence or command each.
        trial: the trial bind.
        rules_errno: what the rules alone predict (None: bindable or undecided).
        netns: the network namespace inode the answer is for.
        complete: False when some holders could not be read.
    """

    port: int
    proto: Proto
    binds: tuple[str, ...]
    uid: int
    bindable: bool
    errno: str | None
    reasons: tuple[Reason, ...]
    warnings: tuple[Reason, ...]
    blockers: tuple[Socket, ...]
    blocker_codes: tuple[tuple[str, ...], ...]
    fixes: tuple[str, ...]
    trial: Trial
    rules_errno: str | None
    netns: int | None
    complete: bool


@dataclass(frozen=True, slots=True)
class _Bind:
    """A bind the new socket would make; ``v6only`` is None for IPv4."""

    family: Family
    address: str
    scope_id: int
    v6only: bool | None

    def text(self, port: int) -> str:
        """``[::]:8080 (dual-stack)``, ``127.0.0.1:8080``."""
        if self.family is Family.IPV4:
            return f"{self.address}:{port}"
        zone = f"%{self.scope_id}" if self.scope_id else ""
        mode = ""
        if is_wildcard(self.address):
            mode = " (v6only)" if self.v6only else " (dual-stack)"
        return f"[{self.address}{zone}]:{port}{mode}"


# ---------------------------------------------------------------------------------------------
# Address overlap (inet_rcv_saddr_equal)

def _views(family: Family, address: str, v6only: bool | None):
    """The IPv4 and IPv6 addresses a socket receives on: ``(v4, v6)``, each an ``ip_address``
    (unspecified = wildcard) or None; with the zone, for link-local IPv6."""
    ip = ip_address(address)          # an IPv4-mapped address is the IPv4 address it carries
    if ip.version == 4:
        return (ip, None), None
    zone = split_zone(address)[1]
    if ip.is_unspecified:
        v4 = None if v6only else (ipaddress.IPv4Address(0), None)
        return v4, (ip, None)
    return None, (ip, zone or None)


def _view_match(a, b) -> str | None:
    if a is None or b is None:
        return None
    (ip_a, zone_a), (ip_b, zone_b) = a, b
    if ip_a == ip_b:
        if zone_a and zone_b and zone_a != zone_b:
            return None
        return "in-use"
    if ip_a.is_unspecified or ip_b.is_unspecified:
        return "wildcard-overlap"
    return None


def _is_dual_wildcard(family: Family, address: str, v6only: bool | None) -> bool:
    ip = ip_address(address)           # ::ffff:0.0.0.0 is the IPv4 wildcard: never dual
    return family is Family.IPV6 and not v6only and ip.version == 6 and ip.is_unspecified


def overlap(family: Family, address: str, v6only: bool | None, sock: Socket) -> str | None:
    """How a bind of ``address`` (``family``, ``v6only``) overlaps ``sock``'s local address:
    ``"in-use"``, ``"wildcard-overlap"``, ``"dual-stack-overlap"`` or None (no conflict
    possible). Ports are not compared."""
    v4_new, v6_new = _views(family, address, v6only)
    v4_old, v6_old = _views(sock.family, sock.local.address, sock.v6only)
    kind = _view_match(v6_new, v6_old)
    if kind:
        return kind
    kind = _view_match(v4_new, v4_old)
    if kind and (_is_dual_wildcard(family, address, v6only)
                 != _is_dual_wildcard(sock.family, sock.local.address, sock.v6only)):
        return "dual-stack-overlap"
    return kind


# ---------------------------------------------------------------------------------------------
# Socket options of existing sockets

@lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def socket_options(sock: Socket) -> tuple[bool, bool] | None:
    """``(SO_REUSEADDR, SO_REUSEPORT)`` of an existing socket, or None when unknown.

    Source: a holder's descriptor, duplicated with ``pidfd_getfd`` (Linux >= 5.6; needs ptrace
    access to the holder: root, or the same user) and checked to be the same inode; the copy is
    closed at once. Sockets without a descriptor (TIME_WAIT) or a readable holder: None.
    """
    if not hasattr(os, "pidfd_open"):
        return None
    for owner in sock.owners:
        if owner.fd < 0:
            continue
        try:
            pidfd = os.pidfd_open(owner.pid)
        except OSError:          # gone (ESRCH), not permitted, or no pidfd support
            continue
        try:
            fd = _libc().syscall(SYS_PIDFD_GETFD, pidfd, owner.fd, 0)
        finally:
            os.close(pidfd)
        if fd < 0:               # EPERM (no ptrace access), EBADF (closed meanwhile), ENOSYS
            continue
        try:
            if os.fstat(fd).st_ino != sock.inode:
                continue         # the descriptor number was reused for another file
            copy = socket.socket(fileno=os.dup(fd))
            with copy:
                return (bool(copy.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)),
                        bool(copy.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)))
        finally:
            os.close(fd)
    return None


def _conflicts(proto: Proto, reuseaddr: bool, reuseport: bool, uid: int, sock: Socket,
               old_reuseaddr: bool, old_reuseport: bool) -> bool:
    """True when a new socket with these flags and effective uid may not share the port with
    ``sock`` (addresses already known to overlap)."""
    if proto is Proto.UDP:
        if reuseaddr and old_reuseaddr:
            return False
        return not (reuseport and old_reuseport and uid == sock.uid)
    if reuseaddr and old_reuseaddr and sock.state is not State.LISTEN:
        return False
    return not (reuseport and old_reuseport
                and (sock.state is State.TIME_WAIT or uid == sock.uid))


def conflict(proto: Proto, reuseaddr: bool, reuseport: bool, uid: int, sock: Socket,
             options: tuple[bool, bool] | None) -> bool | None:
    """Whether ``sock`` blocks a new overlapping socket: True, False, or None when it depends on
    ``sock``'s unknown options (``options`` None)."""
    choices = [options] if options is not None else [(a, p) for a in (False, True)
                                                     for p in (False, True)]
    outcomes = {_conflicts(proto, reuseaddr, reuseport, uid, sock, a, p) for a, p in choices}
    return outcomes.pop() if len(outcomes) == 1 else None


def _codes(proto: Proto, reuseaddr: bool, reuseport: bool, uid: int, sock: Socket,
           options: tuple[bool, bool] | None) -> list[str]:
    """The option and state reason codes for a blocking ``sock`` (the overlap code aside)."""
    codes = []
    old_addr, old_port = options if options is not None else (None, None)
    if sock.state in KERNEL_HELD_STATES:
        codes.append("time-wait")
    elif sock.state is State.BOUND_INACTIVE:
        codes.append("bound-inactive")
    if reuseaddr:
        if proto is Proto.TCP and sock.state is State.LISTEN:
            codes.append("reuseaddr-vs-listener")
        elif old_addr is not True:
            inherited = proto is Proto.TCP and (sock.state in KERNEL_HELD_STATES
                                                or sock.remote is not None)
            codes.append("reuseaddr-not-inherited" if inherited else "reuseaddr-mismatch")
    other_user = sock.uid != uid and sock.state is not State.TIME_WAIT
    if reuseport:
        if old_port is False:
            codes.append("reuseport-mismatch")
        if other_user:
            codes.append("reuseport-other-user")
        elif old_port is None:           # it blocked, so it lacks SO_REUSEPORT
            codes.append("reuseport-mismatch")
    elif old_port is True:
        codes.append("reuseport-mismatch")
    return codes


# ---------------------------------------------------------------------------------------------
# Privileges, addresses, trial binds

def _has_cap_net_bind_service(uid: int) -> bool:
    """Whether a process of ``uid`` may bind privileged ports: the caller's own CapEff when
    ``uid`` is the caller's effective uid; otherwise assumed from the uid (0 only)."""
    if uid != os.geteuid():
        return uid == 0
    try:
        with open("/proc/self/status", errors="surrogateescape") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_BIND_SERVICE & 1)
    except OSError:
        pass
    return uid == 0


def _bindv6only() -> bool:
    try:
        return _BINDV6ONLY.read_text().strip() == "1"
    except OSError:
        return False


def _ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def _sock_type(proto: Proto) -> int:
    return socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM


def _sockaddr(bind: _Bind, port: int):
    if bind.family is Family.IPV4:
        return bind.address, port
    return bind.address, port, 0, bind.scope_id


def _new_socket(bind: _Bind, proto: Proto, reuseaddr: bool, reuseport: bool) -> socket.socket:
    family = socket.AF_INET if bind.family is Family.IPV4 else socket.AF_INET6
    sock = socket.socket(family, _sock_type(proto))
    if reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if bind.v6only is not None and is_wildcard(bind.address):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(bind.v6only))
    return sock


def _address_errno(bind: _Bind, proto: Proto) -> str | None:
    """The errno a bind of this address gets whatever the port: EADDRNOTAVAIL (not configured
    here), EINVAL (link-local without zone), None. Asked of the kernel with a port-0 bind and
    IP_BIND_ADDRESS_NO_PORT, which checks the address and takes no port."""
    if is_wildcard(bind.address):
        return None
    with _new_socket(bind, proto, False, False) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            sock.bind(_sockaddr(bind, 0))
        except OSError as exc:
            return _errno.errorcode.get(exc.errno, str(exc.errno))
    return None


def _trial_here(binds: Sequence[_Bind], proto: Proto, port: int, reuseaddr: bool,
                reuseport: bool, listen: bool) -> str | None:
    """Bind (and listen) every bind at once, then close: the first errno name, or None."""
    opened: list[socket.socket] = []
    try:
        for bind in binds:
            sock = _new_socket(bind, proto, reuseaddr, reuseport)
            opened.append(sock)
            sock.bind(_sockaddr(bind, port))
        if listen:
            for sock in opened:
                sock.listen(1)
    except OSError as exc:
        return _errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        for sock in opened:
            sock.close()
    return None


def _trial_as(uid: int, binds: Sequence[_Bind], proto: Proto, port: int, reuseaddr: bool,
              reuseport: bool, listen: bool) -> tuple[bool, str | None]:
    """``_trial_here`` in a forked child that dropped to ``uid`` (its primary group, no
    supplementary groups): ``(ran, errno name or None)``. The caller must be root."""
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                       # the child: drop privileges, try, report, leave
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            result = _trial_here(binds, proto, port, reuseaddr, reuseport, listen)
            os.write(write_end, (result or "OK").encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(child, 0)
    if not text:
        return False, None
    return True, None if text == "OK" else text


# ---------------------------------------------------------------------------------------------
# check_bind

def _binds_for(address: str | None, v6only: bool | None) -> list[_Bind]:
    """The binds a server makes for ``address`` (None: every address)."""
    if address is None:
        effective = _bindv6only() if v6only is None else v6only
        if not _ipv6_available():
            return [_Bind(Family.IPV4, "0.0.0.0", 0, None)]
        if effective:
            return [_Bind(Family.IPV4, "0.0.0.0", 0, None), _Bind(Family.IPV6, "::", 0, True)]
        return [_Bind(Family.IPV6, "::", 0, False)]
    text, _, zone = address.partition("%")
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return [_Bind(Family.IPV4, ip.compressed, 0, None)]
    scope_id = 0
    if zone:
        scope_id = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    if ip.is_unspecified:
        return [_Bind(Family.IPV6, "::", 0, _bindv6only() if v6only is None else v6only)]
    return [_Bind(Family.IPV6, ip.compressed, scope_id, True)]


def _describe(sock: Socket) -> str:
    """``LISTEN 127.0.0.1:8080 held by python3 (pid 10)`` for messages."""
    where = endpoint_text(*sock.local)
    if sock.remote is not None:
        where += f" <-> {endpoint_text(*sock.remote)}"
    if sock.owners:
        names = [f"{o.process.name or '?'} (pid {o.pid})" for o in sock.owners[:3]]
        more = f" and {len(sock.owners) - 3} more" if len(sock.owners) > 3 else ""
        who = "held by " + ", ".join(names) + more
    elif sock.owner_unknown is OwnerUnknown.KERNEL or sock.state in KERNEL_HELD_STATES:
        who = "held by the kernel, no process"
    else:
        who = f"holder not visible ({sock.owner_unknown or 'unknown'}), socket uid {sock.uid}"
    return f"{sock.proto.value} {sock.state.value} {where} {who}"


def _message(code: str, sock: Socket, port: int, uid: int) -> str:
    what = _describe(sock)
    return {
        "in-use": f"{what} is bound to the same address and port",
        "wildcard-overlap": f"{what}: a wildcard and a specific address of one family block "
                            "each other",
        "dual-stack-overlap": (
            f"{what} is an IPv6 [::] socket with v6only off: it also covers every IPv4 address"
            if _is_dual_wildcard(sock.family, sock.local.address, sock.v6only) else
            f"{what}: a new IPv6 [::] socket with v6only off would also cover IPv4, and so "
            "overlap this IPv4 socket"),
        "time-wait": f"{what}: a closed connection the kernel keeps for up to 60 s",
        "bound-inactive": f"{what} is bound but neither listening nor connected "
                          "(BOUND_INACTIVE): it holds the port without accepting anything",
        "reuseaddr-vs-listener": f"{what} is listening: on Linux SO_REUSEADDR never lets a "
                                 "second socket bind a listening socket's address",
        "reuseaddr-not-inherited": f"{what} comes from a listener without SO_REUSEADDR: it "
                                   "helps only when the old socket had it too",
        "reuseaddr-mismatch": f"{what} did not set SO_REUSEADDR: both sockets need it",
        "reuseport-mismatch": f"{what}: SO_REUSEPORT must be set on every socket sharing the "
                              "port",
        "reuseport-other-user": f"{what} belongs to uid {sock.uid}, the new socket to uid "
                                f"{uid}: SO_REUSEPORT sockets must share the effective uid",
    }[code]


def _fixes(codes: set[str], blockers: Sequence[Socket], port: int, address: str | None,
           proto: Proto, start: int, dual_bind: bool, scope: str | None) -> list[str]:
    where = netns_flag(scope)
    fixes: list[str] = []
    units = sorted({o.process.unit for s in blockers for o in s.owners
                    if o.process.unit and o.process.unit.endswith(".service")})
    if any(s.owners for s in blockers):
        if units:
            fixes.append("stop the service: " + "; ".join(f"systemctl stop {u}" for u in units))
        fixes.append(f"stop every holder: portscope kill {port}"
                     + (" -u" if proto is Proto.UDP else "") + where)
    if codes & {"time-wait", "reuseaddr-not-inherited"}:
        fixes.append("wait for the kernel to drop the old connection(s) (up to 60 s), and set "
                     "SO_REUSEADDR in the server so its next restart is not blocked")
    if "dual-stack-overlap" in codes and dual_bind:
        fixes.append("bind IPv6 with IPV6_V6ONLY (check --v6only) so IPv4 and IPv6 are bound "
                     "separately")
    if "wildcard-overlap" in codes and address is None:
        fixes.append("bind one specific address that no holder uses instead of the wildcard")
    if codes & {"reuseport-mismatch"}:
        fixes.append("set SO_REUSEPORT on every socket that shares the port, holder and new "
                     "socket alike")
    if "reuseport-other-user" in codes:
        fixes.append("run the new server as the holder's user (SO_REUSEPORT needs one uid)")
    if "reuseaddr-vs-listener" in codes:
        fixes.append("two listeners on one port need SO_REUSEPORT on both, not SO_REUSEADDR")
    if "privileged-port" in codes:
        fixes.append(f"run as root, grant CAP_NET_BIND_SERVICE (setcap "
                     f"cap_net_bind_service=+ep BINARY, or AmbientCapabilities= in a unit), "
                     f"lower net.ipv4.ip_unprivileged_port_start, or use a port >= {start}")
    if "address-not-available" in codes:
        fixes.append("use an address configured in this network namespace (ip addr), or allow "
                     "non-local binds (IP_FREEBIND, net.ipv4.ip_nonlocal_bind=1)")
    if "zone-required" in codes:
        fixes.append("name the interface: ADDR%IFACE, for example [fe80::1%eth0]:PORT")
    if codes & set(_OVERLAPS) and "privileged-port" not in codes:
        fixes.append(f"or use another port: portscope free --near {port}"
                     + (" -u" if proto is Proto.UDP else "") + where)
    return fixes


def check_bind(port: int, address: str | None = None, *, proto: Proto | str = Proto.TCP,
               reuseaddr: bool = False, reuseport: bool = False, v6only: bool | None = None,
               uid: int | None = None, trial: bool = True,
               snapshot: Snapshot | None = None, scope: str | None = None) -> BindDiagnosis:
    """Could a new socket bind ``address:port`` in the caller's network namespace?

    TCP means bind() then listen(), as a server does; UDP means bind().

    Args:
        port: 1-65535.
        address: an IP literal (``"127.0.0.1"``, ``"::1"``, ``"fe80::1%eth0"``); None means
            every address: ``::`` dual-stack, or ``0.0.0.0`` and ``::`` v6only when v6only is
            on (``v6only`` or ``net.ipv6.bindv6only``), or ``0.0.0.0`` without IPv6.
        proto: ``"tcp"`` or ``"udp"``.
        reuseaddr, reuseport: the new socket sets SO_REUSEADDR / SO_REUSEPORT.
        v6only: IPV6_V6ONLY for an IPv6 wildcard; None follows ``net.ipv6.bindv6only``.
        uid: evaluate as this effective uid (default: the caller's). A uid other than the
            caller's is assumed to have CAP_NET_BIND_SERVICE only if it is 0.
        trial: confirm with a real bind where it is safe: not when the new socket would share
            the port with a live UDP socket (it could take its datagrams), TCP without
            listen() when a listener is on the port (it could join its SO_REUSEPORT group),
            and as another uid only when the caller is root (in a forked child).
        snapshot: sockets to judge (default: a fresh snapshot of ``port``, with owners).
        scope: the ``--netns`` value the caller asked about (None: its own namespace); the
            commands suggested in ``fixes`` carry it (``--netns SCOPE``).
    Returns:
        a ``BindDiagnosis``; when the trial and the rules disagree, the trial's outcome is the
        verdict and a ``rules-trial-disagree`` warning says so.
    Raises:
        ValueError: port out of range, unknown proto, negative uid.
        InvalidInput: malformed address or unknown zone.
        BackendError: the snapshot failed.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, not {port!r}")
    proto = Proto(proto)
    if proto not in (Proto.TCP, Proto.UDP):
        raise ValueError(f"proto must be tcp or udp, not {proto.value!r}")
    if address is not None:
        address = parse_address(address)
    uid = os.geteuid() if uid is None else uid
    if uid < 0:
        raise ValueError(f"uid must be >= 0, not {uid}")
    ranges = host_port_ranges()
    binds = _binds_for(address, v6only)
    if snapshot is None:
        # the owner scan reads every process's descriptors: only pay for it when a socket
        # on the port overlaps one of the binds
        flt = SocketFilter(protos=frozenset({proto}), port_range=(port, port))
        snapshot = take_snapshot(flt, owners=False)
        if any(overlap(b.family, b.address, b.v6only, s) for s in snapshot.sockets
               for b in binds):
            snapshot = take_snapshot(flt)
    candidates = [s for s in snapshot.sockets
                  if s.proto is proto and s.local.port == port
                  and s.family in (Family.IPV4, Family.IPV6) and s.state is not State.NEW_SYN_RECV]

    # rules: per existing socket, does it overlap one of our binds, and does it block?
    findings: list[tuple[Socket, tuple[str, ...], bool | None, tuple[bool, bool] | None]] = []
    for sock in candidates:
        kinds = {k for b in binds if (k := overlap(b.family, b.address, b.v6only, sock))}
        if not kinds:
            continue
        options = socket_options(sock) if sock.owners else None
        verdict = conflict(proto, reuseaddr, reuseport, uid, sock, options)
        findings.append((sock, tuple(k for k in _OVERLAPS if k in kinds), verdict, options))
    address_errnos = [e for b in binds if (e := _address_errno(b, proto))]
    privileged = port < ranges.unprivileged_start and not _has_cap_net_bind_service(uid)
    definite = any(v is True for _, _, v, _ in findings)
    undecided = any(v is None for _, _, v, _ in findings)
    rules_errno = _kernel_order(binds[0].family, address_errnos, privileged,
                                "EADDRINUSE" if definite else None)

    # trial
    trial_result = _run_trial(binds, proto, port, reuseaddr, reuseport, uid, trial, findings)
    warnings: list[Reason] = []
    if trial_result.performed:
        final_errno = trial_result.errno
        blocking_undecided = final_errno == "EADDRINUSE" and not definite
    else:
        final_errno = rules_errno or ("EADDRINUSE" if undecided else None)
        blocking_undecided = undecided and not definite
        if undecided and not (address_errnos or privileged):
            warnings.append(Reason("options-unknown", "the SO_REUSEADDR/SO_REUSEPORT flags of "
                                   "some socket(s) on the port are unknown and no trial bind "
                                   f"could settle it ({trial_result.note}): assumed to block"))
    if trial_result.performed and trial_result.errno != rules_errno and not (
            undecided and trial_result.errno in (None, "EADDRINUSE")):
        warnings.append(Reason("rules-trial-disagree",
                               f"the rules predict {rules_errno or 'success'} but a trial bind "
                               f"got {trial_result.errno or 'success'}"))

    # reasons, blockers, fixes
    blockers: list[Socket] = []
    blocker_codes: list[tuple[str, ...]] = []
    reasons: dict[tuple[str, int], Reason] = {}
    if final_errno is not None:
        if "EINVAL" in address_errnos:
            reasons[("zone-required", 0)] = Reason(
                "zone-required", f"{address} is link-local: a bind needs its interface "
                                 f"({address}%IFACE)")
        if "EADDRNOTAVAIL" in address_errnos:
            reasons[("address-not-available", 0)] = Reason(
                "address-not-available", f"{address} is not configured in this network "
                                         "namespace")
        if privileged:
            who = "this caller" if uid == os.geteuid() else f"uid {uid}"
            reasons[("privileged-port", 0)] = Reason(
                "privileged-port", f"port {port} is below net.ipv4.ip_unprivileged_port_start "
                                   f"({ranges.unprivileged_start}) and {who} lacks "
                                   "CAP_NET_BIND_SERVICE (EACCES comes before any conflict "
                                   "check)")
        for sock, kinds, verdict, options in findings:
            if not (verdict is True or (verdict is None and blocking_undecided)):
                continue
            codes = [*kinds, *_codes(proto, reuseaddr, reuseport, uid, sock, options)]
            blockers.append(sock)
            blocker_codes.append(tuple(codes))
            for code in codes:
                reasons.setdefault((code, len(blockers)), Reason(
                    code, _message(code, sock, port, uid)))
        if (final_errno == "EADDRINUSE" and not blockers) or (
                final_errno not in ("EADDRINUSE", None) and final_errno != rules_errno
                and not (address_errnos or privileged)):
            reasons[("trial-failed", 0)] = Reason(
                "trial-failed", f"a trial bind got {final_errno} though no visible socket or "
                                "rule explains it (a socket bound to a device, a race, or a "
                                "security module)")
    if ranges.is_ephemeral(port):
        warnings.append(Reason("ephemeral-range", f"port {port} is in the ephemeral range "
                               f"{ranges.ephemeral[0]}-{ranges.ephemeral[1]}: outgoing "
                               "connections may take it at any time"))
    if ranges.is_reserved(port):
        warnings.append(Reason("reserved-port", f"port {port} is in "
                               "net.ipv4.ip_local_reserved_ports (kept for a known service)"))
    if any(s.owner_unknown is OwnerUnknown.PERMISSION for s in blockers):
        warnings.append(Reason("owners-hidden", "the holders of some blocking sockets could "
                               f"not be read ({visibility.remedy()})"))
    codes = {r.code for r in reasons.values()}
    dual_bind = any(_is_dual_wildcard(b.family, b.address, b.v6only) for b in binds)
    fixes = _fixes(codes, blockers, port, address, proto, ranges.unprivileged_start, dual_bind,
                   scope)
    return BindDiagnosis(
        port=port, proto=proto, binds=tuple(b.text(port) for b in binds), uid=uid,
        bindable=final_errno is None, errno=final_errno, reasons=tuple(reasons.values()),
        warnings=tuple(warnings), blockers=tuple(blockers), blocker_codes=tuple(blocker_codes),
        fixes=tuple(fixes), trial=trial_result, rules_errno=rules_errno,
        netns=snapshot.namespaces[0].inode if snapshot.namespaces else None,
        complete=snapshot.complete)


def _kernel_order(family: Family, address_errnos: Sequence[str], privileged: bool,
                  in_use: str | None) -> str | None:
    """The first errno the kernel returns: IPv4 checks the address before the privilege,
    IPv6 the privilege first; conflicts come last."""
    address_errno = address_errnos[0] if address_errnos else None
    order = ([address_errno, "EACCES" if privileged else None] if family is Family.IPV4
             else ["EACCES" if privileged else None, address_errno])
    return next((e for e in (*order, in_use) if e), None)


def _run_trial(binds, proto, port, reuseaddr, reuseport, uid, wanted, findings) -> Trial:
    """Run the trial bind if it is safe (see ``check_bind``)."""
    if not wanted:
        return Trial(False, note="not requested")
    if uid != os.geteuid() and os.geteuid() != 0:
        return Trial(False, note=f"only root can try a bind as uid {uid}")
    sharing = [s for s, _, verdict, _ in findings if verdict is not True]
    if proto is Proto.UDP and sharing:
        return Trial(False, note="the new socket could share the port with a live UDP socket "
                                 "and take its datagrams")
    listen = proto is Proto.TCP and not any(s.state is State.LISTEN for s, *_ in findings)
    if uid == os.geteuid():
        result = _trial_here(binds, proto, port, reuseaddr, reuseport, listen)
    else:
        ran, result = _trial_as(uid, binds, proto, port, reuseaddr, reuseport, listen)
        if not ran:
            return Trial(False, note=f"the trial process could not switch to uid {uid}")
    note = ""
    if result is None and proto is Proto.TCP and not listen:
        note = "bind only: listen() could join a live SO_REUSEPORT group and take its connections"
    return Trial(True, result, listen, note)

