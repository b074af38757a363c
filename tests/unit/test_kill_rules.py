"""Pure parts of kill: signal and timeout parsing, systemd Restart= lookup, respawners,
safety refusals that need no target process."""

from __future__ import annotations

import os
import signal

import pytest

from portscope.cli.commands.kill import parse_signal, parse_timeout
from portscope.errors import InvalidInput
from portscope.kill import ancestors, find_respawner, safety_refusal, unit_restart
from portscope.types import Container, ProcessInfo

NO_PID = 2 ** 22 + 1          # above pid_max: no environ to read


@pytest.mark.parametrize("text, sig", [("TERM", signal.SIGTERM), ("sigterm", signal.SIGTERM),
                                       ("KILL", signal.SIGKILL), ("hup", signal.SIGHUP),
                                       ("INT", signal.SIGINT), ("QUIT", signal.SIGQUIT)])
def test_signal_allowlist(text, sig):
    assert parse_signal(text) == sig


@pytest.mark.parametrize("text", ["9", "15", "STOP", "USR1", "", "TERM ", "ＴＥＲＭ"])
def test_signal_rejected(text):
    with pytest.raises(InvalidInput):
        parse_signal(text)


@pytest.mark.parametrize("text, seconds", [("5", 5.0), ("0.5", 0.5), ("3600", 3600.0)])
def test_timeout(text, seconds):
    assert parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "1e3", "3601", " 5", "5s", "٥"])
def test_timeout_rejected(text):
    with pytest.raises(InvalidInput):
        parse_timeout(text)


def test_unit_restart_reads_file_template_and_dropins(tmp_path):
    high, low = tmp_path / "etc", tmp_path / "lib"
    high.mkdir()
    low.mkdir()
    (low / "web.service").write_text("[Service]\nExecStart=/bin/true\nRestart=on-failure\n")
    assert unit_restart("web.service", [str(high), str(low)]) == "on-failure"
    (high / "web.service.d").mkdir()
    (high / "web.service.d" / "10-no.conf").write_text("[Service]\nRestart=\n")
    assert unit_restart("web.service", [str(high), str(low)]) == "no", "empty resets"
    (low / "app@.service").write_text("[Unit]\nRestart=always\n[Service]\nRestart=always\n")
    assert unit_restart("app@1.service", [str(high), str(low)]) == "always"
    assert unit_restart("missing.service", [str(high)]) == "no"


def test_respawners(tmp_path):
    (tmp_path / "web.service").write_text("[Service]\nRestart=always\n")
    web = ProcessInfo(pid=NO_PID, name="web", unit="web.service")
    found = find_respawner(web, 80, [str(tmp_path)])
    assert (found.kind, found.command) == ("systemd", "systemctl stop web.service")
    (tmp_path / "web.socket").write_text("[Socket]\nListenStream=80\n")
    assert find_respawner(web, 80, [str(tmp_path)]).command == \
        "systemctl stop web.socket web.service"
    quiet = ProcessInfo(pid=NO_PID, name="x", unit="quiet.service")
    assert find_respawner(quiet, 80, [str(tmp_path)]) is None
    proxy = ProcessInfo(pid=NO_PID, name="docker-proxy")
    assert find_respawner(proxy, 8080, []).command == \
        "docker stop $(docker ps -q --filter publish=8080)"
    box = Container("a" * 64, name="shop", runtime="podman")
    assert find_respawner(proxy, 8080, [], box).command == "podman stop shop"
    inside = ProcessInfo(pid=NO_PID, name="nginx", container="b" * 64)
    assert find_respawner(inside, 80, []).command == f"docker stop {'b' * 12}"


def test_respawners_of_a_unix_socket(tmp_path):
    units = [str(tmp_path)]
    path = str(tmp_path / "api.sock")
    api = ProcessInfo(pid=NO_PID, name="api", unit="api.service")
    (tmp_path / "api.service").write_text("[Service]\nExecStart=/bin/api\n")
    assert find_respawner(api, path, units) is None
    # a socket unit of another name that listens on the path and starts the service
    (tmp_path / "gate.socket").write_text(f"[Socket]\nListenStream={path}\n"
                                          "Service=api.service\n")
    assert find_respawner(api, path, units).command == "systemctl stop gate.socket api.service"
    assert find_respawner(api, str(tmp_path / "other.sock"), units) is None
    assert find_respawner(api, 8080, units) is None          # a port: the same name only
    (tmp_path / "gate.socket.d").mkdir()
    (tmp_path / "gate.socket.d" / "no.conf").write_text("[Socket]\nListenStream=\n")
    assert find_respawner(api, path, units) is None, "an empty ListenStream= resets the list"
    (tmp_path / "abstract.socket").write_text("[Socket]\nListenDatagram=@api\n"
                                              "Service=api.service\n")
    assert find_respawner(api, "@api", units).command == \
        "systemctl stop abstract.socket api.service"
    proxy = ProcessInfo(pid=NO_PID, name="docker-proxy")
    assert find_respawner(proxy, path, []) is None           # forwarders publish ports only
    assert find_respawner(proxy, 8080, []).command.endswith("publish=8080)")


def test_safety_refusals_without_a_target():
    assert "process group" in safety_refusal(0)
    assert "process group" in safety_refusal(-1)
    assert "init" in safety_refusal(1)
    assert "itself" in safety_refusal(os.getpid())
    assert "ancestor" in safety_refusal(os.getppid())
    assert "kernel thread" in safety_refusal(12345, flags=0x00200000)
    assert os.getppid() == ancestors()[0]
