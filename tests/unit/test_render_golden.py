"""Golden tests of the renderers: fixed sockets (forked holders, a v6only wildcard, a container's
published port, a kernel-held TIME_WAIT, a process whose name holds terminal control
characters) rendered by every writer of render/, compared with the files in
tests/fixtures/golden/. A change of output shows up here as a diff to review; after a
deliberate change, rerun with PORTSCOPE_UPDATE_GOLDEN=1 and commit the new files."""

from __future__ import annotations

import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from portscope.bindcheck import BindDiagnosis, Reason, Trial
from portscope.explain import Explanation, Section
from portscope.kill import KillPlan, Outcome, PortCheck, Respawner, Target
from portscope.render import check, columns as cols, explain, jsonfmt, kill, listing, table
from portscope.types import (Container, Endpoint, Family, NetNamespace, Owner, OwnerUnknown,
                             ProcessInfo, Proto, Published, Snapshot, Socket, State)

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
HOST = 4026531840

NGINX = ProcessInfo(pid=4242, ppid=1, name="nginx", exe="/usr/sbin/nginx",
                    cmdline=("nginx", "-g", "daemon off;"), user="root", uid=0,
                    started_at=STARTED, unit="nginx.service")
WORKER = ProcessInfo(pid=4243, ppid=4242, name="nginx", exe="/usr/sbin/nginx",
                     cmdline=("nginx: worker process",), user="www-data", uid=33,
                     started_at=STARTED)
HOSTILE = ProcessInfo(pid=777, ppid=1, name="evil\x1b[31m\nname", exe="/tmp/x\x07",
                      cmdline=("sh", "-c", "\x1b]0;title\x07"), user="nobody", uid=65534,
                      started_at=STARTED)
PROXY = ProcessInfo(pid=900, ppid=1, name="docker-proxy", exe="/usr/bin/docker-proxy",
                    user="root", uid=0, started_at=STARTED)
WEB = Container(id="ab" * 32, name="web", runtime="docker", image="nginx:1.27")


def _sock(proto, family, local, state, inode, owners=(), **kw) -> Socket:
    return Socket(proto, family, Endpoint(*local), kw.pop("remote", None), state, inode,
                  kw.pop("uid", 0), HOST, kw.pop("v6only", None), 0, 0,
                  tuple(Owner(p.pid, fd, p) for p, fd in owners), **kw)


SOCKETS = (
    _sock(Proto.TCP, Family.IPV4, ("0.0.0.0", 80), State.LISTEN, 1001,
          [(NGINX, 6), (WORKER, 6)]),
    _sock(Proto.TCP, Family.IPV6, ("::", 80), State.LISTEN, 1002, [(NGINX, 7), (WORKER, 7)],
          v6only=True),
    _sock(Proto.UDP, Family.IPV4, ("127.0.0.1", 5353), State.UNCONN, 1003, [(HOSTILE, 3)],
          uid=65534),
    _sock(Proto.TCP, Family.IPV4, ("127.0.0.1", 80), State.ESTABLISHED, 1004, [(WORKER, 9)],
          remote=Endpoint("127.0.0.1", 51000)),
    _sock(Proto.TCP, Family.IPV4, ("127.0.0.1", 80), State.TIME_WAIT, 0,
          remote=Endpoint("127.0.0.1", 50999), owner_unknown=OwnerUnknown.KERNEL),
    _sock(Proto.TCP, Family.IPV4, ("0.0.0.0", 8080), State.LISTEN, 1005, [(PROXY, 4)],
          container=WEB, published=Published(WEB, "172.17.0.2", 80, "docker-proxy",
                                             (Owner(5000, 3, NGINX),))),
)
SNAPSHOT = Snapshot(SOCKETS, STARTED, "host1", "netlink", True, ("one warning",),
                    (NetNamespace(HOST, "host"),))
NAMES = {80: "http", 5353: "mdns", 8080: "http-alt"}


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PORTSCOPE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERM", "dumb")


@pytest.mark.parametrize("fmt, name", [("auto", "listeners.txt"), ("csv", "listeners.csv"),
                                       ("json", "listeners.json")])
def test_listing(fmt, name):
    out = io.StringIO()
    columns = cols.listener_columns(lambda port, proto: NAMES.get(port))
    listing.write_listing(out, SNAPSHOT, SOCKETS, columns, fmt=fmt)
    golden(name, out.getvalue())


