"""``verify_port`` (is the port free after the kill?) and ``free_port``: plan, signal and verify
in one call."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..bindcheck import BindDiagnosis, check_bind
from ..namespaces import run_in_one
from ..types import KERNEL_HELD_STATES, Proto, Socket
from .plan import KillPlan, plan_kill, plan_protos
from .signal import Outcome, terminate


@dataclass(frozen=True, slots=True)
class PortCheck:
    """The port after the kill.

    Attributes:
        freed: every protocol's check is bindable.
        checks: one ``BindDiagnosis`` per protocol checked.
        kernel_held: blocking sockets with no process (TIME_WAIT, FIN_WAIT2...).
        still_held: blocking sockets with a process, or a holder this caller cannot see.
        reuseaddr_bindable: when only kernel-held sockets block TCP: whether a server with
            SO_REUSEADDR could bind now (it can only if the old listener had it too); else None.
    """

    freed: bool
    checks: tuple[BindDiagnosis, ...]
    kernel_held: tuple[Socket, ...]
    still_held: tuple[Socket, ...]
    reuseaddr_bindable: bool | None


@dataclass(frozen=True, slots=True)
class KillResult:
    """``free_port``'s answer: the plan, each target's ``Outcome`` and the ``PortCheck``."""

    plan: KillPlan
    outcomes: tuple[Outcome, ...]
    check: PortCheck = field(repr=False)

    @property
    def freed(self) -> bool:
        """True only when the port really binds now."""
        return self.check.freed


def verify_port(port: int, address: str | None = None,
                protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP),
                netns: str | None = None) -> PortCheck:
    """Is ``port`` free now? ``check_bind`` for each protocol (with a trial bind), inside the
    network namespace ``netns`` (a ``--netns`` value; None: the caller's own).

    Returns:
        a ``PortCheck``: blockers split into kernel-held ones (TIME_WAIT, FIN_WAIT2: no
        process, up to 60 s) and those still held by a process.
    Raises:
        InvalidInput, AccessDenied: as ``namespaces.run_in_one``.
    """
    return run_in_one(netns, lambda: _verify(port, address, protos, netns))


def _verify(port: int, address: str | None, protos: Iterable[Proto | str],
            netns: str | None) -> PortCheck:
    checks = tuple(check_bind(port, address, proto=p, scope=netns) for p in
                   sorted({Proto(p) for p in protos}))
    blockers = [s for c in checks for s in c.blockers]
    kernel = tuple(s for s in blockers if not s.owners and s.state in KERNEL_HELD_STATES)
    still = tuple(s for s in blockers if s not in kernel)
    reuseaddr = None
    tcp = [c for c in checks if c.proto is Proto.TCP and not c.bindable]
    if tcp and not still and kernel:
        reuseaddr = check_bind(port, address, proto=Proto.TCP, reuseaddr=True,
                               scope=netns).bindable
    return PortCheck(all(c.bindable for c in checks), checks, kernel, still, reuseaddr)


def free_port(port: int, address: str | None = None, *,
              protos: Iterable[Proto | str] = (Proto.TCP, Proto.UDP),
              include_connected: bool = False, sig: int = signal.SIGTERM,
              timeout_s: float = 5.0, force: bool = False,
              netns: str | None = None) -> KillResult:
    """Plan, signal and verify in one call, without asking anyone (see the module docstring).

    ``netns``: the one network namespace acted in (see ``plan_kill``).

    Returns:
        a ``KillResult``; ``freed`` is True only when the port binds now.
    Raises:
        as ``plan_kill`` and ``terminate`` (nothing is signalled when they refuse).
    """
    with plan_kill(port, address, protos=protos, include_connected=include_connected,
                   netns=netns) as plan:
        outcomes = terminate(plan, sig=sig, timeout_s=timeout_s, force=force)
        return KillResult(plan, outcomes, verify_port(port, address, plan_protos(plan), netns))
