"""How many sockets a network namespace holds, from ``/proc/net/sockstat`` and ``sockstat6``.

Reading both files costs tens of microseconds, against a few milliseconds (and up to tens of
milliseconds on a busy host) for a sock_diag dump of even an empty namespace: TCP dumps walk
the established hash and the bind hash that every namespace shares. A namespace whose counts
are zero needs no dump at all.

The counts are per network namespace (``sock_prot_inuse_get``), as seen by the thread that
reads them: read them from inside the namespace (``/proc/thread-self/net``, after
``setns()``). What each count covers (``net/ipv4/proc.c``, ``net/ipv6/proc.c``):

* ``sockets: used``: every socket that a process created in the namespace, of any family
  (TCP, UDP, UNIX, netlink, ...), including closed ones not yet freed; kernel sockets are not
  counted.
* ``TCP: inuse`` / ``TCP6: inuse``: TCP sockets in the kernel's listening or established
  hash (listeners, connections, orphans), not TIME_WAIT, not requests of the SYN queue, not
  sockets that are bound only (those sit in the bind hash alone).
* ``TCP: tw``: TIME_WAIT sockets.
* ``UDP: inuse`` / ``UDP6: inuse``: bound UDP sockets of IPv4 / IPv6.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import Family

PATH = "/proc/thread-self/net/sockstat"


@dataclass(frozen=True, slots=True)
class SocketCounts:
    """The socket counts of one network namespace.

    Attributes:
        sockets_used: sockets created by processes, any family (UNIX included).
        tcp_inuse: hashed TCP sockets of IPv4 and IPv6 (listeners, connections, orphans).
        tcp_tw: TIME_WAIT sockets.
        udp_inuse: bound UDP sockets per family (``Family.IPV4``, ``Family.IPV6``).
    """

    sockets_used: int
    tcp_inuse: int
    tcp_tw: int
    udp_inuse: dict[Family, int]

    def may_hold_tcp(self, bound_inactive: bool) -> bool:
        """False when a TCP dump of this namespace would return nothing.

        Args:
            bound_inactive: the dump asks for BOUND_INACTIVE: sockets that are bound only are
                in no count but ``sockets_used``, so any socket of a process keeps the dump.
        """
        return bool(self.tcp_inuse or self.tcp_tw or (bound_inactive and self.sockets_used))

    def may_hold_udp(self, family: Family) -> bool:
        """False when a UDP dump of ``family`` in this namespace would return nothing."""
        return bool(self.udp_inuse.get(family, 0))

    def may_hold_unix(self) -> bool:
        """False when the namespace has no socket of a process, UNIX ones included (a UNIX
        dump can then be skipped; sockstat has no UNIX count of its own)."""
        return bool(self.sockets_used)


def parse(sockstat: str, sockstat6: str) -> SocketCounts:
    """``SocketCounts`` from the texts of ``sockstat`` and ``sockstat6`` (empty when the
    kernel has no IPv6).

    Raises:
        ValueError: a count is missing or not a number.
    """
    fields: dict[str, dict[str, int]] = {}
    for line in (sockstat + "\n" + sockstat6).splitlines():
        label, _, rest = line.partition(":")
        words = rest.split()
        fields[label.strip()] = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    try:
        return SocketCounts(
            sockets_used=fields["sockets"]["used"],
            tcp_inuse=fields["TCP"]["inuse"] + fields.get("TCP6", {}).get("inuse", 0),
            tcp_tw=fields["TCP"]["tw"],
            udp_inuse={Family.IPV4: fields["UDP"]["inuse"],
                       Family.IPV6: fields.get("UDP6", {}).get("inuse", 0)})
    except KeyError as exc:
        raise ValueError(f"sockstat: no count {exc}") from None


def read() -> SocketCounts | None:
    """The counts of the calling thread's network namespace; None when they cannot be read
    (no ``/proc``, or an unexpected format): then nothing may be skipped.

    Source: ``/proc/thread-self/net/sockstat`` and ``sockstat6``.
    """
    texts = []
    for path in (PATH, PATH + "6"):
        try:
            with open(path, "rb") as f:
                texts.append(f.read().decode("ascii", "replace"))
        except FileNotFoundError:
            if path == PATH:
                return None
            texts.append("")          # no IPv6 in this kernel: no IPv6 socket either
        except OSError:
            return None
    try:
        return parse(*texts)
    except ValueError:
        return None