def test_list_columns_without_header():
    out = io.StringIO()
    listing.write_listing(out, SNAPSHOT, SOCKETS, cols.LIST_COLUMNS, header=False)
    golden("list-no-header.txt", out.getvalue())


def test_rich_table():
    out = io.StringIO()
    rows = [[c.get(s) for c in cols.LIST_COLUMNS] for s in SOCKETS]
    table.write_table(out, [c.header for c in cols.LIST_COLUMNS], rows,
                      [c.align for c in cols.LIST_COLUMNS], title="sockets")
    golden("list-table.txt", out.getvalue())


def test_published_sentence():
    golden("published.txt", cols.published_sentence(SOCKETS[-1]) + "\n")


DIAGNOSIS = BindDiagnosis(
    port=80, proto=Proto.TCP, binds=("[::]:80 (dual-stack)",), uid=0, bindable=False,
    errno="EADDRINUSE",
    reasons=(Reason("wildcard-overlap", "0.0.0.0:80 (nginx) covers every IPv4 address"),),
    warnings=(Reason("owners-hidden", "1 holder could not be read\x1b[2J"),),
    blockers=SOCKETS[:2], blocker_codes=(("wildcard-overlap",), ("in-use",)),
    fixes=("portscope kill 80",), trial=Trial(True, "EADDRINUSE", True),
    rules_errno="EADDRINUSE", netns=HOST, complete=True)


def test_check():
    out = io.StringIO()
    check.write_diagnosis(out, DIAGNOSIS)
    golden("check.txt", out.getvalue())
    golden("check.json", json.dumps(check.diagnosis_json(DIAGNOSIS, None), indent=2) + "\n")


def _plan() -> KillPlan:
    targets = [
        Target(4242, NGINX, 123, SOCKETS[:2],
               respawner=Respawner("systemd", "nginx.service", "systemctl stop nginx.service",
                                   "systemd would start nginx.service again (Restart=always)")),
        Target(777, HOSTILE, 456, (SOCKETS[2],)),
        Target(1, ProcessInfo(pid=1, name="systemd", user="root"), 1, (SOCKETS[2],),
               refusal="PID 1 is init: its death takes the system (or container) down"),
    ]
    return KillPlan(80, None, frozenset({Proto.TCP}), targets, SOCKETS[:3], (), (SOCKETS[4],),
                    (SOCKETS[3],), SNAPSHOT)


def test_kill():
    plan = _plan()
    outcomes = (Outcome(4242, "nginx", "exited", ("SIGTERM",)),
                Outcome(777, HOSTILE.name, "survived", ("SIGTERM", "SIGKILL"),
                        "still holds its socket(s) after 5 s"))
    port_check = PortCheck(False, (DIAGNOSIS,), (SOCKETS[4],), (SOCKETS[2],), None)
    out = io.StringIO()
    kill.write_plan(out, plan, "SIGTERM")
    kill.write_outcomes(out, outcomes)
    kill.write_check(out, 80, port_check)
    golden("kill.txt", out.getvalue())
    doc = kill.kill_json(80, None, "SIGTERM", False, kill.plan_json(plan), outcomes=outcomes,
                         check=port_check)
    golden("kill.json", json.dumps(doc, indent=2) + "\n")


def test_explain():
    explanation = Explanation("port", 80, True, "Port 80 (http) is served by nginx\x1b[0m.", (
        Section("TCP listener 0.0.0.0:80", ("Scope: all interfaces, IPv4 only.",
                                            "Held by 2 processes through this one socket."),
                SOCKETS[:1]),
        Section("In short", ("A port is held by sockets, sockets by processes.",))))
    out = io.StringIO()
    explain.write_explanation(out, explanation)
    golden("explain.txt", out.getvalue())
    golden("explain.json", json.dumps(explain.explanation_json(explanation), indent=2) + "\n")


def test_json_documents_are_strict_and_ascii():
    for path in GOLDEN.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{path.name}: {c}"))
        assert text.isascii(), path.name


def test_every_golden_file_is_checked():
    names = {p.name for p in GOLDEN.iterdir()}
    assert names == {"listeners.txt", "listeners.csv", "listeners.json", "list-no-header.txt",
                     "list-table.txt", "published.txt", "check.txt", "check.json", "kill.txt",
                     "kill.json", "explain.txt", "explain.json"}


def test_jsonfmt_schema_version_is_in_every_document():
    for name in ("listeners.json", "check.json", "kill.json", "explain.json"):
        assert json.loads((GOLDEN / name).read_text())["schema_version"] == \
            jsonfmt.SCHEMA_VERSION
