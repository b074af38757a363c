"""``portscope services 443|https``: the IANA registry and /etc/services, both directions."""

from __future__ import annotations

import argparse
import sys

from ...render.columns import Column, safe
from .. import common


def register(sub) -> None:
    parser = sub.add_parser(
        "services", help="look up a port or service name (IANA registry, /etc/services)",
        description="Every registry entry for a port number (all protocols) or a service "
                    "name, with its source, the port's class and this host's ranges.")
    parser.add_argument("query", metavar="PORT|NAME")
    common.add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ... import services
    from ...ports import host_port_ranges, port_class
    entries = services.lookup(args.query)
    ranges = host_port_ranges()

    def notes(e) -> str:
        marks = [port_class(e.port_low)]
        if ranges.is_ephemeral(e.port_low):
            marks.append("ephemeral")
        if ranges.is_reserved(e.port_low):
            marks.append("reserved")
        if e.unauthorized_use:
            marks.append("unauthorized use reported")
        return ", ".join(marks)

    if args.json:
        from ...render import jsonfmt
        print(jsonfmt.dumps({
            "schema_version": jsonfmt.SCHEMA_VERSION, "query": args.query,
            "registry_date": services.REGISTRY_DATE, "ephemeral_range": list(ranges.ephemeral),
            "entries": [{**jsonfmt.jsonable(e), "port_class": port_class(e.port_low),
                         "ephemeral": ranges.is_ephemeral(e.port_low),
                         "reserved": ranges.is_reserved(e.port_low)} for e in entries]}))
    else:
        columns = (
            Column("port", "Port", lambda e: str(e.port_low) if e.port_low == e.port_high
                   else f"{e.port_low}-{e.port_high}", "right"),
            Column("proto", "Proto", lambda e: e.proto),
            Column("name", "Service", lambda e: e.name or ""),
            Column("source", "Source", lambda e: e.source),
            Column("class", "Class", notes),
            Column("description", "Description", lambda e: safe(e.description or "")))
        rows = [[c.get(e) for c in columns] for e in entries]
        headers, aligns = [c.header for c in columns], [c.align for c in columns]
        if args.csv:
            from ...render import csvfmt
            csvfmt.write_rows(sys.stdout, [c.key for c in columns], rows,
                              header=not args.no_header)
        elif common.use_table(sys.stdout, len(rows)):
            from ...render import table
            table.write_table(sys.stdout, headers, rows, aligns, header=not args.no_header)
        else:
            from ...render import text
            text.write_rows(sys.stdout, headers, rows, aligns, header=not args.no_header)
    if not entries:
        common.warn(f"no registry entry for {args.query!r}")
        return 1
    return 0
