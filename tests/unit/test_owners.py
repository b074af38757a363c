"""Ownership details: /proc/PID/stat parsing, the fd-scan index, process events (cgroup paths:
test_containers)."""

from __future__ import annotations

import struct
from array import array

from portscope.owners import fdscan, procevents, process


def test_fd_scan_index_lists_every_holder_in_pid_order():
    # (inode, pid << 32 | fd) pairs as two workers could return them: PIDs out of order
    pairs = array("Q", [7, 30 << 32 | 3, 8, 10 << 32 | 4, 7, 10 << 32 | 3, 7, 20 << 32 | 5])
    scan = fdscan.FdScan(pairs, [], 0, 2)
    assert scan.owners(7) == [(10, 3), (20, 5), (30, 3)]
    assert scan.owners(8) == [(10, 4)]
    assert scan.owners(9) == [] and 9 not in scan and 7 in scan
    assert len(scan) == 4 and scan.inodes() == {7, 8}


def test_read_stat_survives_parentheses_in_comm():
    import ctypes
    import os
    libc = ctypes.CDLL(None)
    pid = os.fork()
    if pid == 0:                              # child: rename itself, then wait to be read
        libc.prctl(15, b"a) S 1 (x", 0, 0, 0)  # PR_SET_NAME
        os.read(os.open("/dev/zero", os.O_RDONLY), 1)
        import time
        time.sleep(30)
        os._exit(0)
    try:
        import time
        for _ in range(100):
            comm, state, ppid, _flags, start = process.read_stat(pid)
            if comm != "python" and comm.startswith("a)"):
                break
            time.sleep(0.01)
        assert comm == "a) S 1 (x" and ppid == os.getpid() and start > 0
        info = process.process_info(pid)
        assert info.name == "a) S 1 (x" and info.pid == pid and info.started_at is not None
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_process_info_of_a_gone_process_is_none():
    import os
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert process.process_info(pid) is None


def test_fd_scan_index_with_many_shared_sockets():
    # 40 inodes held by two processes each (a pre-fork server with many listeners)
    pairs = array("Q")
    for inode in range(100, 140):
        pairs.extend((inode, 2 << 32 | inode, inode, 1 << 32 | inode))
    pairs.extend((999, 5 << 32 | 7))
    scan = fdscan.FdScan(pairs, [], 0, 3)
    assert all(scan.owners(i) == [(1, i), (2, i)] for i in range(100, 140))
    assert scan.owners(999) == [(5, 7)] and len(scan) == 81


def test_fd_scan_looks_for_repeats_among_the_suspects_only_when_told():
    pairs = array("Q", [7, 30 << 32 | 3, 8, 10 << 32 | 4, 7, 10 << 32 | 3, 9, 1 << 32 | 1,
                        9, 2 << 32 | 2])
    # the walk marked 7 (held twice) and 8 (held once, by a thread in a system call): 9,
    # not a suspect, is taken as held once (its last holder), as a caller that knows says
    scan = fdscan.FdScan(pairs, [], 0, 3, suspects={7, 8})
    assert scan.owners(7) == [(10, 3), (30, 3)] and scan.owners(8) == [(10, 4)]
    assert scan.owners(9) == [(2, 2)]
    assert fdscan.FdScan(pairs, [], 0, 3).owners(9) == [(1, 1), (2, 2)]
    # many suspects: every inode is counted
    many = set(range(100, 140)) | {7}
    assert fdscan.repeated(pairs[0::2], many) == {7: [0, 2], 9: [3, 4]}


def _proc_event(what: int, *fields: int) -> bytes:
    """One connector message as the kernel sends it: nlmsghdr, cn_msg, proc_event."""
    body = struct.pack("=IIQ", what, 0, 123) + struct.pack(f"={len(fields)}i", *fields)
    cn = struct.pack("=IIIIHH", procevents.CN_IDX_PROC, procevents.CN_VAL_PROC, 0, 0,
                     len(body), 0) + body
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


def test_proc_events_keep_processes_and_drop_threads():
    buf = b"".join([
        _proc_event(procevents.PROC_EVENT_FORK, 10, 10, 11, 11),     # a process forked
        _proc_event(procevents.PROC_EVENT_FORK, 10, 10, 12, 10),     # a thread started
        _proc_event(procevents.PROC_EVENT_EXEC, 11, 11),
        _proc_event(procevents.PROC_EVENT_EXIT, 12, 10, 0, 0),      # the thread ended
        _proc_event(procevents.PROC_EVENT_EXIT, 11, 11, 0, 0),
        _proc_event(0x200, 11, 11),                                  # a comm change
    ])
    assert procevents.parse(buf) == [procevents.ProcEvent("fork", 11, 10),
                                     procevents.ProcEvent("exec", 11),
                                     procevents.ProcEvent("exit", 11)]
    assert procevents.parse(buf[:30]) == []                          # cut short


def test_unreadable_processes_are_named_escaped_and_counted():
    """``visibility.named_pids`` of real processes: a child that named itself with a terminal
    escape and a newline is named escaped, a PID above pid_max (no process can have it) by
    number, and past three the rest are counted; the root message names them on one line."""
    import ctypes
    import os
    import time

    from portscope.owners import visibility
    libc = ctypes.CDLL(None, use_errno=True)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                              # child: rename itself, say so, wait to be read
        libc.prctl(15, b"ev\x1b[31mil\n", 0, 0, 0)   # PR_SET_NAME
        os.write(write_end, b"x")
        time.sleep(30)
        os._exit(0)
    no_pid = 2 ** 22 + 1                      # above the kernel's PID_MAX_LIMIT
    try:
        os.read(read_end, 1)
        named = visibility.named_pids({pid, no_pid})
        assert named == f"pid {pid} (ev\\x1b[31mil\\x0a), pid {no_pid}"
        assert visibility.named_pids({os.getpid(), pid, no_pid, 1, 2}, limit=3).endswith(
            " and 2 more")
        assert visibility.named_pids({pid}, limit=1) == f"pid {pid} (ev\\x1b[31mil\\x0a)"
        if os.geteuid() == 0 and visibility.hidden_from_caller() is None:
            line = visibility.obstacle(frozenset({pid}))
            assert line.endswith(f"denies it): pid {pid} (ev\\x1b[31mil\\x0a)")
            assert "\n" not in line and "\x1b" not in line
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read_end)
        os.close(write_end)
