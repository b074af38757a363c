"""JSON output (``schema_version`` 1): the data model's field names, ISO 8601 UTC times, nothing
humanised.

Socket listings are encoded by hand, streaming, with each process encoded once: a 200,000-socket
snapshot would otherwise cost more to encode than to take.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TextIO

from ..types import Endpoint, ProcessInfo, Snapshot, Socket

SCHEMA_VERSION = 1
_encode = json.encoder.encode_basestring_ascii     # the C implementation


def jsonable(value: Any) -> Any:
    """Turn model objects (dataclasses, named tuples, enums, datetimes) into JSON values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """``value`` as indented JSON text (for small documents: check, audit, services)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def process_json(process: ProcessInfo) -> str:
    """One ``ProcessInfo`` as a JSON object text."""
    return json.dumps(jsonable(process), ensure_ascii=True)


def _endpoint(ep: Endpoint | None, cache: dict[str, str]) -> str:
    if ep is None:
        return "null"
    address = cache.get(ep.address)
    if address is None:
        address = cache[ep.address] = _encode(ep.address)
    return f'{{"address": {address}, "port": {"null" if ep.port is None else ep.port}}}'


def socket_json(s: Socket, processes: dict[int, str], addresses: dict[str, str],
                extra: Mapping[str, Any] | None = None) -> str:
    """One ``Socket`` as a JSON object text; ``processes`` caches encoded processes by pid and
    ``addresses`` encoded address strings. ``extra`` adds view-specific keys."""
    owners = []
    for o in s.owners:
        encoded = processes.get(id(o.process))
        if encoded is None:
            encoded = processes[id(o.process)] = process_json(o.process)
        owners.append(f'{{"pid": {o.pid}, "fd": {o.fd}, "process": {encoded}}}')
    v6only = "null" if s.v6only is None else ("true" if s.v6only else "false")
    text = (f'{{"proto": "{s.proto.value}", "family": "{s.family.value}", '
            f'"local": {_endpoint(s.local, addresses)}, "remote": {_endpoint(s.remote, addresses)}, '
            f'"state": "{s.state.value}", "inode": {s.inode}, "uid": {s.uid}, '
            f'"netns": {"null" if s.netns is None else s.netns}, "v6only": {v6only}, '
            f'"rx_queue_bytes": {s.rx_queue_bytes}, "tx_queue_bytes": {s.tx_queue_bytes}, '
            f'"owners": [{", ".join(owners)}], '
            f'"owner_unknown": {"null" if s.owner_unknown is None else chr(34) + s.owner_unknown.value + chr(34)}, '
            f'"cookie": {"null" if s.cookie is None else s.cookie}')
    if extra:
        text += "".join(f", {json.dumps(k)}: {json.dumps(jsonable(v))}" for k, v in extra.items())
    return text + "}"


def write_snapshot(out: TextIO, snapshot: Snapshot, sockets: Iterable[Socket] | None = None,
                   extras: Mapping[int, Mapping[str, Any]] | None = None,
                   fields: Mapping[str, Any] | None = None) -> None:
    """Stream ``{"schema_version", "taken_at", "hostname", "backend", "complete", "warnings",
    ...fields, "sockets": [...]}`` to ``out``.

    Args:
        sockets: the sockets to write (default: all of the snapshot's).
        extras: per-socket extra keys, by index in ``sockets``.
        fields: extra top-level keys (written before ``sockets``).
    """
    head = {"schema_version": SCHEMA_VERSION, "taken_at": snapshot.taken_at.isoformat(),
            "hostname": snapshot.hostname, "backend": snapshot.backend,
            "complete": snapshot.complete, "warnings": list(snapshot.warnings),
            **(jsonable(dict(fields)) if fields else {})}
    out.write(json.dumps(head)[:-1] + ', "sockets": [')
    processes: dict[int, str] = {}
    addresses: dict[str, str] = {}
    batch = []
    first = True
    for i, s in enumerate(snapshot.sockets if sockets is None else sockets):
        batch.append(("\n  " if first else ",\n  ")
                     + socket_json(s, processes, addresses, extras.get(i) if extras else None))
        first = False
        if len(batch) >= 2048:
            out.write("".join(batch))
            batch.clear()
    out.write("".join(batch) + "\n]}\n")

