#!/usr/bin/env python3
"""Build ``src/portscope/data/iana_services.tsv`` from IANA's registry CSV.

Usage::

    python tools/compact_iana.py PATH/TO/service-names-port-numbers.csv [-o OUTPUT]

Input: the "Service Name and Transport Protocol Port Number Registry" as CSV, as published at
https://www.iana.org/assignments/service-names-port-numbers/service-names-port-numbers.csv
(UTF-8; some fields span several lines).

Output: a UTF-8 TSV, one registry record per line, after ``#`` header lines that state the
source and the registry date (the newest Registration/Modification Date in the CSV). Records
for a single port come first, then (after the line ``# port ranges``) records for a range; each
section keeps registry order, which is ascending first port. Columns:

    ports   first port zero-padded to 5 digits ("00443"), or an inclusive range
            ("06000-06063"): the padding makes the lines sort by port, so the loader can
            bisect the raw lines without parsing them
    proto   tcp | udp | sctp | dccp, or "" where the record names no protocol
    unauth  ports with unauthorized use reported: "" none, "*" the whole record, or the
            record's ports named in IANA's note ("6003", "27018,27019", "33436-33534")
    name    service name as registered ("" for Unassigned/Reserved blocks)
    descr   description, whitespace collapsed to single spaces

Records without a port number (service names registered for DNS-SD/SRV only) are dropped: they
name no port to look up. Only the standard library is used; the output is deterministic.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

SOURCE_URL = ("https://www.iana.org/assignments/service-names-port-numbers/"
              "service-names-port-numbers.csv")
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src/portscope/data/iana_services.tsv"
FORMAT_VERSION = "1"
RANGES_MARKER = "# port ranges"
_NUMBER_RE = re.compile(r"(\d{1,5})(?:\s*-\s*(\d{1,5}))?")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _unauthorized_spec(note: str, low: int, high: int) -> str:
    """Which of the record's ports ``low..high`` IANA's unauthorized-use note is about."""
    note = note.strip()
    if not note:
        return ""
    if low == high:
        return "*"
    named: list[tuple[int, int]] = []
    for match in _NUMBER_RE.finditer(note):
        a = int(match.group(1))
        b = int(match.group(2) or a)
        if low <= a <= b <= high:
            named.append((a, b))
    if not named or named == [(low, high)]:
        return "*"
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in named)


def compact(csv_path: Path) -> tuple[list[str], list[str], str, int]:
    """Read the CSV; return (single-port lines, range lines, registry date, dropped records)."""
    singles: list[str] = []
    ranges: list[str] = []
    newest = ""
    dropped = 0
    with csv_path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            newest = max(newest, row["Registration Date"].strip(),
                         row["Modification Date"].strip())
            ports = row["Port Number"].strip()
            if not ports:
                dropped += 1
                continue
            low_text, _, high_text = ports.partition("-")
            low, high = int(low_text), int(high_text or low_text)
            if not 0 <= low <= high <= 65535:
                raise SystemExit(f"bad port field {ports!r} in row {row!r}")
            fields = [
                f"{low:05d}" if low == high else f"{low:05d}-{high:05d}",
                _clean(row["Transport Protocol"]).lower(),
                _unauthorized_spec(row["Unauthorized Use Reported"], low, high),
                _clean(row["Service Name"]),
                _clean(row["Description"]),
            ]
            (singles if low == high else ranges).append("\t".join(fields))
    for section in (singles, ranges):
        if section != sorted(section, key=lambda line: line[:5]):
            raise SystemExit("registry is not in ascending port order")
    return singles, ranges, newest, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="IANA service-names-port-numbers.csv")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    singles, ranges, newest, dropped = compact(args.csv)
    header = [
        f"# portscope-iana-services v{FORMAT_VERSION}",
        f"# registry-date: {newest}",
        "# IANA Service Name and Transport Protocol Port Number Registry, compacted by",
        "# tools/compact_iana.py. Source (attribution): Internet Assigned Numbers Authority,",
        f"# {SOURCE_URL}",
        "# Columns: ports (00443 or 06000-06063), proto, unauth (\"\", \"*\" or ports), name,",
        "# description. Single ports first, then port ranges.",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([*header, *singles, RANGES_MARKER, *ranges]) + "\n"
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {len(singles) + len(ranges)} records, registry date {newest}, "
          f"{dropped} records without a port dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
