"""Audit baselines: the listeners a host is expected to have, keyed on identity, never on PID.

A baseline is a TOML file (``schema_version = 1``) with one ``[[listener]]`` table per expected
listener. ``render()`` writes one from today's listeners, with comments that explain every key;
people may edit it. Keys of an entry (only ``proto`` and ``port`` are required; a key left out
matches anything):

- ``proto``: ``"tcp"`` or ``"udp"``.
- ``port``: a port (``22``), an inclusive range (``"8000-8099"``) or ``"*"`` (any port, for
  one binary).
- ``address``: the bound address as the kernel reports it (``"0.0.0.0"``, ``"::"``,
  ``"127.0.0.1"``, ``"fe80::1%eth0"``); ``"*"`` for any.
- ``dual_stack``: for ``"::"``, true when it also accepts IPv4 (v6only off). A dual-stack
  ``[::]`` listener does **not** satisfy an entry for ``0.0.0.0``: it also exposes IPv6, so it
  is reported as changed (other scope).
- ``exe``: absolute path of the executable (without `` (deleted)``).
- ``sha256``: hex SHA-256 of the executable; leave it out to accept any build.
- ``user``: user name the program runs as.
- ``netns``: network namespace inode (written only when auditing another namespace than
  PID 1's); ``container``: container id (64 hex digits), when the program runs in one.

Comparison (``compare()``): a listener that matches an entry is known; one that matches no
entry is **new**, unless an entry claims its port (a single port or range not yet matched, or
``"*"`` for the same ``exe``) and differs from it in program, hash, user or scope: then it is
**changed**. A single-port entry that nothing matched or claimed is **gone** (range and ``"*"``
entries allow, they do not expect). A listener whose program could not be read (another user's
process, not root) is compared on protocol, port and scope only and counted as unverified.

Errors: anything unreadable, malformed or of another schema version raises ``BaselineError``
with the file name and, where known, the line: a broken baseline is never taken as empty.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import BaselineError
from ..identity import canonical_address
from .rules import RULE_BY_ID, Finding, Listener

if sys.version_info >= (3, 11):
    import tomllib
else:                                          # pragma: no cover - Python 3.10
    import tomli as tomllib

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 4 << 20                       # 4 MiB: about 20,000 entries
_PROTOS = ("tcp", "udp")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTAINER_RE = re.compile(r"[0-9a-f]{12,64}")
_HEADER_RE = re.compile(r"^[ \t]*\[\[[ \t]*listener[ \t]*\]\]", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Entry:
    """One expected listener. None in a field means "any".

    Attributes:
        proto: ``"tcp"`` or ``"udp"``.
        ports: inclusive ``(low, high)``; None for any port.
        address: canonical address text; None for any.
        dual_stack: for ``"::"``: accepts IPv4 too; None for either.
        exe, sha256, user, netns, container: the program's identity (see the module doc).
        line: line of the entry in its file (0 when unknown or not from a file).
    """

    proto: str
    ports: tuple[int, int] | None
    address: str | None = None
    dual_stack: bool | None = None
    exe: str | None = None
    sha256: str | None = None
    user: str | None = None
    netns: int | None = None
    container: str | None = None
    line: int = 0

    @property
    def single_port(self) -> int | None:
        """The port when the entry names exactly one, else None."""
        if self.ports is not None and self.ports[0] == self.ports[1]:
            return self.ports[0]
        return None

    def covers(self, proto: str, port: int) -> bool:
        """True when the entry's protocol and port range include ``proto``/``port``."""
        return self.proto == proto and (self.ports is None
                                        or self.ports[0] <= port <= self.ports[1])


#: Entry fields compared with a listener's identity (beyond protocol and port), in report order.
IDENTITY_FIELDS = ("exe", "sha256", "user", "address", "dual_stack", "netns", "container")
_SCOPE_FIELDS = ("address", "dual_stack")
_KEYS = ("proto", "port") + IDENTITY_FIELDS


@dataclass(frozen=True, slots=True)
class Baseline:
    """A loaded baseline: its entries and the file it came from."""

    entries: tuple[Entry, ...]
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """What a baseline records of a listener.

    ``verified`` is False when the program could not be read: then only protocol, port and
    scope are known and compared.
    """

    proto: str
    port: int
    address: str
    dual_stack: bool | None
    exe: str | None
    sha256: str | None
    user: str | None
    netns: int | None
    container: str | None
    verified: bool


def identity(l: Listener, netns: int | None) -> Identity:
    """The baseline identity of listener ``l``.

    Args:
        l: the listener.
        netns: the namespace inode to record, None for the initial namespace or unknown.
    """
    sock = l.sock
    address = canonical_address(sock.local.address)
    dual = None if address != "::" or sock.v6only is None else not sock.v6only
    process = l.process
    return Identity(sock.proto.value, sock.local.port, address, dual,
                    l.exe_path if l.verified else None,
                    l.exe.sha256 if l.verified else None,
                    l.user if l.verified else None, netns,
                    process.container if process is not None else None, l.verified)


