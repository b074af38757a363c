"""The BPF fd scan (owners/bpf.py) against the /proc/*/fd scan, on real processes and sockets."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from portscope import SocketFilter, namespaces, take_snapshot
from portscope.owners import bpf
from portscope.owners import fdscan

pytestmark = pytest.mark.skipif(not bpf.usable(),
                                reason="BPF iterators cannot run here (not root, no BTF, "
                                       "or a PID namespace)")

SHARED_AND_PAIRED = """
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::1", 0))
    a, b = socket.socketpair()
    kids = [fork_sleeper() for _ in range(2)]
    ready(port=l.getsockname()[1], kids=kids)
"""


def holdings(pairs, pids) -> set[tuple[int, int, int]]:
    """``(inode, pid, fd)`` of ``pairs`` (flat inode, pid << 32 | fd) held by ``pids``."""
    found = set()
    for inode, holder in zip(pairs[0::2], pairs[1::2]):
        if holder >> 32 in pids:
            found.add((inode, holder >> 32, holder & 0xFFFFFFFF))
    return found


def test_bpf_and_proc_scans_find_the_same_socket_descriptors(holder):
    h = holder(SHARED_AND_PAIRED)
    pids = {h.pid, *h.info["kids"]}
    scan = bpf.IterScan()
    pairs = scan.result()
    assert pids <= scan.tasks().visible
    from_proc = fdscan._scan(sorted(pids), None)[0]
    found = holdings(pairs, pids)
    assert found == holdings(from_proc, pids)
    # listener, UDP socket, both ends of the pair, stdin/stdout are pipes: 4 sockets x 3 pids
    assert len(found) == 12
    for inode, pid, fd in found:
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"


def test_a_thread_with_its_own_descriptor_table_is_seen(holder):
    """unshare(CLONE_FILES) in a thread: its descriptors are not in /proc/PID/fd (the
    leader's table), yet the socket it opens there is held by the process."""
    h = holder("""
        import threading
        CLONE_FILES = 0x400
        box = {}
        def private():
            if _libc.unshare(CLONE_FILES) != 0:
                box["error"] = ctypes.get_errno()
            else:
                s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
                box["port"], box["fd"], box["s"] = s.getsockname()[1], s.fileno(), s
            done.set()
            time.sleep(3600)
        done = threading.Event()
        threading.Thread(target=private, daemon=True).start()
        done.wait()
        ready(port=box.get("port"), fd=box.get("fd"), error=box.get("error"))
    """)
    assert h.info["error"] is None
    port, fd = h.info["port"], h.info["fd"]
    listener = [s for s in take_snapshot(SocketFilter(port_range=(port, port))).sockets]
    assert len(listener) == 1
    assert [(o.pid, o.fd) for o in listener[0].owners] == [(h.pid, fd)]
    proc_links = {os.readlink(f"/proc/{h.pid}/fd/{n}") for n in os.listdir(f"/proc/{h.pid}/fd")}
    assert f"socket:[{listener[0].inode}]" not in proc_links


def test_a_pid_hidden_from_the_iterators_is_scanned_through_proc(holder, monkeypatch):
    """A sandbox may hide a process from the iterators (this VM's PID 1 is): that PID's
    sockets come from /proc instead, and are not lost."""
    h = holder(SHARED_AND_PAIRED)
    real_tasks, real_result = bpf.IterScan.tasks, bpf.IterScan.result

    def tasks(self):
        seen = real_tasks(self)
        return bpf.Tasks(seen.pids, seen.visible - {h.pid}, seen.netns)

    def result(self):
        pairs = real_result(self)
        kept = [x for inode, holder in zip(pairs[0::2], pairs[1::2]) if holder >> 32 != h.pid
                for x in (inode, holder)]
        return type(pairs)("Q", kept)

    monkeypatch.setattr(bpf.IterScan, "tasks", tasks)
    monkeypatch.setattr(bpf.IterScan, "result", result)
    scan = fdscan.start_scan()
    assert isinstance(scan, fdscan.BpfScan)
    result = scan.result()
    port = h.info["port"]
    (listener,) = [s for s in take_snapshot(SocketFilter(port_range=(port, port))).sockets]
    assert sorted(pid for pid, _ in result.owners(listener.inode)) == sorted(
        [h.pid, *h.info["kids"]])


def test_unusable_programs_fall_back_to_proc(holder, monkeypatch, tmp_path):
    h = holder(SHARED_AND_PAIRED)
    bogus = tmp_path / "vmlinux"
    bogus.write_bytes(b"\x00" * 64)
    monkeypatch.setattr(bpf, "BTF_PATH", str(bogus))
    monkeypatch.setattr(bpf, "CACHE_PATH", str(tmp_path / "cache" / "btf-layout"))
    broken = bpf.IterScan()
    for wait in (broken.tasks, broken.result):
        with pytest.raises(OSError, match="BTF"):
            wait()
    scan = fdscan.start_scan()
    assert isinstance(scan, fdscan.BpfScan)
    port = h.info["port"]
    (listener,) = take_snapshot(SocketFilter(port_range=(port, port))).sockets
    assert sorted(pid for pid, _ in scan.result().owners(listener.inode)) == sorted(
        [h.pid, *h.info["kids"]])


def test_task_iterator_sees_each_process_network_namespace():
    """The namespaces the task iterator reports are those /proc/PID/ns/net shows, a process
    in a fresh namespace included."""
    child = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        own = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{child.pid}/ns/net") == own:      # not yet unshared
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tasks = bpf.IterScan().tasks()
        from_proc = namespaces._netns_by_pid()
        assert tasks.netns[child.pid] == from_proc[child.pid] != from_proc[os.getpid()]
        both = tasks.netns.keys() & from_proc.keys()
        assert len(both) > 10
        assert {pid: tasks.netns[pid] for pid in both} == {pid: from_proc[pid] for pid in both}
    finally:
        child.kill()
        child.wait()


def test_environment_switch_turns_the_bpf_path_off(monkeypatch):
    monkeypatch.setenv(bpf.ENV, "proc")
    assert not bpf.usable()
    assert isinstance(fdscan.start_scan(), fdscan.PendingScan)


def test_layout_cache_is_root_only_and_keyed(monkeypatch, tmp_path):
    path = tmp_path / "run" / "btf-layout"
    monkeypatch.setattr(bpf, "CACHE_PATH", str(path))
    parsed = bpf.parse_btf(bpf._read_all(bpf.BTF_PATH))
    assert bpf._layout() == parsed                 # parsed, then written
    info = os.stat(path)
    assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert parsed["task_struct.tgid:size"] == 4 and parsed["inode.i_mode:size"] == 2
    assert parsed["file.f_inode:size"] == parsed["inode.i_sb:size"] == 8
    assert parsed["net.ns.inum:size"] == 4
    key = path.read_text().splitlines()[0]
    assert bpf._read_cache(key) == parsed
    assert bpf._read_cache(key + "x") is None      # another boot or kernel
    os.chmod(path, 0o666)
    assert bpf._read_cache(key) is None            # writable by others: not trusted
    os.chmod(path, 0o600)
    path.write_text(key + "\nbpf_iter_task 12\n")
    assert bpf._read_cache(key) is None            # incomplete
    path.write_text("garbage\n")
    assert bpf._layout() == parsed                 # rewritten


@pytest.mark.parametrize("argv, starts, port", [
    (["listeners"], True, None), (["who", "8080"], True, 8080), (["8080"], True, 8080),
    (["[::1]:8080", "-t"], True, 8080),
    (["who", "127.0.0.1:8080", "--json"], True, 8080), (["who", "https"], True, 443),
    (["who", "--json", "8080"], True, None), (["who", "/run/x.sock"], True, None),
    (["who", "no-such-service"], True, None), (["list", "-a", "--json"], True, None),
    (["list", "-x", "-a", "--json"], True, None), (["list", "-xa"], True, None),
    (["list", "-x", "-t"], True, None), (["@name"], True, None),
    (["list", "-n"], False, None), (["list", "-tn"], False, None),
    (["list", "--no-owners"], False, None), (["list", "--backend", "psutil"], False, None),
    (["who", "-h"], False, None), (["services", "443"], False, None),
])
def test_cli_prefetches_the_scan_only_for_commands_that_scan(argv, starts, port):
    from portscope import cli
    bpf.take_prefetched()
    cli._prefetch(argv)
    if port is not None:                   # a scan of one port serves no other question
        assert bpf.take_prefetched() is None
        cli._prefetch(argv)
    # UNIX sockets alone (-x, a path, @name): descriptors only, no TCP/UDP records
    unix_only = any(a in ("-x", "-xa") for a in argv) and "-t" not in argv \
        or argv[-1][:1] in "/@"
    if starts:                              # a scan of the other kind is dropped
        assert bpf.take_prefetched(port, records=unix_only) is None
        cli._prefetch(argv)
    scan = bpf.take_prefetched(port, records=not unix_only)
    assert (scan is not None) == starts
    if scan is not None:
        assert scan.records_asked == (not unix_only)
        assert len(scan.result()) % 2 == 0 and scan.tasks().visible
        assert scan.port == port           # this kernel reads one port's sockets
