"""Bad input: exit 2, one short message, never a traceback (DESIGN.md section 6)."""

from __future__ import annotations

import pytest

BAD_TARGETS = ["70000", "-1", "+80", "8_0", "٨٠", "127.1:80", "::1:80", "80a", " 80", "0",
               "", ":", "80:", "[::1]", "[127.0.0.1]:80", "010.0.0.1:80", "9" * 5000,
               "fe80::1%nosuchif0:80", "nosuchservice-xyz"]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_bad_port_or_endpoint_exits_2(cli, target):
    result = cli(target)
    assert result.returncode == 2, (target, result)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[-1].startswith("portscope: error:")
    assert len(lines[-1]) < 200
    assert result.stdout == ""


@pytest.mark.parametrize("args", [
    ["list", "--port", "5-1"], ["list", "--port", "1-70000"], ["list", "--state", "bogus"],
    ["list", "--pid", "abc"], ["list", "--pid", "0"], ["list", "--user", "no-such-user-x"],
    ["list", "--json", "--csv"], ["list", "-l", "-a"], ["list", "-n", "--pid", "1"],
    ["--bogus"], ["list", "--backend", "nope"],
])
def test_bad_options_exit_2(cli, args):
    result = cli(*args)
    assert result.returncode == 2, (args, result)
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_help_and_version(cli):
    assert cli("--help").returncode == 0
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("portscope ")


# (arguments, words the one-line message must hold): the option, and what would be valid
WORDED = [
    (["list", "--state", "bogus"], ["--state", "'bogus'", "listen", "time-wait", "connected"]),
    (["list", "--pid", "abc"], ["--pid", "'abc'", "1-"]),
    (["list", "--pid", "0"], ["--pid", "1-"]),
    (["list", "--pid", "99999999"], ["--pid", "99999999", "4194304"]),
    (["list", "--user", "4294967296"], ["--user", "4294967296", "4294967294"]),
    (["list", "--user", "no-such-user-x"], ["--user", "no-such-user-x"]),
    (["list", "--port", "99999"], ["--port", "99999", "1-65535"]),
    (["list", "--port", "5-1"], ["--port", "5-1"]),
    (["list", "--backend", "nope"], ["--backend", "netlink", "psutil"]),
    (["explain", "--pid", "99999999"], ["99999999", "4194304"]),
    (["check", "8080", "--user", "4294967296"], ["--user", "4294967294"]),
    (["watch", "--user", "4294967296"], ["--user", "4294967296", "4294967294"]),
    (["watch", "--port", "99999"], ["--port", "99999", "1-65535"]),
]


@pytest.mark.parametrize("args,words", WORDED, ids=[" ".join(a) for a, _ in WORDED])
def test_bad_option_is_said_in_the_users_words(cli, args, words):
    """One line naming the option and what it takes; no parser internals, no usage dump."""
    result = cli(*args)
    assert result.returncode == 2, (args, result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portscope"), result.stderr
    assert "parse_" not in lines[0] and "usage:" not in lines[0], lines[0]
    assert all(word in lines[0] for word in words), (lines[0], words)
    assert result.stdout == ""


def test_an_unrecognized_argument_is_quoted_escaped(cli):
    """argparse quotes what it did not recognize as it is: the line escapes it."""
    result = cli("list", "--x\x1b[31m\u202e")
    assert result.returncode == 2, result
    assert result.stderr == ("portscope: error: unrecognized arguments: --x\\x1b[31m\\u202e "
                             "(see portscope --help)\n")
