"""Output of the UNIX socket commands: ``portscope PATH|@NAME`` (who), ``check PATH`` and
``check --clean PATH``, as text and JSON."""

from __future__ import annotations

import json
import stat
from typing import TextIO

from . import columns as cols
from . import jsonfmt


def file_json(file) -> dict | None:
    """A ``unixsock.SocketFile`` as JSON (mode as octal text)."""
    if file is None:
        return None
    return {"path": file.path, "error": file.error, "is_socket": file.is_socket,
            "dev": file.dev, "inode": file.inode,
            "mode": None if file.mode is None else f"{file.mode:04o}",
            "uid": file.uid, "gid": file.gid}


def file_sentence(file) -> str:
    """What is at the path, in words: ``socket file inode 123 on device 0:42, mode 0660``."""
    if file is None:
        return "an abstract name (no file; any process of the network namespace may connect)"
    if file.error == "missing":
        return "no file at this path"
    if file.error:
        return file.error.replace("-", " ")
    if not file.is_socket:
        return "not a socket file"
    return (f"socket file inode {file.inode}, mode {stat.filemode(file.mode | stat.S_IFSOCK)} "
            f"({file.mode:04o}), owner uid {file.uid} gid {file.gid}")


def peer_owners_text(sockets) -> str:
    """Every process on the other end of ``sockets``: ``name (pid N)``, each once."""
    seen = dict.fromkeys(f"{cols.safe(o.process.name or '?')} (pid {o.pid})"
                         for s in sockets for p in s.unix.peers for o in p.owners)
    return ", ".join(seen) or "none"


def diagnosis_json(diagnosis, removed: bool | None = None) -> dict:
    """``check PATH``'s document: ``path``, ``bindable``, ``reasons`` ``[{code, text}]``,
    ``file``, ``blockers`` (sockets), ``complete`` and, after ``--clean``, ``removed``."""
    processes: dict[int, str] = {}
    addresses: dict[str, str] = {}
    doc = {"schema_version": jsonfmt.SCHEMA_VERSION, "path": diagnosis.path,
           "bindable": diagnosis.bindable,
           "reasons": [{"code": c, "text": t} for c, t in diagnosis.reasons],
           "file": file_json(diagnosis.file),
           "blockers": [json.loads(jsonfmt.socket_json(s, processes, addresses))
                        for s in diagnosis.blockers],
           "complete": diagnosis.complete}
    if removed is not None:
        doc["removed"] = removed
    return doc


def write_diagnosis(out: TextIO, diagnosis) -> None:
    """``check PATH`` as text: the verdict, each reason, the blocking sockets and a fix."""
    path = cols.safe(diagnosis.path)
    verdict = "bindable" if diagnosis.bindable else "NOT bindable"
    out.write(f"{path} (unix): {verdict}\n")
    if diagnosis.file is not None and not diagnosis.file.error:
        out.write(f"file: {file_sentence(diagnosis.file)}\n")
    if diagnosis.reasons:
        out.write("reasons:\n")
        for code, text in diagnosis.reasons:
            out.write(f"  {code}: {cols.safe(text)}\n")
    for s in diagnosis.blockers:
        out.write(f"  {cols.PROTO.get(s)} {s.state.value} inode {s.inode} held by "
                  f"{_holders(s)}\n")
    if diagnosis.stale:
        out.write(f"fix: portscope check --clean {path}\n")
    elif diagnosis.blockers:
        out.write(f"fix: stop every holder: portscope kill {path}\n")


def _holders(sock) -> str:
    if not sock.owners:
        return f"(no visible owner: {sock.owner_unknown})"
    return ", ".join(f"{cols.safe(o.process.name or '?')} (pid {o.pid})" for o in sock.owners)
