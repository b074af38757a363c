"""portscope in a sandbox that refuses one system call, as real sandboxes do: some refuse
netlink sockets, systemd's ``RestrictNamespaces=`` and container profiles refuse ``setns``.

``portscope_refusing(call, err, probe)`` is the argv prefix of a Python process that installs a
seccomp filter refusing ``call`` with errno ``err`` (with ``arg0``: only when its first
argument is that), checks that the filter works (``probe``, Python code making the call, must
raise that ``OSError``), then executes ``python -m portscope`` with the arguments that follow
the prefix, which inherits the filter (``SETNS_PROBE`` probes ``setns``). Skips the test on
machines other than x86_64 and aarch64.
"""

from __future__ import annotations

import platform
import struct
import sys
import textwrap

import pytest

#: AUDIT_ARCH_* of each machine, and the system calls' numbers there
MACHINES = {"x86_64": (0xC000003E, {"socket": 41, "setns": 308}),
            "aarch64": (0xC00000B7, {"socket": 198, "setns": 268})}

_RUN = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
program = {program!r}
code = ctypes.create_string_buffer(program, len(program))
fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(code))
assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, ctypes.get_errno()
try:
{probe}
    sys.exit("the filter let {call} through")
except OSError as exc:
    assert exc.errno == {err}, exc
os.execv(sys.executable, [sys.executable, "-m", "portscope", *sys.argv[1:]])
"""


#: a ``probe`` for ``setns``: entering this process's own network namespace again
SETNS_PROBE = """
fd = os.open("/proc/self/ns/net", os.O_RDONLY)
if libc.setns(fd, 0x40000000) != 0:             # CLONE_NEWNET
    raise OSError(ctypes.get_errno(), "setns")
"""


def portscope_refusing(call: str, err: int, probe: str, arg0: int | None = None) -> list[str]:
    """The argv prefix running portscope under a filter that refuses ``call`` (a key of
    ``MACHINES``' tables) with ``err``; ``probe`` may use ``ctypes``, ``os`` and ``libc``."""
    if platform.machine() not in MACHINES:
        pytest.skip("the seccomp filter knows x86_64 and aarch64 only")
    arch, numbers = MACHINES[platform.machine()]
    insn = struct.Struct("=HBBI")
    test_arg = [(0x20, 0, 0, 16), (0x15, 0, 1, arg0)] if arg0 is not None else []   # .args[0]
    program = b"".join(insn.pack(*i) for i in (
        (0x20, 0, 0, 4), (0x15, 0, 3 + len(test_arg), arch),       # seccomp_data.arch
        (0x20, 0, 0, 0), (0x15, 0, 1 + len(test_arg), numbers[call]),   # .nr
        *test_arg,
        (0x06, 0, 0, 0x00050000 | err),                             # SECCOMP_RET_ERRNO
        (0x06, 0, 0, 0x7FFF0000)))                                  # SECCOMP_RET_ALLOW
    return [sys.executable, "-c", _RUN.format(program=program, call=call, err=err,
                                              probe=textwrap.indent(textwrap.dedent(probe),
                                                                    "    "))]
