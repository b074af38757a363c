"""Listings: sockets (or any rows) written as JSON, CSV, a rich table on a terminal, or plain
aligned text in a pipe. The one place that chooses the form and the extra columns.

``fmt`` is ``"json"``, ``"csv"`` or ``"auto"`` (a table when ``out`` is a terminal and the
listing is not huge, else plain text).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from ..types import Snapshot, Socket
from . import columns as cols

TYPE_CHECKING = False
if TYPE_CHECKING:               # snapshot is imported by the callers that make a stream
    from ..snapshot import SnapshotStream

TABLE_MAX_ROWS = 2000   # beyond this a terminal gets plain aligned text (a rich table is slow)
#: a netlink dump this large (about 15,000 sockets) is decoded and written as JSON by two
#: processes, each half of it (200,000 sockets: 0.9 s of decoding and formatting, halved)
SHARED_JSON_BYTES = 2 << 20


def use_table(out: TextIO, rows: int) -> bool:
    """True when a rich table fits: ``out`` is a terminal and the listing is not huge."""
    return rows <= TABLE_MAX_ROWS and out.isatty()


def fork_allowed() -> bool:
    """True when a second CPU and fork() are there to share work with."""
    from ..owners.fdscan import default_workers
    return default_workers() > 0


def write_rows(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[str]],
               aligns: Sequence[str], *, keys: Sequence[str] | None = None,
               fmt: str = "auto", header: bool = True, title: str | None = None) -> None:
    """Write rows of cell text: CSV (``fmt="csv"``, with ``keys`` as the header line), else a
    table on a terminal (``title`` above it) or plain aligned text (``title`` on its own line).
    """
    if fmt == "csv":
        from . import csvfmt
        csvfmt.write_rows(out, keys or headers, rows, header=header)
    elif use_table(out, len(rows)):
        from . import table
        table.write_table(out, headers, rows, aligns, header=header, title=title)
    else:
        from . import text
        if title:
            out.write(f"{title}\n")
        text.write_rows(out, headers, rows, aligns, header=header)


def write_json_in_two(out: TextIO, stream: SnapshotStream, fields: dict | None) -> None:
    """Write a large streamed listing as JSON, the second half of the sockets decoded and
    formatted by a forked child into a memfd, which is then copied after the first half.
    A child that fails is not waited on for its half: the parent writes it itself."""
    from . import jsonfmt
    jsonfmt.write_head(out, stream, fields)
    out.flush()
    items = os.memfd_create("portscope-json", os.MFD_CLOEXEC)
    stats = os.memfd_create("portscope-json-stats", os.MFD_CLOEXEC)
    child = os.fork()
    if child == 0:                          # the child: its half, then leave without cleanup
        status = 1
        try:
            with open(items, "w", encoding="utf-8", closefd=False) as f:
                jsonfmt.write_items(f, stream.share(1, 2, jsonfmt.UnixRows), lead=",\n  ")
            os.write(stats, json.dumps(stream.share_result()).encode())
            status = 0
        finally:
            os._exit(status)
    try:
        written = jsonfmt.write_items(out, stream.share(0, 2, jsonfmt.UnixRows))
        out.flush()
        _, status = os.waitpid(child, 0)
        child = 0
        if status != 0:
            jsonfmt.write_items(out, stream.share(1, 2, jsonfmt.UnixRows),
                                lead=",\n  " if written else "\n  ")
        else:
            size = os.fstat(items).st_size
            out.flush()
            _copy_out(out, items, 1 if size and not written else 0, size)  # 1: a comma
            stream.add_share_result(*json.loads(os.pread(stats, os.fstat(stats).st_size, 0)))
        jsonfmt.write_tail(out, stream)
    finally:
        if child:                           # interrupted (closed pipe, ^C): end the child
            os.kill(child, 9)
            os.waitpid(child, 0)
        os.close(items)
        os.close(stats)


def _copy_out(out: TextIO, fd: int, offset: int, size: int) -> None:
    """Bytes ``offset`` to ``size`` of file ``fd`` to ``out`` (flushed): copied by the kernel
    (sendfile) where ``out`` is a descriptor that takes it, else read and written through
    ``out.buffer`` (a reader gone is then the stream's business: ``cli.streams``)."""
    try:
        target: int | None = out.fileno()
    except (AttributeError, OSError, ValueError):      # io.UnsupportedOperation: a ValueError
        target = None
    while offset < size:
        if target is not None:
            try:
                sent = os.sendfile(target, fd, offset, size - offset)
            except OSError:     # EPIPE: the reader left; EINVAL: a target it cannot write
                sent = 0
            if sent:
                offset += sent
                continue
            target = None
        chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
        out.buffer.write(chunk)
        offset += len(chunk)


def write_listing(out: TextIO, meta: Snapshot | SnapshotStream, sockets: Iterable[Socket],
                  columns: Sequence[cols.Column], *, fmt: str = "auto", header: bool = True,
                  extras: dict | None = None, fields: dict | None = None) -> None:
    """Write sockets as JSON, CSV, a table (terminal) or plain text (pipe).

    ``sockets`` may be a stream: it is consumed once, as it is written (a table needs at most
    ``TABLE_MAX_ROWS`` of them in memory). A Netns column is put first when ``meta`` covers
    several namespaces; the Container and "Forwards to" columns are added when one of the
    first ``TABLE_MAX_ROWS`` sockets has a container or a published port.

    Args:
        meta: the snapshot (or stream) the sockets come from (namespaces, JSON head and tail).
        columns: the columns of the text forms (JSON writes every field).
        extras: JSON only: per-socket extra keys, by index in ``sockets``.
        fields: JSON only: extra top-level keys.
    """
    if fmt == "json":
        from . import jsonfmt
        from ..snapshot import SnapshotStream   # loaded already where a stream was made
        if isinstance(meta, SnapshotStream) and sockets is meta and meta.divisible:
            if meta.dump_bytes >= SHARED_JSON_BYTES and not extras and fork_allowed():
                write_json_in_two(out, meta, fields)
                return
            sockets = meta.share(0, 1, jsonfmt.UnixRows)
        jsonfmt.write_snapshot(out, meta, sockets, extras=extras, fields=fields)
        return
    if len(meta.namespaces) > 1:
        columns = (cols.netns_column(meta.namespaces), *columns)
    sockets = iter(sockets)
    first = list(itertools.islice(sockets, TABLE_MAX_ROWS + 1))
    # container columns only when the first rows have something to show in them
    if any(s.container is not None for s in first):
        columns = (*columns, cols.CONTAINER)
    if any(s.published is not None for s in first):
        columns = (*columns, cols.PUBLISHED)
    getters: list[Callable[[Socket], str]] = [c.get for c in columns]
    if fmt == "csv":
        from . import csvfmt
        csvfmt.write_rows(out, [c.key for c in columns],
                          ([get(s) for get in getters] for s in itertools.chain(first, sockets)),
                          header=header)
        return
    headers = [c.header for c in columns]
    aligns = [c.align for c in columns]
    if use_table(out, len(first)):
        from . import table
        table.write_table(out, headers, [[get(s) for get in getters] for s in first], aligns,
                          header=header)
        return
    from . import text
    text.write_rows(out, headers, ([get(s) for get in getters]
                                   for s in itertools.chain(first, sockets)),
                    aligns, header=header)


def write_port_view(out: TextIO, meta: Snapshot, sockets: Sequence[Socket],
                    accepted: dict[int, int], *, address: str | None, port: int,
                    service: str | None, port_class: str, fmt: str = "auto",
                    header: bool = True, owners: bool = True) -> None:
    """``portscope PORT``: the sockets on a port, each listener with the count of connections
    accepted from it (``accepted``: index in ``sockets`` -> count). JSON adds the query
    (``address``, ``port``, ``service``, ``port_class``) and ``accepted_connections``; on a
    terminal, a heading line above the table and a sentence per published port below it."""
    if fmt == "json":
        extras = {i: {"accepted_connections": n} for i, n in accepted.items()}
        fields = {"query": {"address": address, "port": port, "service": service,
                            "port_class": port_class}}
        write_listing(out, meta, sockets, (), fmt="json", extras=extras, fields=fields)
        return
    if not sockets:
        return
    counts = {id(sockets[i]): n for i, n in accepted.items()}
    where = f"{address}:{port}" if address else f"port {port}"
    if out.isatty() and header:
        out.write(f"{where} ({service or 'no service name'}, {port_class}): "
                  f"{len(sockets)} socket(s)\n")
    write_listing(out, meta, sockets, cols.port_columns(counts, owners=owners), fmt=fmt,
                  header=header)
    if out.isatty():
        out.writelines(cols.published_sentence(s) + "\n" for s in sockets
                       if s.published is not None)


def write_ports(out: TextIO, ports: Sequence[int], *, fmt: str = "auto") -> None:
    """``free``'s answer: one port per line, or ``{"schema_version": 1, "ports": [...]}``."""
    if fmt == "json":
        out.write(json.dumps({"schema_version": 1, "ports": list(ports)}) + "\n")
    else:
        out.writelines(f"{port}\n" for port in ports)
