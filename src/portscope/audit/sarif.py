"""SARIF 2.1.0 (OASIS Static Analysis Results Interchange Format) for CI dashboards.

One run, with every rule of ``RULES`` in ``tool.driver.rules`` and one result per finding:

- ``level``: high -> ``error``, medium -> ``warning``, low -> ``note``; GitHub's
  ``properties.security-severity`` is 8.0, 5.0 and 2.0.
- ``locations``: a logical location ``HOST/PROTO/ADDRESS:PORT`` (kind ``resource``) and, as
  dashboards want a file, a physical location: the baseline file for baseline findings, else
  the executable (``file://`` URI) when known.
- ``partialFingerprints["portscopeFinding/v1"]``: SHA-256 of rule, host, protocol, address,
  port and executable (never the PID), so that a dashboard recognises the same finding in the
  next run.

Pure: builds a dict; the caller serialises it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import PurePosixPath
from urllib.parse import quote

from ..identity import canonical_address
from .rules import RULES, Finding, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                "sarif-schema-2.1.0.json")
LEVELS = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
SECURITY_SEVERITY = {Severity.HIGH: "8.0", Severity.MEDIUM: "5.0", Severity.LOW: "2.0"}


def _uri(path: str) -> str:
    """A file URI for an absolute path, a relative URI reference for a relative one."""
    quoted = quote(path, safe="/", errors="surrogateescape")
    return f"file://{quoted}" if PurePosixPath(path).is_absolute() else quoted


def _endpoint(f: Finding) -> str:
    if f.proto == "unix":
        return f"unix/{f.address}"
    address = f.address or "*"
    if address != "*":
        address = canonical_address(address)
    host = f"[{address}]" if ":" in address else address
    return f"{f.proto}/{host}:{f.port if f.port is not None else '*'}"


def sarif_log(findings: Iterable[Finding], *, version: str, hostname: str,
              baseline_path: str | None = None) -> dict:
    """A SARIF 2.1.0 log of ``findings``.

    Args:
        findings: the audit's findings.
        version: portscope's version (``tool.driver.version``).
        hostname: the audited host (logical locations, fingerprints, ``automationDetails``).
        baseline_path: the baseline file as the user named it, for baseline findings.
    Returns:
        the log as JSON-ready dicts and lists.
    """
    index = {rule.id: i for i, rule in enumerate(RULES)}
    rules = [{
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.title},
        "help": {"text": rule.fix},
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": {"tags": ["security"],
                       "security-severity": SECURITY_SEVERITY[rule.severity]},
    } for rule in RULES]
    results = []
    for f in findings:
        endpoint = _endpoint(f)
        location: dict = {"logicalLocations": [{
            "name": endpoint, "fullyQualifiedName": f"{hostname}/{endpoint}",
            "kind": "resource"}]}
        artifact = baseline_path if f.rule.startswith("baseline-") and baseline_path else f.exe
        if artifact:
            location["physicalLocation"] = {"artifactLocation": {"uri": _uri(artifact)}}
        fingerprint = hashlib.sha256("\0".join(
            (f.rule, hostname, endpoint, f.exe or "")).encode("utf-8", "surrogateescape"))
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": LEVELS[f.severity],
            "message": {"text": f"{endpoint} on {hostname}: {f.message}. Fix: {f.fix}"},
            "locations": [location],
            "partialFingerprints": {"portscopeFinding/v1": fingerprint.hexdigest()},
            "properties": {"severity": f.severity.value, "proto": f.proto,
                           "address": f.address, "port": f.port, "pid": f.pid, "exe": f.exe,
                           "user": f.user, "fix": f.fix,
                           "security-severity": SECURITY_SEVERITY[f.severity]},
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "portscope", "version": version,
                                "semanticVersion": version, "rules": rules}},
            "automationDetails": {"id": f"portscope-audit/{hostname}/"},
            "invocations": [{"executionSuccessful": True}],
            "results": results,
        }],
    }
