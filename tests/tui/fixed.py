"""A fixed snapshot for deterministic screenshots and benchmarks: made-up sockets and
processes (no real host data), a fixed capture time, and a clock that always says 5 ms."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from portscope.types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown,
                             ProcessInfo, Proto, Snapshot, Socket, State)

TAKEN_AT = datetime(2026, 12, 5, 21, 30, 0, tzinfo=timezone.utc)
NETNS = 4026531840


def process(pid, name, user="root", uid=0, unit=None, container=None, exe=None, cmdline=None):
    return ProcessInfo(pid=pid, ppid=1, name=name, exe=exe or f"/usr/sbin/{name}",
                       cmdline=tuple(cmdline or (f"/usr/sbin/{name}",)), user=user, uid=uid,
                       started_at=datetime(2026, 12, 5, 8, 0, pid % 60, tzinfo=timezone.utc),
                       unit=unit, container=container)


NGINX = process(812, "nginx", "root", 0, unit="nginx.service",
                cmdline=("nginx: master process /usr/sbin/nginx",))
NGINX_WORKER = process(813, "nginx", "www-data", 33, unit="nginx.service",
                       cmdline=("nginx: worker process",))
SSHD = process(640, "sshd", unit="ssh.service", cmdline=("sshd: /usr/sbin/sshd -D",))
POSTGRES = process(901, "postgres", "postgres", 108, unit="postgresql@15-main.service",
                   exe="/usr/lib/postgresql/15/bin/postgres")
RESOLVED = process(455, "systemd-resolve", "systemd-resolve", 990,
                   unit="systemd-resolved.service", exe="/lib/systemd/systemd-resolved")
REDIS = process(1432, "redis-server", "redis", 111, exe="/usr/bin/redis-server")
CURL = process(2210, "curl", "alice", 1000, exe="/usr/bin/curl",
               cmdline=("curl", "http://127.0.0.1/"))


def sock(proto, family, local, remote, state, inode, owners=(), unknown=None, uid=0,
         container=None):
    return Socket(proto=Proto(proto), family=Family(family), local=Endpoint(*local),
                  remote=Endpoint(*remote) if remote else None, state=State(state),
                  inode=inode, uid=uid, netns=NETNS, v6only=False if family == "ipv6" else None,
                  owners=tuple(Owner(p.pid, fd, p) for p, fd in owners),
                  owner_unknown=OwnerUnknown(unknown) if unknown else None, cookie=inode,
                  container=container)


WEB = Container("3f2a" + "0" * 60, name="web", runtime="docker", image="nginx:1.27")


def sockets(extra_listener: bool = False) -> tuple[Socket, ...]:
    rows = [
        sock("tcp", "ipv4", ("0.0.0.0", 22), None, "LISTEN", 1101, [(SSHD, 3)]),
        sock("tcp", "ipv6", ("::", 22), None, "LISTEN", 1102, [(SSHD, 4)]),
        sock("tcp", "ipv4", ("0.0.0.0", 80), None, "LISTEN", 1201,
             [(NGINX, 6), (NGINX_WORKER, 6)]),
        sock("tcp", "ipv4", ("127.0.0.1", 5432), None, "LISTEN", 1301, [(POSTGRES, 5)]),
        sock("udp", "ipv4", ("127.0.0.53", 53), None, "UNCONN", 1401, [(RESOLVED, 12)]),
        sock("tcp", "ipv4", ("127.0.0.1", 6379), None, "LISTEN", 1501, [(REDIS, 6)],
             container=WEB),
        sock("tcp", "ipv4", ("0.0.0.0", 9100), None, "LISTEN", 1601, (), "permission", 65534),
        sock("tcp", "ipv4", ("127.0.0.1", 80), ("127.0.0.1", 51234), "ESTABLISHED", 1701,
             [(NGINX_WORKER, 9)]),
        sock("tcp", "ipv4", ("127.0.0.1", 51234), ("127.0.0.1", 80), "ESTABLISHED", 1702,
             [(CURL, 5)]),
        sock("tcp", "ipv4", ("127.0.0.1", 80), ("127.0.0.1", 51200), "TIME_WAIT", 0, (),
             "kernel"),
    ]
    if extra_listener:
        rows.insert(4, sock("tcp", "ipv4", ("0.0.0.0", 8080), None, "LISTEN", 1801,
                            [(process(2301, "python3", "alice", 1000,
                                      exe="/usr/bin/python3.11",
                                      cmdline=("python3", "-m", "http.server", "8080")), 3)]))
    return tuple(rows)


def snapshot(extra_listener: bool = False) -> Snapshot:
    socks = sockets(extra_listener)
    missing = sum(1 for s in socks if s.owner_unknown is OwnerUnknown.PERMISSION)
    return Snapshot(sockets=socks, taken_at=TAKEN_AT, hostname="web-01", backend="netlink",
                    complete=not missing, warnings=(
                        f"{missing} socket(s) have no visible owner: 1 process(es) could not "
                        "be read (run as root, or grant CAP_SYS_PTRACE and "
                        "CAP_DAC_READ_SEARCH)",) if missing else (),
                    namespaces=(NetNamespace(NETNS),), unreadable_pids=1 if missing else 0)


def fixed_clock(step_s: float = 0.005):
    """A clock that advances ``step_s`` per reading: every scan 'costs' exactly that."""
    ticks = itertools.count()
    return lambda: next(ticks) * step_s
