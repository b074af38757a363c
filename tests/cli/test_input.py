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
