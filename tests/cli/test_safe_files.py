"""Files portscope writes or reads as root cannot be turned against it by another user.

``audit --write-baseline PATH`` never follows a link at PATH and refuses a directory that
other users may write to unless it is the caller's own (a world-writable sticky directory
such as /tmp, owned by someone else); a FIFO planted at the BPF layout cache path does not
hang a run. Runs are real CLI processes; the other user is ``nobody``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from netns import NOBODY

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the victim here)")


@pytest.fixture
def shared_dir(tmp_path):
    """A world-writable sticky directory owned by nobody (a /tmp that is not root's)."""
    tmp_path.chmod(0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, *NOBODY)
    shared.chmod(0o1777)
    return shared


def test_link_planted_by_another_user_is_not_followed(cli, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    (mine / "baseline.toml").symlink_to(victim)
    result = cli("audit", "--write-baseline", str(mine / "baseline.toml"))
    assert result.returncode == 3, result
    assert "symbolic link" in result.stderr and len(result.stderr.splitlines()) == 1
    assert victim.read_text() == "precious\n"
    assert (mine / "baseline.toml").is_symlink() and os.listdir(mine) == ["baseline.toml"]


def test_directory_writable_by_others_is_refused(cli, tmp_path, shared_dir):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    planted = shared_dir / "baseline.toml"           # nobody's link, as nobody would plant it
    planted.symlink_to(victim)
    os.lchown(planted, *NOBODY)
    for name in ("baseline.toml", "fresh.toml"):
        result = cli("audit", "--write-baseline", str(shared_dir / name))
        assert result.returncode == 3, result
        assert "writable by other users" in result.stderr, result.stderr
    assert victim.read_text() == "precious\n"
    assert sorted(os.listdir(shared_dir)) == ["baseline.toml"]


def test_own_directory_is_written(cli, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    result = cli("audit", "--write-baseline", str(mine / "baseline.toml"))
    assert result.returncode == 0, result.stderr
    written = mine / "baseline.toml"
    assert stat.S_ISREG(written.lstat().st_mode) and "schema_version = 1" in written.read_text()
    assert os.listdir(mine) == ["baseline.toml"]


def test_fifo_at_the_bpf_layout_cache_does_not_hang():
    """A FIFO where the BTF layout cache belongs: the run does not block on it (it would
    wait forever for a writer) and still answers. The FIFO lives in a private mount
    namespace (a tmpfs over the cache's directory), so other runs on this machine never
    see it."""
    from portscope.owners import bpf
    if not bpf.usable():
        pytest.skip("the BPF iterator cannot run here")
    directory = os.path.dirname(bpf.CACHE_PATH)
    script = (f'mkdir -p {directory} && mount -t tmpfs -o mode=0700 none {directory} && '
              f'mkfifo -m 0600 {bpf.CACHE_PATH} && exec "$@"')
    cmd = ["unshare", "--mount", "sh", "-c", script, "sh",
           sys.executable, "-m", "portscope", "--netns", "host"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Proto"), result.stdout
