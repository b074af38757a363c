"""``services``' output: registry entries with their port's class and this host's ranges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from ..ports import port_class
from .columns import Column, safe
from .listing import write_rows

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ports import HostPortRanges
    from ..services import ServiceEntry


def services_json(query: str, registry_date: str, entries: Sequence[ServiceEntry],
                  ranges: HostPortRanges) -> dict:
    """The JSON document of ``services --json``: the query, the registry's date, this host's
    ephemeral range, for a numeric query the ``port`` itself (``port_class``, ``ephemeral``,
    ``reserved``: known even when no entry is), and every entry with ``port_class``,
    ``ephemeral`` and ``reserved``."""
    from . import jsonfmt
    port = int(query) if query.isascii() and query.isdigit() else None
    return {
        "schema_version": jsonfmt.SCHEMA_VERSION, "query": query,
        "registry_date": registry_date, "ephemeral_range": list(ranges.ephemeral),
        "port": None if port is None else {
            "port": port, "port_class": port_class(port),
            "ephemeral": ranges.is_ephemeral(port), "reserved": ranges.is_reserved(port)},
        "entries": [{**jsonfmt.jsonable(e), "port_class": port_class(e.port_low),
                     "ephemeral": ranges.is_ephemeral(e.port_low),
                     "reserved": ranges.is_reserved(e.port_low)} for e in entries]}


def port_facts(port: int, ranges: HostPortRanges) -> str:
    """What a port is on this host, registry aside: its IANA class with that class's bounds,
    whether it lies in the ephemeral range, and whether it is reserved."""
    from ..ports import DYNAMIC, REGISTERED, WELL_KNOWN
    bounds = {"well-known": WELL_KNOWN, "registered": REGISTERED, "dynamic": DYNAMIC}
    kind = port_class(port)
    low, high = ranges.ephemeral
    facts = [f"port {port} is a {kind} port ({bounds[kind][0]}-{bounds[kind][1]})"]
    if ranges.is_ephemeral(port):
        facts.append(f"in this host's ephemeral range {low}-{high}: outgoing connections "
                     "take it, a server should not rely on it")
    else:
        facts.append(f"outside this host's ephemeral range {low}-{high}")
    if ranges.is_reserved(port):
        facts.append("reserved (net.ipv4.ip_local_reserved_ports)")
    return ", ".join(facts)


def write_services(out: TextIO, entries: Sequence[ServiceEntry], ranges: HostPortRanges, *,
                   fmt: str = "auto", header: bool = True) -> None:
    """The entries as a table, plain text or CSV (``fmt`` as in ``listing.write_rows``)."""

    def notes(e) -> str:
        marks = [port_class(e.port_low)]
        if ranges.is_ephemeral(e.port_low):
            marks.append("ephemeral")
        if ranges.is_reserved(e.port_low):
            marks.append("reserved")
        if e.unauthorized_use:
            marks.append("unauthorized use reported")
        return ", ".join(marks)

    columns = (
        Column("port", "Port", lambda e: str(e.port_low) if e.port_low == e.port_high
               else f"{e.port_low}-{e.port_high}", "right"),
        Column("proto", "Proto", lambda e: e.proto),
        Column("name", "Service", lambda e: e.name or ""),
        Column("source", "Source", lambda e: e.source),
        Column("class", "Class", notes),
        Column("description", "Description", lambda e: safe(e.description or "")))
    rows = [[c.get(e) for c in columns] for e in entries]
    write_rows(out, [c.header for c in columns], rows, [c.align for c in columns],
               keys=[c.key for c in columns], fmt=fmt, header=header)
