"""free_port() / terminate(): stop every process holding a port, safely, then prove it is free.

A kill is a transaction:

1. **Plan** (``plan_kill``): every socket whose **local** port matches (listeners and bound
   sockets; connected ones only when asked; never a client whose *remote* port matches), every
   process holding each of them (fork sharing, SO_REUSEPORT groups, IPv4 and IPv6). A pidfd is
   opened for each holder right after the scan and its start time compared with the scan's.
2. **Refuse** before any signal: PID <= 1, kernel threads (``PF_KTHREAD``), portscope itself
   and its ancestors (``KillRefused``, never overridable); holders a supervisor would restart
   (a systemd unit with ``Restart=``, a container, docker-proxy, supervisord, pm2), unless
   forced, with the command that stops them for good; holders this user cannot see or signal
   (``AccessDenied``).
3. **Signal** (``terminate``): re-verify each holder's identity (pid + start time in clock ticks
   from ``/proc/PID/stat`` + still holds one of its sockets' inodes), then signal through the
   pidfd, so a PID reused since the scan is never hit. A stopped holder also gets SIGCONT.
   Wait up to ``timeout_s`` for each to exit or let go of its sockets; survivors are reported,
   and get SIGKILL only with ``force``.
4. **Verify** (``verify_port``): ``check_bind`` on the port. Sockets the kernel keeps after the
   processes are gone (TIME_WAIT, FIN_WAIT2: up to 60 s) are reported as such, never as freed.

Without pidfd (not Linux >= 5.3, or blocked by seccomp) no signal is sent (``AccessDenied``):
a plain ``kill(pid)`` could hit a reused PID.

Parts: ``plan`` (1), ``safety`` (2's rules), ``supervisors`` (2's respawners), ``signal`` (3),
``verify`` (4, and ``free_port``, the whole transaction).
"""

from .plan import (KillPlan, Target, plan_kill, plan_kill_unix, plan_protos, unix_in_scope,
                   verify_unix)
from .safety import PF_KTHREAD, ancestors, refuse, safety_refusal
from .signal import SIGNALS, Outcome, holds_any, terminate, verify_identity
from .supervisors import SYSTEM_UNIT_PATH, Respawner, find_respawner, unit_restart
from .verify import KillResult, PortCheck, free_port, verify_port

__all__ = ["PF_KTHREAD", "SIGNALS", "SYSTEM_UNIT_PATH", "KillPlan", "KillResult", "Outcome",
           "PortCheck", "Respawner", "Target", "ancestors", "find_respawner", "free_port",
           "holds_any", "plan_kill", "plan_kill_unix", "plan_protos", "refuse",
           "safety_refusal", "terminate", "unit_restart", "unix_in_scope", "verify_identity",
           "verify_port", "verify_unix"]
