"""``portscope PORT`` takes its options before or after the port: the implied command is
``who`` whenever a target is left over once the options have taken their values
(``portscope --netns NS 8080``), ``listeners`` when none is (``portscope -4``).

A real listener in a private namespace, looked at from the host through ``--netns NAME``.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from netns import netns  # noqa: F401  (the fixture)

LISTEN = """
l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen()
ready()
"""

#: every option of ``portscope PORT`` (common.add_listing_options), alone or combined; whether
#: the listener on 127.0.0.1:8080 (TCP, IPv4) is then found, and with its owner
OPTIONS = [([], True, True), (["-n"], True, False), (["--no-owners"], True, False),
           (["--json"], True, True), (["--csv"], True, True), (["-H"], True, True),
           (["--no-header"], True, True), (["-t"], True, True), (["--tcp"], True, True),
           (["-4"], True, True), (["--ipv4"], True, True), (["-u"], False, False),
           (["--udp"], False, False), (["-6"], False, False), (["--ipv6"], False, False),
           (["-x"], False, False), (["--unix"], False, False),
           (["--backend", "procfs"], True, True), (["--backend=netlink"], True, True),
           (["-t4n", "--json"], True, False), (["-tu", "-H", "--csv"], True, True)]

def comparable(stdout: str) -> str:
    """The output without the time it was taken (JSON's taken_at)."""
    if stdout.startswith("{"):
        doc = json.loads(stdout)
        doc.pop("taken_at")
        return json.dumps(doc)
    return stdout


@pytest.mark.parametrize("options,found,owned", OPTIONS,
                         ids=[" ".join(o) or "none" for o, _, _ in OPTIONS])
def test_options_work_before_and_after_the_port(netns, options, found, owned):
    h = netns.holder(LISTEN)
    before = run_cli(*options, "--netns", netns.name, "8080")
    after = run_cli("8080", "--netns", netns.name, *options)
    assert before.returncode == after.returncode == (0 if found else 1), (before, after)
    assert comparable(before.stdout) == comparable(after.stdout), (before.stdout, after.stdout)
    if found:
        assert "127.0.0.1" in before.stdout, before.stdout
        assert (str(h.pid) in before.stdout) == owned, before.stdout


def test_options_only_list_the_listeners(netns):
    """``-4`` is an option, not a negative port; ``--netns NS`` takes NS as its value."""
    netns.holder(LISTEN)
    for args in (["-4", "--netns", netns.name], ["--netns", netns.name, "-4"],
                 ["--netns", netns.name]):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result)
        assert "127.0.0.1:8080" in result.stdout and "LISTEN" in result.stdout, result.stdout


def test_help_after_options_is_the_commands_own(netns):
    port = run_cli("--netns", netns.name, "-h", "8080")
    listing = run_cli("--netns", netns.name, "-h")
    assert port.returncode == listing.returncode == 0
    assert port.stdout.startswith("usage: portscope who"), port.stdout
    assert listing.stdout.startswith("usage: portscope listeners"), listing.stdout


@pytest.mark.parametrize("args", [["-1"], ["--json", "-1"], ["-45"]])
def test_a_negative_port_after_options_is_a_bad_port(cli, args):
    result = cli(*args)
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"portscope: error: invalid port '{args[-1]}': " \
                                    "expected a number 1-65535", result.stderr
