"""JSON output (``schema_version`` 1): the data model's field names, ISO 8601 UTC times, nothing
humanised.

Socket listings are encoded by hand, streaming, with each process encoded once: a 200,000-socket
snapshot would otherwise cost more to encode than to take.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TextIO

from ..snapshot import SnapshotStream
from ..types import (Endpoint, Family, OwnerUnknown, ProcessInfo, Proto, Snapshot, Socket,
                     State, UnixType)
from .escape import undecodable_escaped

SCHEMA_VERSION = 1
_encode = json.encoder.encode_basestring_ascii     # the C implementation


def jsonable(value: Any) -> Any:
    """Turn model objects (dataclasses, named tuples, enums, datetimes) into JSON values;
    strings with undecodable bytes, mapping keys included, get them as ``\\xNN``
    (``escape.undecodable_escaped``), so that the output is strict JSON (no lone
    surrogates)."""
    if isinstance(value, str):
        return undecodable_escaped(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {undecodable_escaped(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """``value`` as indented JSON text (for documents: check, kill, explain, audit, SARIF,
    services, free), through ``jsonable``: every JSON document portscope writes is strict."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def process_json(process: ProcessInfo) -> str:
    """One ``ProcessInfo`` as a JSON object text."""
    return json.dumps(jsonable(process), ensure_ascii=True)


def _endpoint(ep: Endpoint | None, cache: dict[str, str]) -> str:
    if ep is None:
        return "null"
    address = cache.get(ep.address)
    if address is None:
        address = cache[ep.address] = ('{"address": ' + _encode(undecodable_escaped(ep.address))
                                       + ', "port": ')
    return f'{address}{"null" if ep.port is None else ep.port}}}'


_V6ONLY = {None: "null", True: "true", False: "false"}
_HEADS = {(p, f): f'{{"proto": "{p.value}", "family": "{f.value}", "local": '
          for p in Proto for f in Family}
_STATES = {s: f', "state": "{s.value}", "inode": ' for s in State}


def _owners_json(owners, processes: dict[int, str]) -> str:
    parts = []
    for pid, fd, process in owners:
        encoded = processes.get(id(process))
        if encoded is None:
            encoded = processes[id(process)] = process_json(process)
        parts.append(f'{{"pid": {pid}, "fd": {fd}, "process": {encoded}}}')
    return parts[0] if len(parts) == 1 else ", ".join(parts)


_UNIX_TYPES = {t: f', "unix_type": "{t.value}", "vfs_dev": ' for t in UnixType}


def socket_json(s: Socket, processes: dict[int, str], addresses: dict[str, str],
                extra: Mapping[str, Any] | None = None) -> str:
    """One ``Socket`` as a JSON object text; ``processes`` caches encoded processes (by the
    identity of their ``ProcessInfo``) and ``addresses`` the encoded start of endpoints.
    ``extra`` adds view-specific keys (made strict like every string: ``jsonable``); a UNIX
    socket adds ``unix_type``, ``vfs_dev``,
    ``vfs_inode``, ``peer_inode`` and ``peers`` (``[{"inode", "owners"}]``). This runs once per
    socket of a listing: keep it lean."""
    proto, family, local, remote, state, inode, uid, netns, v6only, rq, wq, owners, unknown, \
        cookie, container, published, unix = s
    held = _owners_json(owners, processes) if owners else ""
    tail = ""
    if unix is not None:
        utype, vfs_dev, vfs_inode, peer_inode, _pending, peers = unix
        if len(peers) == 1:
            listed = (f'{{"inode": {peers[0][0]}, "owners": '
                      f'[{_owners_json(peers[0][1], processes)}]}}')
        else:
            listed = ", ".join(f'{{"inode": {i}, "owners": [{_owners_json(o, processes)}]}}'
                               for i, o in peers)
        tail = (f'{_UNIX_TYPES[utype]}{"null" if vfs_dev is None else vfs_dev}, '
                f'"vfs_inode": {"null" if vfs_inode is None else vfs_inode}, '
                f'"peer_inode": {"null" if peer_inode is None else peer_inode}, '
                f'"peers": [{listed}]')
    if extra:
        tail += "".join(f", {_encode(undecodable_escaped(k))}: {json.dumps(jsonable(v))}"
                        for k, v in extra.items())
    return (f'{_HEADS[proto, family]}{_endpoint(local, addresses)}, '
            f'"remote": {_endpoint(remote, addresses)}{_STATES[state]}{inode}, "uid": {uid}, '
            f'"netns": {"null" if netns is None else netns}, "v6only": {_V6ONLY[v6only]}, '
            f'"rx_queue_bytes": {rq}, "tx_queue_bytes": {wq}, "owners": [{held}], '
            f'"owner_unknown": {"null" if unknown is None else _encode(unknown.value)}, '
            f'"cookie": {"null" if cookie is None else cookie}, '
            f'"container": {"null" if container is None else json.dumps(jsonable(container))}, '
            f'"published": {"null" if published is None else json.dumps(jsonable(published))}'
            f'{tail}}}')


