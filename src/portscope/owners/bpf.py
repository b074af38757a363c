"""The fd scan's fast path: socket descriptors of every process from BPF iterators (Linux).

A ``/proc/*/fd`` scan pays one ``readlink`` per descriptor of every process, sockets or not
(about 2-3 us each). A BPF ``task_file`` iterator walks the same descriptor tables inside the
kernel and hands back only the sockets, 16 bytes each: measured 81 ms against 1,070 ms for one
Python ``/proc`` scan of 237,000 descriptors (200,706 sockets), with identical results.

How: a program of 27 instructions, assembled here, is loaded with ``bpf(BPF_PROG_LOAD)`` as a
tracing program attached to the iterator target ``bpf_iter_task_file``, then read through
``bpf(BPF_ITER_CREATE)``. For each descriptor whose inode is a socket (``S_IFSOCK`` on sockfs)
it writes ``(inode, tgid << 32 | fd)``; where the kernel allows (``bpf_sock_from_file``,
Linux >= 5.11), a longer program writes a 128-byte record instead, with the fields of the
TCP or UDP socket behind the descriptor as ``inet_diag`` would report them (``sockets.py``
decodes them), so that the snapshot need not dump every network namespace for them; for a
port lookup, only of the sockets on that port, the others being counted per namespace,
family, kind and state in a BPF hash map (``IterScan(port)``). A
second program on ``bpf_iter_task`` lists the thread groups the iterators visit, with each
one's network namespace (which spares namespace discovery a ``/proc/PID/ns/net`` readlink per
process). A PID that ``/proc`` lists but the
iterators do not visit (a sandbox may hide one) is scanned through ``/proc`` as before, so its
sockets are still attributed, or labelled ``permission`` when it cannot be read there either.
Threads that unshared their descriptor table (``unshare(CLONE_FILES)``) are walked too, which
``/proc/PID/fd`` (the leader's table) misses.

Struct offsets (``task_struct.tgid/pid/nsproxy``, ``nsproxy.net_ns``, ``net.ns.inum``,
``file.f_inode``, ``inode.i_mode/i_ino/i_sb``, ``super_block.s_magic``) and the iterator
targets' BTF ids come from the kernel's own BTF, ``/sys/kernel/btf/vmlinux``: about 30 ms to
parse, so the result is kept in ``/run/portscope/btf-layout`` (root only), keyed on the boot id.

Needs: Linux >= 5.8 with BTF, a 64-bit x86 or Arm or RISC-V machine, CAP_SYS_ADMIN (or CAP_BPF
and CAP_PERFMON), and the initial PID namespace (the programs report global PIDs). Anything
else, or ``PORTSCOPE_FDSCAN=proc`` in the environment, leaves the ``/proc`` scan in charge;
every failure here is an ``OSError`` for the caller to fall back on.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import threading
from array import array

BTF_PATH = "/sys/kernel/btf/vmlinux"
CACHE_PATH = "/run/portscope/btf-layout"
ENV = "PORTSCOPE_FDSCAN"              # "proc" turns this path off
_INIT_PID_NS = "pid:[4026531836]"     # PROC_PID_INIT_INO: the initial PID namespace
_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280}
_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39

# include/uapi/linux/bpf.h
_MAP_CREATE, _PROG_LOAD, _LINK_CREATE, _ITER_CREATE, _MAP_LOOKUP_BATCH = 0, 5, 28, 33, 24
_MAP_TYPE_HASH, _F_NO_PREALLOC = 1, 1
_PROG_TYPE_TRACING = 26
_TRACE_ITER = 28
_FUNC_SEQ_WRITE = 127
_SOCKFS_MAGIC = 0x534F434B
_S_IFMT, _S_IFSOCK = 0o170000, 0o140000

# BTF (Documentation/bpf/btf.rst): kinds and the bytes that follow each type's 12-byte header
_KIND_INT, _KIND_PTR, _KIND_STRUCT, _KIND_UNION, _KIND_ENUM = 1, 2, 4, 5, 6
_KIND_FUNC, _KIND_ENUM64 = 12, 19
_KINDS_ALIAS = frozenset({8, 9, 10, 11, 18})   # typedef, volatile, const, restrict, type tag
_EXTRA = [0] * 32
_EXTRA[1] = _EXTRA[14] = _EXTRA[17] = 4         # int, var, decl tag
_EXTRA[3] = 12                                  # array
_PER_ITEM = [0] * 32
_PER_ITEM[4] = _PER_ITEM[5] = _PER_ITEM[15] = _PER_ITEM[19] = 12   # members, datasec, enum64
_PER_ITEM[6] = _PER_ITEM[13] = 8                # enum values, function parameters
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")

_TARGETS = ("bpf_iter_task_file", "bpf_iter_task")
_FIELDS = (("task_struct", "tgid"), ("task_struct", "pid"), ("task_struct", "nsproxy"),
           ("nsproxy", "net_ns"), ("net", "ns", "inum"), ("file", "f_inode"),
           ("inode", "i_mode"), ("inode", "i_ino"), ("inode", "i_sb"),
           ("super_block", "s_magic"))
# What the socket records read (``sockets.py`` decodes them as inet_diag would): when one is
# missing from this kernel's BTF, the task_file program writes descriptors only.
_SOCKET_FIELDS = (
    ("socket", "sk"), ("sock", "__sk_common", "skc_family"), ("sock", "sk_type"),
    ("sock", "sk_protocol"), ("sock", "__sk_common", "skc_num"),
    ("sock", "__sk_common", "skc_state"), ("sock", "__sk_common", "skc_net", "net"),
    ("sock", "__sk_common", "skc_dport"), ("sock", "__sk_common", "skc_ipv6only"),
    ("sock", "__sk_common", "skc_rcv_saddr"), ("sock", "__sk_common", "skc_daddr"),
    ("sock", "__sk_common", "skc_v6_rcv_saddr"), ("sock", "__sk_common", "skc_v6_daddr"),
    ("sock", "__sk_common", "skc_bound_dev_if"), ("sock", "sk_uid", "val"),
    ("sock", "sk_ack_backlog"), ("sock", "sk_max_ack_backlog"),
    ("sock", "sk_backlog", "rmem_alloc", "counter"), ("sock", "sk_wmem_alloc", "refs", "counter"),
    ("tcp_sock", "rcv_nxt"), ("tcp_sock", "copied_seq"), ("tcp_sock", "write_seq"),
    ("tcp_sock", "snd_una"), ("tcp_sock", "inet_conn", "icsk_accept_queue", "qlen", "counter"),
    ("udp_sock", "forward_deficit"), ("sock", "__sk_common", "skc_cookie", "counter"))
# A file's reference count, where the port-limited program (``_socket_program``) tells a
# socket that one descriptor holds from one that several may hold: ``file_ref_t`` (Linux
# >= 6.13) counts one reference as 0, ``atomic_long_t f_count`` before it as 1.
_REF_FIELDS = {("file", "f_ref", "refcnt", "counter"): 0, ("file", "f_count", "counter"): 1}
_WIDE = (("sock", "__sk_common", "skc_v6_rcv_saddr"), ("sock", "__sk_common", "skc_v6_daddr"))
_LAYOUT_VERSION = "3"                 # of the cached layout: bumped when the fields change


def usable() -> bool:
    """True when this path may be tried here (it can still fail: see the module text)."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV) == "proc":
        return False
    if os.uname().machine not in _NR_BPF or sys.maxsize < 2 ** 63 - 1:
        return False
    try:
        if os.readlink("/proc/self/ns/pid") != _INIT_PID_NS or not os.path.exists(BTF_PATH):
            return False
        with open("/proc/self/status", "rb") as f:
            status = f.read()
    except OSError:
        return False
    at = status.find(b"\nCapEff:")
    caps = int(status[at + 8:].split(None, 1)[0], 16) if at >= 0 else 0
    return bool(caps >> _CAP_SYS_ADMIN & 1 or (caps >> _CAP_BPF & 1 and caps >> _CAP_PERFMON & 1))


