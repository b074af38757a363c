"""``--backend psutil`` says once what it cannot see, shows what psutil does give (every holder
of a shared socket, through each process's own socket list), and stays honest: no ``uid -1``
shown as a user, ``complete: false`` when holders cannot be attributed."""

from __future__ import annotations

import json

import pytest

from netns import NetNS, can_use_netns, netns  # noqa: F401  (the fixture)

pytest.importorskip("psutil")

FORKED_TRIO = """
    l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
    kids = [fork_sleeper() for _ in range(2)]
    ready(kids=kids)
"""


def test_every_holder_of_a_forked_listener(netns):
    h = netns.holder(FORKED_TRIO)
    code, doc = netns.portscope_json("8080", "--backend", "psutil", "--netns", "host")
    (sock,) = [s for s in doc["sockets"] if s["state"] == "LISTEN"]
    assert code == 0
    assert sorted(o["pid"] for o in sock["owners"]) == sorted([h.pid, *h.info["kids"]])
    assert doc["complete"] is True


def test_reuseport_members_with_forked_children_are_not_guessed(netns):
    """Two SO_REUSEPORT listeners, each shared with a forked child: psutil names one holder
    per socket and cannot tell which socket the children hold (no inode): complete is
    false, and no socket is given a holder it may not have."""
    holders = [netns.holder("""
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 8080)); s.listen()
        ready(kid=fork_sleeper())
    """) for _ in range(2)]
    _code, doc = netns.portscope_json("8080", "--backend", "psutil", "--netns", "host")
    listeners = [s for s in doc["sockets"] if s["state"] == "LISTEN"]
    assert len(listeners) == 2
    families = [{h.pid, h.info["kid"]} for h in holders]
    for sock in listeners:
        pids = {o["pid"] for o in sock["owners"]}
        assert any(pids <= family for family in families), (pids, families)
    assert doc["complete"] is False
    assert any("psutil" in w for w in doc["warnings"])


def test_unknown_uid_is_not_shown_as_a_user(netns):
    """psutil gives no socket uid: JSON says -1 (the schema's "the source does not tell it"),
    the table ``?``, never ``uid -1``."""
    netns.holder("l = socket.socket(); l.bind(('127.0.0.1', 8080)); l.listen(); ready()")
    result = netns.portscope("8080", "--backend", "psutil", "--json", user="nobody")
    doc = json.loads(result.stdout)
    (sock,) = doc["sockets"]
    assert sock["owners"] == [] and sock["owner_unknown"] == "permission"
    assert sock["uid"] == -1 and doc["complete"] is False
    table = netns.portscope("8080", "--backend", "psutil", user="nobody")
    assert "uid -1" not in table.stdout and "(permission)" in table.stdout
    assert "run as root" in table.stderr


def test_says_once_what_it_cannot_see(cli):
    if not can_use_netns():
        pytest.skip("needs root to create network namespaces")
    made = [NetNS() for _ in range(2)]
    try:
        result = cli("--backend", "psutil")
        lines = [line for line in result.stderr.splitlines() if "namespace" in line]
        assert result.returncode == 0
        assert len(lines) == 1, result.stderr
        assert "psutil" in lines[0] and "--backend netlink" in lines[0]
    finally:
        for ns in made:
            ns.close()
