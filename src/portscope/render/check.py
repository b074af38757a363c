"""``check``'s answer (a ``BindDiagnosis``): its JSON document and its human form."""

from __future__ import annotations

import json
from typing import TextIO

from . import columns as cols
from . import jsonfmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..bindcheck import BindDiagnosis


def diagnosis_json(diagnosis: BindDiagnosis, address: str | None) -> dict:
    """A ``BindDiagnosis`` as the JSON document of ``check --json``: ``bindable``, ``errno``,
    ``reasons``, ``warnings``, ``blockers`` (inventory socket objects plus their ``reasons``
    codes), and the query, binds, trial and fixes."""
    processes: dict = {}
    addresses: dict = {}
    blockers = [json.loads(jsonfmt.socket_json(s, processes, addresses, {"reasons": list(c)}))
                for s, c in zip(diagnosis.blockers, diagnosis.blocker_codes)]
    return {
        "schema_version": jsonfmt.SCHEMA_VERSION,
        "query": {"address": address, "port": diagnosis.port, "proto": diagnosis.proto.value,
                  "uid": diagnosis.uid, "netns": diagnosis.netns},
        "binds": list(diagnosis.binds),
        "bindable": diagnosis.bindable,
        "errno": diagnosis.errno,
        "rules_errno": diagnosis.rules_errno,
        "reasons": jsonfmt.jsonable(diagnosis.reasons),
        "warnings": jsonfmt.jsonable(diagnosis.warnings),
        "blockers": blockers,
        "trial": jsonfmt.jsonable(diagnosis.trial),
        "fixes": list(diagnosis.fixes),
        "complete": diagnosis.complete,
    }


def write_diagnosis(out: TextIO, diagnosis: BindDiagnosis, *, header: bool = True) -> None:
    """The human form: verdict line, reasons, blocking sockets, warnings, trial, fixes."""
    from ..owners.process import user_name
    binds = " and ".join(diagnosis.binds)
    verdict = "bindable" if diagnosis.bindable else f"NOT bindable ({diagnosis.errno})"
    netns = f" (network namespace net:[{diagnosis.netns}])" if diagnosis.netns else ""
    out.write(f"{binds} {diagnosis.proto.value} as {user_name(diagnosis.uid)}: {verdict}"
              f"{netns}\n")
    if diagnosis.reasons:
        out.write("reasons:\n")
        for reason in diagnosis.reasons:
            out.write(f"  {reason.code}: {cols.safe(reason.message)}\n")
    if diagnosis.blockers:
        out.write("blocking sockets:\n")
        out.flush()
        from . import text
        columns = (cols.PROTO, cols.STATE, cols.LOCAL, cols.REMOTE, cols.PID, cols.PROCESS,
                   cols.USER)
        rows = ([c.get(s) for c in columns] for s in diagnosis.blockers)
        text.write_rows(out, [c.header for c in columns], rows, [c.align for c in columns],
                        header=header)
    for warning in diagnosis.warnings:
        out.write(f"warning: {warning.code}: {cols.safe(warning.message)}\n")
    trial = diagnosis.trial
    if trial.performed:
        step = "bind and listen" if trial.listened else "bind"
        outcome = trial.errno or "succeeded"
        note = f" ({trial.note})" if trial.note else ""
        out.write(f"trial: {step} {outcome}{note}\n")
    else:
        out.write(f"trial: skipped ({trial.note}); the answer rests on the rules\n")
    for fix in diagnosis.fixes:
        out.write(f"fix: {cols.safe(fix)}\n")