def differences(entry: Entry, ident: Identity) -> list[str]:
    """The identity fields where ``entry`` names a value that ``ident`` does not have (for an
    unverified identity, the scope fields only)."""
    names = IDENTITY_FIELDS if ident.verified else _SCOPE_FIELDS
    return [name for name in names
            if getattr(entry, name) is not None and getattr(entry, name) != getattr(ident, name)]


def _show(name: str, value: Any) -> str:
    if value is None:
        return "none"
    if name == "sha256":
        return value[:12] + "..."
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _finding(rule_id: str, ident: Identity, l: Listener, message: str) -> Finding:
    rule = RULE_BY_ID[rule_id]
    return Finding(rule.id, rule.severity, ident.proto, l.sock.local.address, ident.port,
                   l.pids[0] if l.pids else None, l.exe_path, l.user, message, rule.fix)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of ``compare()``.

    Attributes:
        findings: baseline-new, baseline-changed and baseline-gone findings.
        accepted: the listeners an entry matched (rules marked baselinable skip them).
        unverified: how many listeners were compared without their program's identity.
    """

    findings: tuple[Finding, ...]
    accepted: frozenset[Listener]
    unverified: int


def compare(baseline: Baseline, listeners: Sequence[Listener], netns: int | None = None
            ) -> Comparison:
    """Compare today's listeners with ``baseline``.

    Args:
        baseline: the expected listeners.
        listeners: today's listeners.
        netns: the namespace inode to compare (see ``identity()``).
    Returns:
        a ``Comparison`` (new and changed are high, gone is low; one finding per distinct
        identity, however many sockets share it).
    """
    entries = baseline.entries
    idents = [identity(l, netns) for l in listeners]
    matched: set[int] = set()
    accepted: set[Listener] = set()
    unmatched: dict[Identity, Listener] = {}
    for l, ident in zip(listeners, idents):
        hits = [i for i, e in enumerate(entries)
                if e.covers(ident.proto, ident.port) and not differences(e, ident)]
        if hits:
            matched.update(hits)
            accepted.add(l)
        else:
            unmatched.setdefault(ident, l)
    findings: list[Finding] = []
    claimed: set[int] = set()
    for ident, l in unmatched.items():
        best: tuple[int, list[str]] | None = None
        for i, e in enumerate(entries):
            if not e.covers(ident.proto, ident.port) or i in claimed:
                continue
            if e.single_port is None:
                if e.exe is None or e.exe != ident.exe:
                    continue               # a range or "*" entry allows one binary only
            elif i in matched:
                continue
            diff = differences(e, ident)
            if best is None or len(diff) < len(best[1]):
                best = (i, diff)
        if best is None:
            findings.append(_finding("baseline-new", ident, l,
                                     "new listener: no baseline entry matches it"))
            continue
        i, diff = best
        claimed.add(i)
        e = entries[i]
        changes = ", ".join(f"{name} {_show(name, getattr(e, name))} -> "
                            f"{_show(name, getattr(ident, name))}" for name in diff)
        at = f" (line {e.line})" if e.line else ""
        findings.append(_finding("baseline-changed", ident, l,
                                 f"differs from its baseline entry{at}: {changes}"))
    for i, e in enumerate(entries):
        if i in matched or i in claimed or e.single_port is None:
            continue
        rule = RULE_BY_ID["baseline-gone"]
        at = f" (line {e.line})" if e.line else ""
        findings.append(Finding(rule.id, rule.severity, e.proto, e.address, e.single_port, None,
                                e.exe, e.user, f"baselined listener{at} is not running",
                                rule.fix))
    unverified = sum(1 for l in listeners if not l.verified)
    return Comparison(tuple(findings), frozenset(accepted), unverified)


# --- reading -------------------------------------------------------------------------------------

def load(path: str | os.PathLike[str]) -> Baseline:
    """Read and validate a baseline file.

    Raises:
        BaselineError: unreadable, larger than ``MAX_FILE_BYTES``, not UTF-8, not TOML, of
            another schema version, or with an invalid entry (the message names the line).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BaselineError(f"baseline {name} is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BaselineError(f"baseline {name} is not UTF-8 text (byte {exc.start})") from None
    return parse(text, name)


def parse(text: str, source: str = "<baseline>") -> Baseline:
    """Validate baseline ``text`` (TOML); ``source`` names it in errors.

    Raises:
        BaselineError: see ``load()``.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BaselineError(f"baseline {source} is not valid TOML: {exc}") from None
    except RecursionError:
        raise BaselineError(f"baseline {source} is nested too deeply") from None
    version = document.get("schema_version")
    if version is None:
        raise BaselineError(f"baseline {source} has no schema_version: not a portscope baseline")
    if version != SCHEMA_VERSION:
        raise BaselineError(f"baseline {source} has schema_version {version!r}; this portscope "
                            f"reads version {SCHEMA_VERSION}")
    unknown = sorted(set(document) - {"schema_version", "listener"})
    if unknown:
        raise BaselineError(f"baseline {source}: unknown top-level key {unknown[0]!r} "
                            "(expected schema_version and [[listener]] tables)")
    tables = document.get("listener", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise BaselineError(f"baseline {source}: 'listener' must be [[listener]] tables")
    lines = [text.count("\n", 0, m.start()) + 1 for m in _HEADER_RE.finditer(text)]
    if len(lines) != len(tables):
        lines = [0] * len(tables)
    entries: list[Entry] = []
    seen: dict[Entry, int] = {}
    for number, (table, line) in enumerate(zip(tables, lines), 1):
        where = f"baseline {source}, " + (f"line {line}" if line else f"listener #{number}")
        entry = _entry(table, line, where)
        key = _without_line(entry)
        if key in seen:
            raise BaselineError(f"{where}: repeats the entry of line {seen[key]}"
                                if seen[key] else f"{where}: repeats an earlier entry")
        seen[key] = line
        entries.append(entry)
    return Baseline(tuple(entries), source)


def _without_line(entry: Entry) -> Entry:
    return Entry(**{f.name: getattr(entry, f.name) for f in fields(Entry) if f.name != "line"})


def _entry(table: dict[str, Any], line: int, where: str) -> Entry:
    def fail(message: str) -> BaselineError:
        return BaselineError(f"{where}: {message}")

    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    proto = table.get("proto")
    if proto not in _PROTOS:
        raise fail(f"proto must be \"tcp\" or \"udp\", not {proto!r}")
    if "port" not in table:
        raise fail("port is required (a port, \"LOW-HIGH\" or \"*\")")
    ports = _ports(table["port"], fail)
    values: dict[str, Any] = {}
    for name in ("exe", "sha256", "user", "address", "container"):
        value = table.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise fail(f"{name} must be a non-empty string")
        values[name] = value
    if values["exe"] is not None and not values["exe"].startswith("/"):
        raise fail(f"exe must be an absolute path, not {values['exe']!r}")
    if values["sha256"] is not None:
        values["sha256"] = values["sha256"].lower()
        if not _SHA256_RE.fullmatch(values["sha256"]):
            raise fail("sha256 must be 64 hex digits")
    if values["address"] == "*":
        values["address"] = None
    elif values["address"] is not None:
        try:
            values["address"] = canonical_address(values["address"])
        except ValueError:
            raise fail(f"address {values['address']!r} is not an IP address or \"*\"") from None
    if values["container"] is not None and not _CONTAINER_RE.fullmatch(values["container"]):
        raise fail("container must be a container id (hex digits)")
    dual_stack = table.get("dual_stack")
    if dual_stack is not None and not isinstance(dual_stack, bool):
        raise fail("dual_stack must be true or false")
    netns = table.get("netns")
    if netns is not None and (isinstance(netns, bool) or not isinstance(netns, int)
                              or netns <= 0):
        raise fail("netns must be a namespace inode number")
    return Entry(proto, ports, dual_stack=dual_stack, netns=netns, line=line, **values)


def _ports(value: Any, fail) -> tuple[int, int] | None:
    if value == "*":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value, value
        raise fail(f"port {value} is out of range 1-65535")
    if isinstance(value, str):
        low, sep, high = value.partition("-")
        if sep and low.isascii() and low.isdigit() and high.isascii() and high.isdigit():
            lo, hi = int(low), int(high)
            if 1 <= lo <= hi <= 65535:
                return lo, hi
    raise fail(f"port must be 1-65535, \"LOW-HIGH\" or \"*\", not {value!r}")


# --- writing -------------------------------------------------------------------------------------

_HEADER = """\
# portscope audit baseline: the listeners this host is expected to have.
# Written by `portscope audit --write-baseline` on {host} at {when}.
# Check the host against it with `portscope audit --baseline FILE`: a listener that matches no
# entry is "new", a baselined port served by another binary, hash, user or scope is "changed",
# and a single-port entry that nothing serves is "gone".
#
# One [[listener]] table per expected listener; edit freely. A key left out matches anything.
#   proto       "tcp" or "udp" (required)
#   port        22, a range "8000-8099", or "*" for any port of this exe (required)
#   address     the bound address ("0.0.0.0", "::", "127.0.0.1"); "*" for any
#   dual_stack  for "::": true when it also accepts IPv4 (v6only off). A dual-stack "::"
#               listener does not satisfy an entry for "0.0.0.0": it also exposes IPv6.
#   exe         absolute path of the executable
#   sha256      SHA-256 of the executable; remove it to accept any build (upgrades)
#   user        the user the program runs as
#   netns       network namespace inode; container: container id (when known)

schema_version = {version}
"""


def toml_string(text: str) -> str | None:
    """``text`` as a TOML basic string, or None when it cannot be written (a path with bytes
    that are not UTF-8, which Python keeps as lone surrogates)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            return None
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def entry_of(ident: Identity) -> Entry:
    """The baseline entry that records ``ident`` exactly."""
    return Entry(ident.proto, (ident.port, ident.port), ident.address, ident.dual_stack,
                 ident.exe, ident.sha256, ident.user, ident.netns, ident.container)


def render(listeners: Iterable[tuple[Identity, str | None]], *, host: str, when: str) -> str:
    """A baseline file's text recording ``listeners``.

    Args:
        listeners: ``(identity, note)`` pairs; the note (process name, unit) becomes a comment.
            Repeated identities (a SO_REUSEPORT group, forked holders) are written once.
        host: host name for the header comment.
        when: time of the recording (ISO 8601) for the header comment.
    Returns:
        TOML text that ``parse()`` reads back to the same entries.
    """
    notes: dict[Identity, str | None] = {}
    for ident, note in listeners:
        notes.setdefault(ident, note)
    order = sorted(notes, key=lambda i: (i.proto, i.port, i.address, i.exe or "", i.user or ""))
    out = [_HEADER.format(host=host, when=when, version=SCHEMA_VERSION).rstrip("\n")]
    for ident in order:
        out.append("")
        note = notes[ident]
        if note:        # a process name may hold any character: keep it one comment line
            out.append("# " + "".join(ch if ch.isprintable() else "?" for ch in note))
        if not ident.verified:
            out.append("# program not readable when recorded: matched on protocol, port and "
                       "address only")
        texts = {name: toml_string(getattr(ident, name)) for name in ("address", "exe", "user")
                 if getattr(ident, name) is not None}
        unwritable = [name for name, text in texts.items() if text is None]
        if unwritable:
            out.append(f"# not UTF-8, left out (matches any): {', '.join(unwritable)}")
        out.append("[[listener]]")
        out.append(f'proto = "{ident.proto}"')
        out.append(f"port = {ident.port}")
        if texts.get("address"):
            out.append(f"address = {texts['address']}")
        if ident.dual_stack is not None:
            out.append(f"dual_stack = {'true' if ident.dual_stack else 'false'}")
        if texts.get("exe"):
            out.append(f"exe = {texts['exe']}")
        if ident.sha256 is not None:
            out.append(f'sha256 = "{ident.sha256}"')
        if texts.get("user"):
            out.append(f"user = {texts['user']}")
        if ident.netns is not None:
            out.append(f"netns = {ident.netns}")
        if ident.container is not None:
            out.append(f'container = "{ident.container}"')
    return "\n".join(out) + "\n"


def save(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that a crash, a kill or a full disk leaves either the old
    file or the new one, never a mix: write a temporary file in the same directory, fsync it,
    rename it over ``path``, fsync the directory. An existing file keeps its permission bits,
    a new one gets 0644.

    Safe as root in a directory others can write to: every step works relative to the
    directory opened once (no path is resolved twice); the temporary file is created with
    O_EXCL | O_NOFOLLOW; the final name is never followed (a symbolic link there is refused,
    and the rename replaces a name, never a link's target); and a directory writable by other
    users (group or world, sticky or not) is refused unless the caller owns it.

    Raises:
        BaselineError: ``path`` is a symbolic link or not a regular file, its directory is
            writable by others and not the caller's, or any step failed (the old file, if any,
            is untouched).
    """
    name = os.fspath(path)
    directory, base = os.path.split(name)

    def fail(why: str) -> BaselineError:
        return BaselineError(f"cannot write baseline {name}: {why}")

    if not base:
        raise fail("give a file name")
    try:
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    temp = None
    try:
        info = os.fstat(dir_fd)
        if info.st_mode & 0o022 and info.st_uid != os.geteuid():
            raise fail("its directory is writable by other users and not yours (another user "
                       "could plant a link or swap the file there): choose a directory only "
                       "you can write to")
        try:
            old = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            mode = 0o644
        else:
            if stat.S_ISLNK(old.st_mode):
                raise fail("it is a symbolic link, not followed: give the path of the file "
                           "itself")
            if not stat.S_ISREG(old.st_mode):
                raise fail("it exists and is not a regular file")
            mode = stat.S_IMODE(old.st_mode)
        for _ in range(100):
            candidate = f".{base}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            except FileExistsError:
                continue
            temp = candidate
            break
        else:
            raise fail("no temporary name was free")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(temp, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        temp = None
        os.fsync(dir_fd)
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    finally:
        if temp is not None:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        os.close(dir_fd)
