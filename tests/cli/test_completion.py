"""Shell completions generated from the parser, run in the real shells (bash, fish, zsh)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def needs(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """``{shell: path}`` of the scripts ``portscope completion SHELL`` prints."""
    from conftest import run_cli
    folder = tmp_path_factory.mktemp("completion")
    paths = {}
    for shell in ("bash", "zsh", "fish"):
        result = run_cli("completion", shell)
        assert result.returncode == 0 and result.stderr == "", result
        paths[shell] = folder / shell
        paths[shell].write_text(result.stdout)
    return paths


def bash_complete(script, words: list[str]) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being completed)."""
    line = " ".join(words)
    program = (f'source "{script}"; COMP_WORDS=({" ".join(repr(w) for w in words)}); '
               f'COMP_CWORD={len(words) - 1}; COMP_LINE={line!r}; COMP_POINT={len(line)}; '
               '_shtab_portscope; printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completes_commands_options_and_choices(scripts):
    needs("bash")
    assert bash_complete(scripts["bash"], ["portscope", "ki"]) == ["kill"]
    assert "completion" in bash_complete(scripts["bash"], ["portscope", "co"])
    assert "--state" in bash_complete(scripts["bash"], ["portscope", "list", "--st"])
    assert bash_complete(scripts["bash"], ["portscope", "list", "--backend", ""]) == \
        ["netlink", "procfs", "psutil"]
    assert set(bash_complete(scripts["bash"], ["portscope", "completion", ""])) == \
        {"bash", "zsh", "fish"}


def test_fish_completes_commands_and_choices(scripts):
    needs("fish")

    def offered(line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c",
                                 f'source "{scripts["fish"]}"; complete -C "{line}"'],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    assert offered("portscope ki") == ["kill"]
    assert {"netlink", "procfs", "psutil"} <= set(offered("portscope list --backend "))


def test_zsh_registers_the_completer_from_fpath(scripts, tmp_path):
    """As installed: the script is ``_portscope`` in a folder of ``fpath``; compinit binds it."""
    needs("zsh")
    assert subprocess.run(["zsh", "-n", str(scripts["zsh"])]).returncode == 0
    (tmp_path / "_portscope").write_text(scripts["zsh"].read_text())
    result = subprocess.run(
        ["zsh", "-f", "-c", f'fpath=({tmp_path} $fpath); autoload -U compinit; '
                            f'compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[portscope]'],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "_portscope", result


def test_file_options_complete_file_names(scripts, tmp_path):
    needs("bash")
    (tmp_path / "base.toml").write_text("")
    words = ["portscope", "audit", "--baseline", str(tmp_path / "ba")]
    assert bash_complete(scripts["bash"], words) == [str(tmp_path / "base.toml")]


def test_install_writes_where_the_shell_looks(cli, tmp_path, scripts):
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for shell, where in (("bash", ".local/share/bash-completion/completions/portscope"),
                             ("zsh", ".local/share/zsh/site-functions/_portscope"),
                             ("fish", ".config/fish/completions/portscope.fish")):
            for _ in range(2):                       # a second install replaces the first
                result = cli("completion", shell, "--install")
                assert result.returncode == 0, result
            assert (tmp_path / where).read_text() == scripts[shell].read_text()
            assert str(tmp_path / where) in result.stderr
        assert not [p for p in tmp_path.rglob("*.tmp")]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_install_into_an_unwritable_place_is_one_line_exit_3(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    os.environ["XDG_CONFIG_HOME"] = str(blocker)     # a file where a folder must be
    try:
        result = cli("completion", "fish", "--install")
    finally:
        del os.environ["XDG_CONFIG_HOME"]
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_shell_is_a_usage_error(cli):
    result = cli("completion", "tcshh")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_short_version_flag(cli):
    for flag in ("-V", "--version"):
        result = cli(flag)
        assert result.returncode == 0 and result.stdout.startswith("portscope "), flag
