"""``portscope audit``: every listener judged by security rules and, optionally, a baseline.

Exit codes: 0 no finding at or above ``--fail-on`` (and ``--write-baseline`` wrote the file),
1 findings at or above it, 2 usage error, 3 unreadable or invalid baseline, backend failure,
4 incomplete (some listeners' programs could not be read) without ``--allow-incomplete``.
"""

from __future__ import annotations

import argparse
import sys

from ...errors import InvalidInput
from ...ports import parse_port
from ...render import jsonfmt
from .. import common
from ..status import ExitStatus

SEVERITIES = ("low", "medium", "high")


def parse_expect(text: str) -> list[tuple[tuple[int, str], frozenset[str]]]:
    """``--expect PORT[/PROTO]=NAME[,NAME...]``: the programs allowed on a well-known port
    (both protocols without ``/PROTO``; nothing after ``=`` turns the check off there)."""
    target, sep, names_text = text.partition("=")
    port_text, slash, proto = target.partition("/")
    if not sep:
        raise InvalidInput(f"invalid --expect {text!r}: expected PORT[/PROTO]=NAME[,NAME]")
    port = parse_port(port_text)
    protos = (proto,) if slash else ("tcp", "udp")
    if any(p not in ("tcp", "udp") for p in protos):
        raise InvalidInput(f"invalid --expect {text!r}: protocol must be tcp or udp")
    names = names_text.split(",")
    if names_text and not all(names):
        raise InvalidInput(f"invalid --expect {text!r}: empty program name")
    allowed = frozenset(names) if names_text else frozenset()
    return [((port, p), allowed) for p in protos]


def parse_rule(text: str) -> str:
    """``--skip RULE``: a rule id of ``portscope audit --list-rules``."""
    from ...audit.rules import RULE_BY_ID
    if text not in RULE_BY_ID:
        raise InvalidInput(f"unknown rule {text!r}: see portscope audit --list-rules")
    return text


def register(sub) -> None:
    parser = sub.add_parser(
        "audit", help="judge every listener with security rules and a baseline (CI exit code)",
        description="Judge every server socket (TCP LISTEN and BOUND_INACTIVE, bound UDP "
                    "servers) with rules that have stable ids and severities: exposure, "
                    "deleted or temporary executables, listening shells and interpreters, "
                    "masquerading process names, unexpected programs on well-known ports, "
                    "ports with reported unauthorized use, ephemeral-range listeners, and "
                    "sockets hidden from one kernel view, in one network namespace (--netns). "
                    "Exit 1 when a finding reaches --fail-on, 4 when some listeners' programs "
                    "could not be read (an incomplete audit does not pass unless "
                    "--allow-incomplete), 0 otherwise; 3 for an unreadable baseline.")
    base = parser.add_argument_group("baseline")
    which = base.add_mutually_exclusive_group()
    which.add_argument("--baseline", metavar="FILE",
                       help="report listeners that are new (high), changed (high) or gone "
                            "(low) against this TOML baseline")
    which.add_argument("--write-baseline", metavar="FILE",
                       help="record today's listeners by identity (exe, sha256, user, proto, "
                            "port, scope) to FILE, atomically, and exit 0 (a symbolic link "
                            "at FILE, or a directory other users may write to that is not "
                            "yours, is refused: exit 3)")
    rules = parser.add_argument_group("rules")
    rules.add_argument("--fail-on", choices=SEVERITIES, default="high",
                       help="lowest severity that makes the exit code 1 (default: high)")
    rules.add_argument("--deep", action="store_true",
                       help="also trial-bind every port to find ports held by sockets that no "
                            "kernel view shows (a few seconds)")
    rules.add_argument("--expect", action="append", default=[],
                       metavar="PORT[/PROTO]=NAME[,NAME]",
                       help="programs allowed on a well-known port, replacing the built-in map "
                            "for it (repeatable; e.g. 22/tcp=sshd,dropbear; the map: "
                            "--list-rules --json)")
    rules.add_argument("--skip", action="append", default=[], metavar="RULE",
                       help="do not run this rule (repeatable)")
    rules.add_argument("--allow-incomplete", action="store_true",
                       help="exit 0 even when some listeners' programs could not be read "
                            "(without root); by default such an audit exits 4, since the "
                            "rules could not judge them")
    common.add_netns_option(parser, several=False)
    rules.add_argument("--list-rules", action="store_true",
                       help="list the rules (id, severity, what each flags) and exit; with "
                            "--json also their fixes")
    output = parser.add_argument_group("output")
    fmt = output.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON (schema_version 1)")
    fmt.add_argument("--sarif", action="store_true",
                     help="SARIF 2.1.0 on stdout, for CI code-scanning dashboards")
    output.add_argument("-H", "--no-header", action="store_true", help="omit the header line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import __version__, audit, namespaces
    from ...audit import baseline as baseline_file
    from ...audit import sarif
    from ...audit.rules import Severity
    from ...owners.visibility import remedy
    from ...render import audit as render
    if args.list_rules:
        if args.json:
            print(jsonfmt.dumps(render.rules_json()))
        else:
            render.write_rules(sys.stdout, header=not args.no_header)
        return ExitStatus.OK
    if args.write_baseline is not None:
        if args.json or args.sarif or args.deep:
            raise InvalidInput("--write-baseline records listeners; it takes no --json, "
                               "--sarif or --deep")
        written, anonymous = namespaces.run_in_one(
            args.netns, lambda: audit.write_baseline(args.write_baseline))
        common.warn(f"wrote baseline {args.write_baseline}: {written} listener(s)")
        if anonymous:
            common.warn(f"{anonymous} of them recorded by port and address only: their "
                        f"program could not be read ({remedy()})")
        return ExitStatus.OK
    # parsed here, not by argparse, so that the error says what is wrong (exit 2)
    expected = dict(pair for text in args.expect for pair in parse_expect(text))
    skip = [parse_rule(text) for text in args.skip]
    loaded = baseline_file.load(args.baseline) if args.baseline is not None else None
    report = namespaces.run_in_one(args.netns, lambda: audit.audit(
        baseline=loaded, deep=args.deep, expected_programs=expected, skip=skip))
    for message in report.warnings:
        common.warn(message)
    if report.unverified:
        common.warn(f"{report.unverified} listener(s) compared with the baseline by port and "
                    "address only: their program could not be read")
    if args.sarif:
        log = sarif.sarif_log(report.findings, version=__version__, hostname=report.hostname,
                              baseline_path=args.baseline)
        print(jsonfmt.dumps(log))
    elif args.json:
        print(jsonfmt.dumps(render.report_json(report, baseline=args.baseline,
                                            fail_on=args.fail_on)))
    else:
        render.write_findings(sys.stdout, report, header=not args.no_header)
    failing = report.at_least(Severity(args.fail_on))
    common.warn(f"audited {len(report.listeners)} listener(s): {len(report.findings)} "
                f"finding(s) ({render.severity_counts(report)}); {len(failing)} at or above "
                f"--fail-on {args.fail_on}")
    if failing:
        return ExitStatus.NO
    if not report.complete and not args.allow_incomplete:
        common.warn("the audit is incomplete: some listeners' programs could not be read, so "
                    "the rules could not judge them (exit 4; --allow-incomplete accepts it)")
        return ExitStatus.ACCESS
    return ExitStatus.OK
