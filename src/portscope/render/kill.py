"""``kill``'s output: the plan, each holder's outcome and the port check, as text and as the
JSON document of ``kill --json``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TextIO

from . import columns as cols
from . import jsonfmt
from .check import diagnosis_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..kill import KillPlan, Outcome, PortCheck
    from ..types import Socket

COMMAND_WIDTH = 60


def _socket_list(sockets: Iterable[Socket]) -> list:
    processes: dict = {}
    addresses: dict = {}
    return [json.loads(jsonfmt.socket_json(s, processes, addresses)) for s in sockets]


def plan_json(plan: KillPlan) -> dict:
    """The plan as JSON: ``netns`` (the ``--netns`` value planned in; null: the caller's
    own), ``targets`` (pid, process, start_ticks, sockets, refusal, respawner, gone),
    ``hidden``, ``kernel_held``, ``unplanned`` (inventory socket objects)."""
    return {
        "netns": plan.netns,
        "targets": [{"pid": t.pid, "process": jsonfmt.jsonable(t.process),
                     "start_ticks": t.start_ticks, "sockets": _socket_list(t.sockets),
                     "refusal": t.refusal, "respawner": jsonfmt.jsonable(t.respawner),
                     "gone": t.gone} for t in plan.targets],
        "hidden": _socket_list(plan.hidden),
        "kernel_held": _socket_list(plan.kernel_held),
        "unplanned": _socket_list(plan.unplanned),
    }


def kill_json(port: int, address: str | None, signal_name: str, dry_run: bool, plan: dict, *,
              outcomes: Sequence[Outcome] | None = None, check: PortCheck | None = None,
              still_held: Sequence[Socket] | None = None, message: str | None = None,
              refused: bool = False) -> dict:
    """The JSON document of ``kill --json``: the query, ``plan`` (from ``plan_json``, taken
    while the plan was open), then, when the holders were signalled, ``outcomes`` and the
    port check (``freed``, ``kernel_held``, ``still_held``, ``reuseaddr_bindable``,
    ``checks``: check's documents; for a UNIX target, ``still_held``: ``freed`` and
    ``still_held`` only), ``message`` when there is one, and ``refused``."""
    doc: dict = {"schema_version": jsonfmt.SCHEMA_VERSION, "port": port, "address": address,
                 "signal": signal_name, "dry_run": dry_run, "plan": plan}
    if outcomes is not None:
        doc["outcomes"] = [jsonfmt.jsonable(o) for o in outcomes]
    if check is not None:
        doc.update({"freed": check.freed, "kernel_held": _socket_list(check.kernel_held),
                    "still_held": _socket_list(check.still_held),
                    "reuseaddr_bindable": check.reuseaddr_bindable,
                    "checks": [diagnosis_json(c, address) for c in check.checks]})
    if still_held is not None:
        doc.update({"freed": not still_held, "still_held": _socket_list(still_held)})
    if message:
        doc["message"] = message
    doc["refused"] = refused
    return doc


def write_plan(out: TextIO, plan: KillPlan, signal_name: str) -> None:
    """The plan for people: one line, a table of the holders (PID, user, start time, process,
    sockets, why one is refused or supervised, command line), kernel-held and unplanned
    sockets."""
    from . import text
    where = cols.safe(plan.address) if not plan.port and plan.address else \
        f"{plan.address}:{plan.port}" if plan.address else f"port {plan.port}"
    live = [t for t in plan.targets if not t.gone]
    if live:
        out.write(f"{where}: {len(plan.sockets)} socket(s) held by {len(live)} process(es); "
                  f"plan: {signal_name} each\n")
    elif plan.hidden:
        out.write(f"{where}: the holders of {len(plan.hidden)} socket(s) are hidden from this "
                  "user\n")
    else:
        out.write(f"{where}: no process to signal\n")
    if plan.targets:
        headers = ["PID", "User", "Started", "Process", "Sockets", "Note", "Command"]
        rows = []
        for t in plan.targets:
            started = t.process.started_at.strftime("%Y-%m-%d %H:%M:%S") \
                if t.process.started_at else "?"
            socks = ", ".join(f"{s.proto.value} {s.state.value} {cols.LOCAL.get(s)}"
                              for s in t.sockets)
            note = t.refusal or t.gone or (t.respawner.detail if t.respawner else "")
            command = cols.safe(" ".join(t.process.cmdline or ()))
            if len(command) > COMMAND_WIDTH:
                command = command[:COMMAND_WIDTH - 3] + "..."
            rows.append([str(t.pid), t.process.user or "?", started,
                         cols.safe(t.process.name or "?"), socks, note, command])
        text.write_rows(out, headers, rows, ["right"] + ["left"] * 6)
    for sock in plan.hidden:
        out.write(f"holder hidden from this user: {sock.proto.value} {sock.state.value} "
                  f"{cols.endpoint_text(*sock.local)} (socket uid {sock.uid})\n")
    for sock in plan.kernel_held:
        out.write(f"kernel-held, no process to signal: {sock.proto.value} {sock.state.value} "
                  f"{cols.endpoint_text(*sock.local)} (gone within 60 s)\n")
    for sock in plan.unplanned:
        out.write(f"not planned (connected; -a plans it): {sock.proto.value} "
                  f"{sock.state.value} {cols.LOCAL.get(sock)} held by "
                  f"{cols.owner_pids(sock)}\n")
    out.flush()


def write_outcomes(out: TextIO, outcomes: Iterable[Outcome]) -> None:
    """One line per holder: what happened to it and the signals it was sent."""
    for outcome in outcomes:
        signals = ", ".join(outcome.signals) or "no signal"
        detail = f": {outcome.detail}" if outcome.detail else ""
        out.write(cols.safe(f"pid {outcome.pid} ({outcome.name}): {outcome.result} "
                            f"[{signals}]{detail}") + "\n")


def write_check(out: TextIO, port: int, check: PortCheck) -> None:
    """Is the port free now: per protocol, then what still holds it (processes, or the kernel
    with its closed connections, and whether SO_REUSEADDR helps)."""
    for diagnosis in check.checks:
        binds = " and ".join(diagnosis.binds)
        if diagnosis.bindable:
            out.write(f"{diagnosis.proto.value} port {port} is free: {binds} binds\n")
    if check.freed:
        return
    if check.still_held:
        out.write(f"port {port} is still held by {len(check.still_held)} socket(s):\n")
        for sock in check.still_held:
            out.write(cols.safe(f"  {sock.proto.value} {sock.state.value} "
                                f"{cols.endpoint_text(*sock.local)} pid {cols.owner_pids(sock)} "
                                f"({cols.owner_names(sock)})") + "\n")
    if check.kernel_held:
        states = ", ".join(sorted({s.state.value for s in check.kernel_held}))
        out.write(f"port {port} is NOT free yet: no process holds it, but the kernel still "
                  f"holds {len(check.kernel_held)} closed connection(s) ({states}) for up to "
                  "60 s\n")
        if check.reuseaddr_bindable:
            out.write("  a server that sets SO_REUSEADDR can bind it now (its predecessor had "
                      "it)\n")
        elif check.reuseaddr_bindable is False:
            out.write("  SO_REUSEADDR does not help: the old listener did not set it\n")


def write_unix_check(out: TextIO, target: str, still_held: Sequence[Socket]) -> None:
    """Is a UNIX socket name free now: what still holds it, or that none does (and that a
    socket file stays behind until ``check --clean``)."""
    if still_held:
        out.write(f"{cols.safe(target)} is still held by {len(still_held)} socket(s)\n")
    else:
        note = (f"; its socket file stays behind: portscope check --clean {cols.safe(target)}"
                if not target.startswith("@") else "")
        out.write(f"{cols.safe(target)}: no socket is bound to it any more{note}\n")