class UnixRows:
    """The JSON object texts of one share of a ``unixsock.UnixJoin``'s selected sockets,
    joined with their owners: the same text as ``socket_json`` of ``UnixJoin.sockets``, made
    without building the joined sockets (a large listing of UNIX sockets: about half the
    time). Each holder's text is made from its process's, encoded once; a socket with
    several holders, or held by a process in a container, is joined and written as
    ``socket_json`` does.

    Args:
        join: the UNIX sockets (``unixsock.UnixJoin``).
        owners: the snapshot's ``fdscan.OwnerIndex``.
        missing: ``owner_unknown`` of a socket with an inode and no visible holder.
        container_of: ``(container id, pid) -> Container``, or None.
        share: ``(k, n)``: the k-th of n consecutive slices of the selection.

    Iterate once; ``missing_owners`` then counts the sockets left without a holder for lack
    of permission (as ``SnapshotStream`` counts them).
    """

    def __init__(self, join, owners, missing: OwnerUnknown | None, container_of,
                 share: tuple[int, int]) -> None:
        self._join, self._owners, self._missing = join, owners, missing
        self._container_of, self._share = container_of, share
        self.missing_owners = 0

    def __iter__(self) -> Iterator[str]:
        from ..owners.fdscan import FD_MASK
        from ..unixsock import join_one
        owners, container_of = self._owners, self._container_of
        packed_of = owners.packed.get
        processes: dict[int, str] = {}
        addresses: dict[str, str] = {}
        holders: dict[int, tuple[str, str] | None] = {}     # pid -> text around its fd

        def held(inode: int) -> str | None:
            """The ``owners`` array's items of ``inode``, None for a socket to be joined."""
            packed = packed_of(inode)
            if packed is None:
                return ""
            if packed < 0:
                return None                                 # several holders
            pid = packed >> 32
            around = holders.get(pid, False)
            if around is False:
                info = owners.info(pid)
                if info is None:
                    around = None       # exited since the scan: not a holder
                elif info.container is not None and container_of is not None:
                    around = ("", "")   # its socket names a container: joined
                else:
                    encoded = processes.get(id(info)) or processes.setdefault(
                        id(info), process_json(info))
                    around = (f'{{"pid": {pid}, "fd": ', f', "process": {encoded}}}')
                holders[pid] = around
            if around is None:
                return ""
            if not around[0]:
                return None
            return f"{around[0]}{packed & FD_MASK}{around[1]}"

        def endpoint(ep: Endpoint | None) -> str:
            text = names[ep] = _endpoint(ep, addresses)
            return text

        names: dict[Endpoint | None, str] = {}
        name_of = names.get
        missing = self._missing
        unknown_missing = ("null" if missing is None else _encode(missing.value))
        count_missing = missing is OwnerUnknown.PERMISSION
        get = owners.get
        for s, peers, remote in self._join.joined(self._share):
            inode = s[5]
            mine = held(inode) if inode else ""
            if len(peers) == 1:
                theirs = held(peers[0])
                if mine is None or theirs is None:
                    yield socket_json(join_one(s, peers, remote, get, missing, container_of),
                                      processes, addresses)
                    continue
                listed = f'{{"inode": {peers[0]}, "owners": [{theirs}]}}'
            else:
                texts = [held(i) for i in peers]
                if mine is None or None in texts:
                    yield socket_json(join_one(s, peers, remote, get, missing, container_of),
                                      processes, addresses)
                    continue
                listed = ", ".join(f'{{"inode": {i}, "owners": [{t}]}}'
                                   for i, t in zip(peers, texts))
            if mine:
                unknown = "null"
            elif inode:
                unknown = unknown_missing
                self.missing_owners += count_missing
            else:
                unknown = '"kernel"'
            (_proto, _family, local, _remote, state, inode, uid, netns, _v6only, rq, wq, _held,
             _unknown, cookie, _container, _published, info) = s
            utype, vfs_dev, vfs_inode, peer_inode = info[0], info[1], info[2], info[3]
            yield (f'{{"proto": "unix", "family": "unix", "local": '
                   f'{name_of(local) or endpoint(local)}, '
                   f'"remote": {name_of(remote) or endpoint(remote)}'
                   f'{_STATES[state]}{inode}, "uid": {uid}, '
                   f'"netns": {"null" if netns is None else netns}, "v6only": null, '
                   f'"rx_queue_bytes": {rq}, "tx_queue_bytes": {wq}, "owners": [{mine}], '
                   f'"owner_unknown": {unknown}, '
                   f'"cookie": {"null" if cookie is None else cookie}, "container": null, '
                   f'"published": null{_UNIX_TYPES[utype]}'
                   f'{"null" if vfs_dev is None else vfs_dev}, '
                   f'"vfs_inode": {"null" if vfs_inode is None else vfs_inode}, '
                   f'"peer_inode": {"null" if peer_inode is None else peer_inode}, '
                   f'"peers": [{listed}]}}')


