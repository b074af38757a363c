"""``audit``'s output: the rule list, the findings by severity, and their JSON documents."""

from __future__ import annotations

from typing import TextIO

from .columns import endpoint_text, safe
from .listing import write_rows

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..audit import AuditReport

#: severities from the most to the least severe, as findings are listed
_SEVERITIES = ("high", "medium", "low")


def _text(value: object) -> str:
    """Display text for a terminal: bytes that are not UTF-8 as ``\\xNN``, control
    characters escaped."""
    text = "-" if value is None else str(value)
    return safe(text)


def rules_json() -> dict:
    """The JSON document of ``audit --list-rules --json``: every rule (id, severity, title,
    fix, baselinable), the expected programs per well-known port and the programs accepted
    on any port."""
    from ..audit.rules import EXPECTED_PROGRAMS, PORT_HOLDERS, RULES
    from .jsonfmt import SCHEMA_VERSION
    return {
        "schema_version": SCHEMA_VERSION,
        "rules": [{"id": r.id, "severity": r.severity.value, "title": r.title, "fix": r.fix,
                   "baselinable": r.baselinable} for r in RULES],
        "expected_programs": {f"{port}/{proto}": sorted(names)
                              for (port, proto), names in EXPECTED_PROGRAMS.items()},
        "accepted_on_any_port": sorted(PORT_HOLDERS)}


def write_rules(out: TextIO, *, header: bool = True) -> None:
    """The rules as a table: id, severity, what each flags."""
    from ..audit.rules import RULES
    write_rows(out, ("Rule", "Severity", "Flags"),
               [[r.id, r.severity.value, r.title] for r in RULES],
               ("left", "left", "left"), header=header)


def report_json(report: AuditReport, *, baseline: str | None, fail_on: str) -> dict:
    """The JSON document of ``audit --json``: when, where, ``complete``, ``warnings``, the
    baseline path and ``fail_on`` asked for, how many listeners, every finding."""
    from .jsonfmt import SCHEMA_VERSION, jsonable
    return {
        "schema_version": SCHEMA_VERSION,
        "taken_at": report.taken_at.isoformat(), "hostname": report.hostname,
        "complete": report.complete, "warnings": list(report.warnings),
        "baseline": baseline, "fail_on": fail_on,
        "listeners": len(report.listeners),
        "findings": [jsonable(f) for f in report.findings]}


def severity_counts(report: AuditReport) -> str:
    """``"1 high, 0 medium, 2 low"``."""
    return ", ".join(f"{sum(1 for f in report.findings if f.severity.value == s)} {s}"
                     for s in _SEVERITIES)


def write_findings(out: TextIO, report: AuditReport, *, header: bool = True) -> None:
    """The findings, one table per severity (most severe first), then each rule's fix."""
    headers = ("Rule", "Proto", "Local Address:Port", "PID", "Program", "User", "Finding")
    aligns = ("left", "left", "left", "right", "left", "left", "left")
    first = True
    for severity in _SEVERITIES:
        group = [f for f in report.findings if f.severity.value == severity]
        if not group:
            continue
        if not first:
            out.write("\n")
        first = False
        rows = [[f.rule, _text(f.proto),
                 (safe(f.address or "") if f.proto == "unix"
                  else endpoint_text(f.address or "*", f.port)) if f.proto else "-",
                 _text(f.pid), _text(f.exe), _text(f.user), _text(f.message)] for f in group]
        write_rows(out, headers, rows, aligns, header=header,
                   title=f"{severity.upper()} ({len(group)})")
    fixes = dict.fromkeys((f.rule, f.fix) for f in report.findings)
    if fixes:
        out.write("\nfix:\n")
        for rule, fix in fixes:
            out.write(f"  {rule}: {_text(fix)}\n")