class Tasks:
    """What the ``task`` iterator saw, with the PIDs ``/proc`` listed just before it ran.

    Attributes:
        pids: PIDs listed in ``/proc``.
        visible: thread group ids the iterators visit.
        netns: thread group id -> inode of its network namespace (of its leader thread, as
            ``/proc/PID/ns/net`` shows it), for processes that have one (not zombies).
    """

    __slots__ = ("pids", "visible", "netns")

    def __init__(self, pids: list[int], visible: set[int], netns: dict[int, int]) -> None:
        self.pids, self.visible, self.netns = pids, visible, netns


class IterScan:
    """A BPF scan under way in a thread (the iterators block in ``read``, without the GIL, so
    the caller's socket dump runs beside it on another CPU): first the ``task`` iterator
    (``tasks()``), then the ``task_file`` iterator (``result()``).

    ``port`` (1-65535, or None): read whole socket records only of the TCP and UDP sockets
    on that local port, and of every other socket only how many there are per namespace,
    family, kind and state (``_socket_program``): a port lookup then needs no sock_diag dump
    of a namespace whose counts match. ``port`` says afterwards whether that was done (None
    when the kernel could not: every socket's record was read, or descriptors only).
    ``records``: False reads descriptors only (a listing of UNIX sockets alone has no use for
    the TCP and UDP records: 16 bytes a socket instead of 128, about a third of the walk's
    time).
    """

    def __init__(self, port: int | None = None, records: bool = True) -> None:
        self.port = self.port_asked = port
        self.records_asked = records
        self._tasks: Tasks | OSError | None = None
        self._pairs: array | OSError | None = None
        self._records: bytes | None = None
        self._counts: dict[int, int] | None = None
        self._marked = False
        self._v6only_bit = 0
        self._held = None
        self._tasks_ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portscope-bpfiter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
            layout = _layout()
            self._tasks = _tasks(pids, _iterate(_task_program(layout), layout["bpf_iter_task"]))
            self._tasks_ready.set()
            self._pairs = self._walk_files(layout)
        except Exception as exc:  # noqa: BLE001 - BTF not as expected: the /proc scan takes over
            error = exc if isinstance(exc, OSError) else \
                OSError(f"kernel BTF: {type(exc).__name__}: {exc}")
            self._pairs = error
            if self._tasks is None:
                self._tasks = error
        finally:
            self._tasks_ready.set()

    def _walk_files(self, layout: dict[str, int]) -> array:
        """Run the ``task_file`` iterator: with socket records when this kernel lets the
        program read them (kept for ``sockets()``), else descriptors only."""
        target = layout["bpf_iter_task_file"]
        if self.port is not None and has_port_program(layout):
            try:
                self._records, self._counts = _iterate_counting(layout, target, self.port)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EINVAL, errno.EPERM, errno.ENOMEM):
                    raise
        if self._records is None:
            self.port = None        # every socket's record, as without a port
        if self.records_asked and has_socket_fields(layout):
            try:
                records = self._records if self._records is not None else \
                    _iterate(_socket_program(layout), target)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EINVAL):
                    raise
            else:       # an older verifier refused the program: descriptors only
                self._records = records
                self._marked = has_shared_mark(layout)
                self._v6only_bit = layout[_SOCKET_PREFIX + "skc_ipv6only:bit"]
                words = array("Q", records)
                pairs = array("Q", bytes(16 * (len(words) // (SOCKET_RECORD_BYTES // 8))))
                pairs[0::2] = words[0::SOCKET_RECORD_BYTES // 8]
                pairs[1::2] = words[1::SOCKET_RECORD_BYTES // 8]
                return pairs
        return array("Q", _iterate(_task_file_program(layout), target))

    def sockets(self, port: int | None = None):
        """Wait for the scan and return the TCP and UDP sockets it read
        (``sockets.HeldSockets``): every socket when ``port`` is None, else those on
        ``port``; None when it did not read those (this kernel's program read descriptors
        only, or the scan was not limited to ``port``, or was).

        Raises:
            OSError: as ``tasks()``.
        """
        self.result()
        if self._records is None or self.port != port:
            return None
        if self._held is None:
            from .sockets import HeldSockets
            self._held = HeldSockets(self._records, self._v6only_bit, self.port,
                                     self._counts, self._marked)
        return self._held

    def tasks(self) -> Tasks:
        """Wait for the ``task`` iterator (about 1 ms per 1,000 tasks).

        Raises:
            OSError: the programs could not be loaded or read (no privilege, no BTF, an old
                kernel, a lockdown): fall back to ``/proc``.
        """
        self._tasks_ready.wait()
        if isinstance(self._tasks, OSError):
            raise self._tasks
        assert self._tasks is not None
        return self._tasks

    def marked(self) -> set[int] | None:
        """After ``result()``: the inodes of the sockets that several descriptors may hold
        (their records carry ``SHARED_BYTE``); None when the walk did not mark them
        (descriptors only, or no reference count in this kernel's BTF)."""
        if self._records is None or not self._marked:
            return None
        from .sockets import marked_inodes
        return marked_inodes(self._records)

    def result(self) -> array:
        """Wait for the whole scan: flat ``array('Q')`` of ``(inode, tgid << 32 | fd)`` for
        every socket descriptor of every visible process.

        Raises:
            OSError: as ``tasks()``.
        """
        self._thread.join()
        if isinstance(self._pairs, OSError):
            raise self._pairs
        assert self._pairs is not None
        return self._pairs


def _tasks(pids: list[int], records: bytes) -> Tasks:
    """``Tasks`` from the task program's ``(tgid << 32 | pid, netns inode)`` records."""
    fields = array("Q", records)
    visible: set[int] = set()
    netns: dict[int, int] = {}
    for ids, inode in zip(fields[0::2], fields[1::2]):
        tgid = ids >> 32
        visible.add(tgid)
        if inode and tgid == ids & 0xFFFFFFFF:
            netns[tgid] = inode
    return Tasks(pids, visible, netns)


_prefetched: IterScan | None = None


def prefetch(port: int | None = None, records: bool = True) -> None:
    """Start a scan now (``IterScan(port, records)``), for the next ``take_prefetched()``
    (the CLI calls this first thing, so that the kernel walks the descriptor tables while
    Python imports the rest)."""
    global _prefetched
    _prefetched = IterScan(port, records)


def take_prefetched(port: int | None = None, records: bool = True) -> IterScan | None:
    """The scan ``prefetch()`` started, once, when it was started with these arguments; else
    None (a scan of something else is dropped)."""
    global _prefetched
    scan, _prefetched = _prefetched, None
    if scan is not None and (scan.port_asked, scan.records_asked) != (port, records):
        return None
    return scan


# ---------------------------------------------------------------------------------------------
# The programs

_INSN = struct.Struct("=BBhi")
_LOAD = {1: 0x71, 2: 0x69, 4: 0x61, 8: 0x79}          # BPF_LDX | BPF_MEM | size
_STORE_DW, _MOV_REG, _MOV_IMM, _ADD_IMM = 0x7B, 0xBF, 0xB7, 0x07
_AND_IMM, _LSH_IMM, _OR_REG = 0x57, 0x67, 0x4F
_JEQ_IMM, _JNE_IMM, _CALL, _EXIT = 0x15, 0x55, 0x85, 0x95
_JA, _STORE_IMM_DW, _STORE_IMM_B, _JLE_IMM, _LD_IMM64 = 0x05, 0x7A, 0x72, 0xB5, 0x18
_PSEUDO_MAP_FD = 1
_STORE = {1: 0x73, 2: 0x6B, 4: 0x63, 8: 0x7B}         # BPF_STX | BPF_MEM | size
_FUNC_MAP_LOOKUP, _FUNC_MAP_UPDATE = 1, 2
_FUNC_PROBE_READ_KERNEL, _FUNC_SOCK_FROM_FILE = 113, 162
_OUT = object()                                        # jump target: the program's end


def _insn(code: int, dst: int = 0, src: int = 0, off=0, imm: int = 0) -> tuple:
    return code, dst, src, off, imm


def _assemble(body: list) -> bytes:
    """``body`` then ``r0 = 0; exit``. A string in ``body`` is a label; a jump whose offset is
    a label goes there, one whose offset is ``_OUT`` goes to the end."""
    labels: dict[object, int] = {_OUT: sum(1 for item in body if not isinstance(item, str))}
    insns = []
    for item in body:
        if isinstance(item, str):
            labels[item] = len(insns)
        else:
            insns.append(item)
    code = [_INSN.pack(op, dst | src << 4,
                       labels[off] - (pc + 1) if off is _OUT or isinstance(off, str) else off,
                       imm)
            for pc, (op, dst, src, off, imm) in enumerate(insns)]
    code.append(_INSN.pack(_MOV_IMM, 0, 0, 0))
    code.append(_INSN.pack(_EXIT, 0, 0, 0))
    return b"".join(code)


def _load(layout: dict[str, int], dst: int, src: int, field: str) -> tuple:
    """``dst = *(src + offset of field)``, sized as the field."""
    return _insn(_LOAD[layout[field + ":size"]], dst, src, layout[field])


def _emit(length: int) -> list[tuple]:
    """``bpf_seq_write(ctx->meta->seq, fp - length, length)``; r6 holds ctx."""
    return [_insn(_LOAD[8], 1, 6, 0), _insn(_LOAD[8], 1, 1, 0),        # meta, meta->seq
            _insn(_MOV_REG, 2, 10), _insn(_ADD_IMM, 2, imm=-length),
            _insn(_MOV_IMM, 3, imm=length), _insn(_CALL, imm=_FUNC_SEQ_WRITE)]


def _task_file_program(layout: dict[str, int]) -> bytes:
    """For ``struct bpf_iter__task_file {meta; task; u32 fd; file}`` (8-byte slots): write
    ``(inode, tgid << 32 | fd)`` when the file is a socket."""
    return _assemble([
        _insn(_MOV_REG, 6, 1),                                   # r6 = ctx
        _insn(_LOAD[8], 7, 6, 8), _insn(_JEQ_IMM, 7, off=_OUT),  # r7 = task
        _insn(_LOAD[8], 8, 6, 24), _insn(_JEQ_IMM, 8, off=_OUT),  # r8 = file
        _load(layout, 9, 8, "file.f_inode"),
        _load(layout, 2, 9, "inode.i_mode"), _insn(_AND_IMM, 2, imm=_S_IFMT),
        _insn(_JNE_IMM, 2, off=_OUT, imm=_S_IFSOCK),
        _load(layout, 2, 9, "inode.i_sb"), _load(layout, 2, 2, "super_block.s_magic"),
        _insn(_JNE_IMM, 2, off=_OUT, imm=_SOCKFS_MAGIC),
        _load(layout, 2, 9, "inode.i_ino"), _insn(_STORE_DW, 10, 2, -16),
        _load(layout, 2, 7, "task_struct.tgid"), _insn(_LSH_IMM, 2, imm=32),
        _insn(_LOAD[4], 3, 6, 16), _insn(_OR_REG, 2, 3),         # | ctx->fd
        _insn(_STORE_DW, 10, 2, -8),
        *_emit(16)])


SOCKET_RECORD_BYTES = 128
_SOCKET_PREFIX = "sock.__sk_common."
_SEQ_FIELDS = ("tcp_sock.rcv_nxt", "tcp_sock.copied_seq", "tcp_sock.write_seq",
               "tcp_sock.snd_una")
_SEQ_SPAN_MAX = 256                   # bytes of stack below the record
_TCP_LISTEN = 10


def has_socket_fields(layout: dict[str, int]) -> bool:
    """True when ``layout`` has every field the socket records read (and the TCP sequence
    numbers lie close enough together to be read at once)."""
    if not all(".".join(path) in layout for path in _SOCKET_FIELDS):
        return False
    seq = [layout[field] for field in _SEQ_FIELDS]
    return max(seq) + 4 - min(seq) <= _SEQ_SPAN_MAX


def _socket_program(layout: dict[str, int], port: int | None = None,
                    counts_fd: int = -1) -> bytes:
    """For ``struct bpf_iter__task_file``: for every socket descriptor, a 128-byte record
    (``sockets.RECORD``): inode, ``tgid << 32 | fd``, and for a TCP or UDP socket the fields
    ``inet_diag`` reports of it (``inet_diag_msg_common_fill``, ``tcp_diag_get_info``,
    ``udp_diag_get_info``), read from the ``struct sock`` behind the file
    (``bpf_sock_from_file``), and for any other socket its network namespace; the state
    reads as 0 when the socket has no local port (it is in no hash table: no dump would show
    it). The cookie is read as it is: 0 until something asked the kernel for it.

    With ``port`` (1-65535) and ``counts_fd`` (a hash map of 8-byte keys and values): whole
    records only for the TCP and UDP sockets whose local port is ``port``; of any other
    socket that one descriptor holds (its file's reference count: the table's and the
    iterator's), nothing but a count, by the record's third word (namespace, family, kind,
    state) as key, in the map; of one that more may hold, the record's first three words
    (inode, holder, that key: enough to count each socket once)."""
    def load(dst: int, src: int, field: str) -> tuple:
        return _load(layout, dst, src, field)

    def put(at: int, reg: int, field: str) -> tuple:
        return _insn(_STORE[layout[field + ":size"]], 10, reg, at - SOCKET_RECORD_BYTES)

    def copy(at: int, field: str) -> list[tuple]:       # record[at] = sk->field
        return [load(2, 9, field), put(at, 2, field)]

    common = _SOCKET_PREFIX
    first = min(layout[field] for field in _SEQ_FIELDS)
    span = max(layout[field] for field in _SEQ_FIELDS) + 4 - first
    v6 = [(40, common + "skc_v6_rcv_saddr"), (56, common + "skc_v6_daddr")]
    return _assemble([
        _insn(_MOV_REG, 6, 1),                                   # r6 = ctx
        _insn(_LOAD[8], 7, 6, 8), _insn(_JEQ_IMM, 7, off=_OUT),  # r7 = task
        _insn(_LOAD[8], 8, 6, 24), _insn(_JEQ_IMM, 8, off=_OUT),  # r8 = file
        load(9, 8, "file.f_inode"),
        load(2, 9, "inode.i_mode"), _insn(_AND_IMM, 2, imm=_S_IFMT),
        _insn(_JNE_IMM, 2, off=_OUT, imm=_S_IFSOCK),
        load(2, 9, "inode.i_sb"), load(2, 2, "super_block.s_magic"),
        _insn(_JNE_IMM, 2, off=_OUT, imm=_SOCKFS_MAGIC),
        *(_insn(_STORE_IMM_DW, 10, 0, at - SOCKET_RECORD_BYTES)
          for at in range(0, SOCKET_RECORD_BYTES, 8)),
        load(2, 9, "inode.i_ino"), _insn(_STORE[8], 10, 2, -SOCKET_RECORD_BYTES),
        load(2, 7, "task_struct.tgid"), _insn(_LSH_IMM, 2, imm=32),
        _insn(_LOAD[4], 3, 6, 16), _insn(_OR_REG, 2, 3),         # | ctx->fd
        _insn(_STORE[8], 10, 2, 8 - SOCKET_RECORD_BYTES),
        *_mark_shared(layout),
        _insn(_MOV_REG, 1, 8), _insn(_CALL, imm=_FUNC_SOCK_FROM_FILE),
        _insn(_JEQ_IMM, 0, off="emit"),
        load(9, 0, "socket.sk"), _insn(_JEQ_IMM, 9, off="emit"),  # r9 = sk
        load(2, 9, common + "skc_net.net"), load(2, 2, "net.ns.inum"),
        put(16, 2, "net.ns.inum"),
        # r7 = 6 for TCP (SOCK_STREAM, IPPROTO_TCP), 17 for UDP (SOCK_DGRAM, IPPROTO_UDP)
        load(3, 9, "sock.sk_type"), load(4, 9, "sock.sk_protocol"), _insn(_MOV_IMM, 7, imm=0),
        _insn(_JNE_IMM, 3, off="dgram", imm=1), _insn(_JNE_IMM, 4, off="kind", imm=6),
        _insn(_MOV_IMM, 7, imm=6), _insn(_JA, off="kind"),
        "dgram",
        _insn(_JNE_IMM, 3, off="kind", imm=2), _insn(_JNE_IMM, 4, off="kind", imm=17),
        _insn(_MOV_IMM, 7, imm=17),
        "kind",
        _insn(_JEQ_IMM, 7, off="emit" if port is None else "count"),
        _insn(_STORE[1], 10, 7, 22 - SOCKET_RECORD_BYTES),
        *copy(20, common + "skc_family"),
        *copy(24, common + "skc_num"), _insn(_JEQ_IMM, 2, off="unhashed"),
        *copy(23, common + "skc_state"),
        "unhashed",
        *(() if port is None else (load(2, 9, common + "skc_num"),
                                   _insn(_JNE_IMM, 2, off="count", imm=port))),
        *copy(26, common + "skc_dport"), *copy(28, common + "skc_ipv6only"),
        *copy(32, common + "skc_rcv_saddr"), *copy(36, common + "skc_daddr"),
        *(insn for at, field in v6 for half in (0, 8) for insn in (
            _insn(_LOAD[8], 2, 9, layout[field] + half),
            _insn(_STORE[8], 10, 2, at + half - SOCKET_RECORD_BYTES))),
        *copy(72, common + "skc_bound_dev_if"), *copy(76, "sock.sk_uid.val"),
        *copy(80, "sock.sk_ack_backlog"), *copy(84, "sock.sk_max_ack_backlog"),
        *copy(88, "sock.sk_backlog.rmem_alloc.counter"),
        *copy(92, "sock.sk_wmem_alloc.refs.counter"),
        *copy(120, common + "skc_cookie.counter"),
        # tcp_sock and udp_sock lie beyond struct sock, where the verifier lets no load go:
        # their fields are read with bpf_probe_read_kernel, the four sequence numbers at once
        _insn(_MOV_REG, 3, 9), _insn(_MOV_REG, 1, 10), _insn(_MOV_IMM, 2, imm=4),
        _insn(_JNE_IMM, 7, off="udp", imm=6),
        load(4, 9, common + "skc_state"), _insn(_JEQ_IMM, 4, off="listen", imm=_TCP_LISTEN),
        _insn(_ADD_IMM, 1, imm=-SOCKET_RECORD_BYTES - span),
        _insn(_MOV_IMM, 2, imm=span), _insn(_ADD_IMM, 3, imm=first),
        _insn(_CALL, imm=_FUNC_PROBE_READ_KERNEL),
        *(insn for at, field in enumerate(_SEQ_FIELDS) for insn in (
            _insn(_LOAD[4], 2, 10, layout[field] - first - SOCKET_RECORD_BYTES - span),
            _insn(_STORE[4], 10, 2, 96 + 4 * at - SOCKET_RECORD_BYTES))),
        _insn(_JA, off="emit"),
        "listen",
        _insn(_ADD_IMM, 1, imm=112 - SOCKET_RECORD_BYTES),
        _insn(_ADD_IMM, 3, imm=layout["tcp_sock.inet_conn.icsk_accept_queue.qlen.counter"]),
        _insn(_CALL, imm=_FUNC_PROBE_READ_KERNEL), _insn(_JA, off="emit"),
        "udp",
        _insn(_ADD_IMM, 1, imm=116 - SOCKET_RECORD_BYTES),
        _insn(_ADD_IMM, 3, imm=layout["udp_sock.forward_deficit"]),
        _insn(_CALL, imm=_FUNC_PROBE_READ_KERNEL),
        "emit",
        *_emit(SOCKET_RECORD_BYTES),
        *(() if port is None else _count_socket(counts_fd))])


SHARED_BYTE = 29                      # of a record: 1 when several descriptors may hold it


def has_shared_mark(layout: dict[str, int]) -> bool:
    """True when the socket program marks the records of sockets that several descriptors
    may hold (``SHARED_BYTE``): ``layout`` has a file reference count (``_REF_FIELDS``)."""
    return any(".".join(field) in layout for field in _REF_FIELDS)


def _mark_shared(layout: dict[str, int]) -> list:
    """``record[SHARED_BYTE] = 1`` when the file's reference count (r8 = file) is above one
    descriptor's and the iterator's own: another descriptor, or a thread in a system call
    on it, holds it too; nothing when this kernel's BTF has no such count."""
    for field, one in _REF_FIELDS.items():
        if ".".join(field) in layout:
            return [_load(layout, 2, 8, ".".join(field)),
                    _insn(_JLE_IMM, 2, off="alone", imm=one + 1),
                    _insn(_STORE_IMM_B, 10, 0, SHARED_BYTE - SOCKET_RECORD_BYTES, 1),
                    "alone"]
    return []


def _count_socket(counts_fd: int) -> list:
    """The port-limited socket program's tail, at label ``count`` (the record's key word
    and shared mark filled): ``counts[key] += 1`` when only one descriptor holds the socket,
    else jump back to ``emit`` (r6 = ctx)."""
    key, value = 16 - SOCKET_RECORD_BYTES, 96 - SOCKET_RECORD_BYTES    # in the record
    counts = [_insn(_LD_IMM64, 1, _PSEUDO_MAP_FD, 0, counts_fd), _insn(0)]
    return [
        _insn(_JA, off=_OUT),
        "count",
        _insn(_LOAD[1], 2, 10, SHARED_BYTE - SOCKET_RECORD_BYTES),
        _insn(_JNE_IMM, 2, off="emit"),
        *counts, _insn(_MOV_REG, 2, 10), _insn(_ADD_IMM, 2, imm=key),
        _insn(_CALL, imm=_FUNC_MAP_LOOKUP), _insn(_JEQ_IMM, 0, off="new"),
        _insn(_LOAD[8], 2, 0, 0), _insn(_ADD_IMM, 2, imm=1), _insn(_STORE[8], 0, 2, 0),
        _insn(_JA, off=_OUT),
        "new",
        _insn(_STORE_IMM_DW, 10, 0, value, 1),
        *counts, _insn(_MOV_REG, 2, 10), _insn(_ADD_IMM, 2, imm=key),
        _insn(_MOV_REG, 3, 10), _insn(_ADD_IMM, 3, imm=value), _insn(_MOV_IMM, 4, imm=0),
        _insn(_CALL, imm=_FUNC_MAP_UPDATE)]


def has_port_program(layout: dict[str, int]) -> bool:
    """True when ``layout`` has what the port-limited socket program reads beside the socket
    fields: one of the file reference counts of ``_REF_FIELDS``."""
    return has_socket_fields(layout) and has_shared_mark(layout)


def _task_program(layout: dict[str, int]) -> bytes:
    """For ``struct bpf_iter__task {meta; task}``: write ``(tgid << 32 | pid, inode of
    task->nsproxy->net_ns)``; the inode reads as 0 when ``nsproxy`` is NULL (an exiting task:
    a faulting load of a BTF pointer yields 0)."""
    return _assemble([
        _insn(_MOV_REG, 6, 1),
        _insn(_LOAD[8], 7, 6, 8), _insn(_JEQ_IMM, 7, off=_OUT),
        _load(layout, 2, 7, "task_struct.tgid"), _insn(_LSH_IMM, 2, imm=32),
        _load(layout, 3, 7, "task_struct.pid"), _insn(_OR_REG, 2, 3),
        _insn(_STORE_DW, 10, 2, -16),
        _load(layout, 3, 7, "task_struct.nsproxy"), _load(layout, 3, 3, "nsproxy.net_ns"),
        _load(layout, 3, 3, "net.ns.inum"), _insn(_STORE_DW, 10, 3, -8),
        *_emit(16)])


_libc = None


def _bpf(cmd: int, attr) -> int:
    """The ``bpf(2)`` system call on ``attr`` (bytes, or a ctypes buffer that the kernel may
    write back into); returns the new fd (or 0). Raises OSError."""
    global _libc
    import ctypes
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(attr, len(attr)) if isinstance(attr, bytes) else attr
    fd = _libc.syscall(ctypes.c_long(_NR_BPF[os.uname().machine]), ctypes.c_long(cmd), buf,
                       ctypes.c_long(len(buf)))
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"bpf: {os.strerror(errno)}")
    return fd


_COUNT_KEYS = 1 << 14     # (namespace, family, kind, state) keys: 100 per namespace is a lot


def _iterate_counting(layout: dict[str, int], target_btf_id: int, port: int
                      ) -> tuple[bytes, dict[int, int]]:
    """Run the port-limited socket program (``_socket_program``): what it writes, and its
    counts (key word -> sockets). A count the map had no room for is missing (the caller
    then finds fewer sockets than sockstat does: it dumps). Raises OSError."""
    attr = bytearray(72)      # union bpf_attr, BPF_MAP_CREATE: up to map_extra
    struct.pack_into("=IIIII", attr, 0, _MAP_TYPE_HASH, 8, 8, _COUNT_KEYS, _F_NO_PREALLOC)
    attr[28:44] = b"portscope_count".ljust(16, b"\0")
    counts = _bpf(_MAP_CREATE, bytes(attr))
    try:
        records = _iterate(_socket_program(layout, port, counts), target_btf_id)
        return records, _read_map(counts)
    finally:
        os.close(counts)


def _read_map(fd: int) -> dict[int, int]:
    """Every entry of hash map ``fd`` (8-byte keys and values, at most ``_COUNT_KEYS``), by
    ``BPF_MAP_LOOKUP_BATCH`` (Linux >= 5.6)."""
    import ctypes
    keys = (ctypes.c_uint64 * _COUNT_KEYS)()
    values = (ctypes.c_uint64 * _COUNT_KEYS)()
    token = ctypes.create_string_buffer(8)
    attr = ctypes.create_string_buffer(56)      # union bpf_attr, the batch commands
    struct.pack_into("=QQQQII", attr, 0, 0, ctypes.addressof(token), ctypes.addressof(keys),
                     ctypes.addressof(values), _COUNT_KEYS, fd)
    found: dict[int, int] = {}
    while True:
        try:
            _bpf(_MAP_LOOKUP_BATCH, attr)
            done = False
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            done = True                         # the last entries, or none
        count = struct.unpack_from("=I", attr, 32)[0]
        found.update(zip(keys[:count], values[:count]))
        if done:
            return found
        struct.pack_into("=Q", attr, 0, ctypes.addressof(token))
        struct.pack_into("=I", attr, 32, _COUNT_KEYS)


def _iterate(program: bytes, target_btf_id: int) -> bytes:
    """Load ``program`` on iterator ``target_btf_id`` and return all it writes."""
    import ctypes
    code = ctypes.create_string_buffer(program, len(program))
    license = ctypes.create_string_buffer(b"Dual MIT/GPL")      # bpf_seq_write is GPL-only
    attr = bytearray(128)     # union bpf_attr, BPF_PROG_LOAD: the fields up to attach_btf_id
    struct.pack_into("=IIQQ", attr, 0, _PROG_TYPE_TRACING, len(program) // 8,
                     ctypes.addressof(code), ctypes.addressof(license))
    attr[48:64] = b"portscope_fds".ljust(16, b"\0")
    struct.pack_into("=I", attr, 68, _TRACE_ITER)              # expected_attach_type
    struct.pack_into("=I", attr, 108, target_btf_id)           # attach_btf_id
    prog = _bpf(_PROG_LOAD, bytes(attr))
    try:
        link = _bpf(_LINK_CREATE, struct.pack("=III", prog, 0, _TRACE_ITER).ljust(64, b"\0"))
    finally:
        os.close(prog)
    try:
        reader = _bpf(_ITER_CREATE, struct.pack("=II", link, 0))
    finally:
        os.close(link)
    chunks = []
    try:
        while True:
            chunk = os.read(reader, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(reader)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Kernel layout from BTF

def _layout() -> dict[str, int]:
    """The iterator targets' BTF ids and the fields' ``offset`` / ``offset:size`` (bytes),
    from the cache when it is of this boot, else from ``/sys/kernel/btf/vmlinux``."""
    with open("/proc/sys/kernel/random/boot_id", "rb") as f:
        boot = f.read().strip().decode()
    key = f"{boot} {os.uname().release} {os.stat(BTF_PATH).st_size} v{_LAYOUT_VERSION}"
    cached = _read_cache(key)
    if cached is not None:
        return cached
    layout = parse_btf(_read_all(BTF_PATH))
    _write_cache(key, layout)
    return layout


def _read_cache(key: str) -> dict[str, int] | None:
    try:
        # O_NONBLOCK: a FIFO planted here would otherwise block the open until a writer came
        fd = os.open(CACHE_PATH, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):               # a FIFO, a device: not ours
            return None
        if info.st_uid != 0 or info.st_mode & 0o022:     # written by root, by nobody else
            return None
        lines = os.read(fd, 1 << 16).decode().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    if not lines or lines[0] != key:
        return None
    try:
        layout = {name: int(value) for name, value in (line.split() for line in lines[1:])}
    except ValueError:
        return None
    needed = {*_TARGETS, *map(".".join, _FIELDS)}
    return layout if needed <= layout.keys() else None


def _write_cache(key: str, layout: dict[str, int]) -> None:
    """Best effort: a read-only or missing /run only costs the next run the parse."""
    text = "".join([key, "\n", *(f"{name} {value}\n" for name, value in layout.items())])
    directory = os.path.dirname(CACHE_PATH)
    temporary = f"{CACHE_PATH}.{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(temporary, CACHE_PATH)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size:
            count = os.readv(fd, [view[got:]])
            if not count:
                break
            got += count
        return bytes(data[:got])
    finally:
        os.close(fd)


def parse_btf(data: bytes) -> dict[str, int]:
    """Find in BTF ``data`` the ids of the FUNCs named in ``_TARGETS`` and, for each path
    ``(struct, member, ...)`` of ``_FIELDS``, ``_SOCKET_FIELDS`` and ``_REF_FIELDS``,
    ``"struct.member..."`` ->
    byte offset from the struct's start and ``"struct.member...:size"`` -> size in bytes
    (members of anonymous structs and unions included); for a bit field, the offset and size
    of the byte that holds it and ``"struct.member...:bit"`` -> its lowest bit there.

    Raises:
        ValueError: not little-endian BTF, or a name or member of ``_FIELDS`` is missing, or
            one is not a byte-aligned scalar (a path of ``_SOCKET_FIELDS`` or ``_REF_FIELDS``
            that is missing or odd is left out of the result).
    """
    magic, _version, _flags, header, types_at, types_len, strings_at, strings_len = \
        _HEADER.unpack_from(data)
    if magic != 0xEB9F:
        raise ValueError("not little-endian BTF")
    types_at += header
    strings_at += header
    strings_end = strings_at + strings_len

    def name_offset(name: str) -> int:
        at = data.find(b"\0" + name.encode() + b"\0", strings_at, strings_end)
        if at < 0:
            raise ValueError(f"no name {name!r}")
        return at + 1 - strings_at

    def name_offset_or_none(name: str) -> int | None:
        try:
            return name_offset(name)
        except ValueError:
            return None

    wanted = {name_offset(name): name for name in {*_TARGETS, *(path[0] for path in _FIELDS)}}
    wanted.update((at, name) for name in {path[0] for path in _SOCKET_FIELDS}
                  if (at := name_offset_or_none(name)) is not None)
    positions = [0]                     # type id -> offset of its header in data
    found: dict[tuple[str, int], int] = {}
    unpack, extra, per_item = _TYPE.unpack_from, _EXTRA, _PER_ITEM
    at, end = types_at, types_at + types_len
    while at < end:
        name, info, _ = unpack(data, at)
        positions.append(at)
        kind = info >> 24 & 0x1F
        if name in wanted:
            found.setdefault((wanted[name], kind), len(positions) - 1)
        at += 12 + extra[kind] + per_item[kind] * (info & 0xFFFF)

    def kind_of(type_id: int) -> tuple[int, int, int]:
        _, info, size_or_type = unpack(data, positions[type_id])
        return info >> 24 & 0x1F, info, size_or_type

    def resolved(type_id: int) -> int:
        """``type_id`` past typedefs and qualifiers."""
        kind, _, size_or_type = kind_of(type_id)
        while kind in _KINDS_ALIAS:
            type_id = size_or_type
            kind, _, size_or_type = kind_of(type_id)
        return type_id

    def size_of(type_id: int) -> int:
        kind, _, size_or_type = kind_of(resolved(type_id))
        if kind == _KIND_PTR:
            return 8
        if kind in (_KIND_INT, _KIND_ENUM, _KIND_ENUM64, _KIND_STRUCT, _KIND_UNION):
            return size_or_type
        raise ValueError(f"unexpected BTF kind {kind}")

    def member(type_id: int, name: int) -> tuple[int, int, int] | None:
        """(bit offset, type id, bit field size or 0) of member ``name`` of a struct or
        union."""
        _, info, _ = kind_of(type_id)
        bitfields = info >> 31
        base = positions[type_id] + 12
        for k in range(info & 0xFFFF):
            member_name, member_type, offset = unpack(data, base + 12 * k)
            bits = 0
            if bitfields:
                bits, offset = offset >> 24, offset & 0xFFFFFF
            if member_name == name:
                return offset, member_type, bits
            if member_name == 0 and kind_of(member_type)[0] in (_KIND_STRUCT, _KIND_UNION):
                inner = member(member_type, name)
                if inner is not None:
                    return offset + inner[0], inner[1], inner[2]
        return None

    layout: dict[str, int] = {}
    for target in _TARGETS:
        if (target, _KIND_FUNC) not in found:
            raise ValueError(f"no iterator target {target}")
        layout[target] = found[target, _KIND_FUNC]
    for path in (*_FIELDS, *_SOCKET_FIELDS, *_REF_FIELDS):
        key = ".".join(path)
        try:
            type_id = found.get((path[0], _KIND_STRUCT))
            bits = width = 0
            for field in path[1:]:
                hit = None
                if type_id is not None and kind_of(type_id)[0] in (_KIND_STRUCT, _KIND_UNION):
                    hit = member(type_id, name_offset(field))
                if hit is None:
                    raise ValueError(f"no member {key}")
                bits += hit[0]
                type_id = resolved(hit[1])
                width = hit[2]
            if width:                       # a bit field: the byte that holds it
                if bits % 8 + width > 8:
                    raise ValueError(f"{key} is a bit field across bytes")
                layout[key + ":bit"] = bits % 8
                bits -= bits % 8
                size = 1
            else:
                size = size_of(type_id)
            if bits % 8 or (size not in _LOAD and path not in _WIDE):
                raise ValueError(f"{key} is not a byte-aligned scalar ({size} bytes)")
        except ValueError:
            if path in _SOCKET_FIELDS or path in _REF_FIELDS:
                continue
            raise
        layout[key] = bits // 8
        layout[key + ":size"] = size
    return layout