def write_head(out: TextIO, meta: Snapshot | SnapshotStream,
               fields: Mapping[str, Any] | None = None) -> None:
    """The start of a listing, up to the opening of ``"sockets": [``."""
    head = jsonable({"schema_version": SCHEMA_VERSION, "taken_at": meta.taken_at,
                     "hostname": meta.hostname, "backend": meta.backend,
                     "namespaces": [{"inode": ns.inode, "name": ns.name}
                                    for ns in meta.namespaces],
                     **(dict(fields) if fields else {})})
    out.write(json.dumps(head)[:-1] + ', "sockets": [')


#: items written at once by ``write_items``: a few tens of KiB. Larger batches cost more than
#: they save: each joined batch and its encoding are fresh memory that the allocator gives back
#: to the kernel once freed, page-faulted in again for the next (2,048 rows of UNIX sockets,
#: 2.3 MB: 60 ms more for 50,000 rows in one process than 64 rows at a time)
WRITE_BATCH = 64


def write_items(out: TextIO, sockets: Iterable[Socket | str],
                extras: Mapping[int, Mapping[str, Any]] | None = None,
                lead: str = "\n  ") -> int:
    """Write sockets as the items of the ``sockets`` array; the first is preceded by
    ``lead``, the others by a comma. An item that is a ``str`` is a socket's JSON text
    already (``UnixRows``). Returns how many were written."""
    processes: dict[int, str] = {}
    addresses: dict[str, str] = {}
    batch: list[str] = []
    separator = lead
    count = 0
    for s in sockets:
        batch.append(s if s.__class__ is str else socket_json(
            s, processes, addresses, extras.get(count + len(batch)) if extras else None))
        if len(batch) >= WRITE_BATCH:
            out.write(separator)
            out.write(",\n  ".join(batch))
            separator = ",\n  "
            count += len(batch)
            batch.clear()
    if batch:
        out.write(separator)
        out.write(",\n  ".join(batch))
    return count + len(batch)


def write_tail(out: TextIO, meta: Snapshot | SnapshotStream) -> None:
    """The end of a listing: ``complete`` and ``warnings``, which a stream knows only now."""
    out.write(f'\n], "complete": {json.dumps(meta.complete)}, '
              f'"warnings": {json.dumps(jsonable(list(meta.warnings)))}}}\n')


def write_snapshot(out: TextIO, meta: Snapshot | SnapshotStream, sockets: Iterable[Socket],
                   extras: Mapping[int, Mapping[str, Any]] | None = None,
                   fields: Mapping[str, Any] | None = None) -> None:
    """Stream a listing as ``{"schema_version", "taken_at", "hostname", "backend",
    "namespaces", ...fields, "sockets": [...], "complete", "warnings"}`` to ``out``.

    ``complete`` and ``warnings`` come last: a streamed snapshot knows them only once every
    socket was written.

    Args:
        meta: the snapshot (or snapshot stream) the sockets come from.
        sockets: the sockets to write, in order (a stream is consumed as it is written).
        extras: per-socket extra keys, by index in ``sockets``.
        fields: extra top-level keys (written before ``sockets``).
    """
    write_head(out, meta, fields)
    write_items(out, sockets, extras)
    write_tail(out, meta)
