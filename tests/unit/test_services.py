"""portscope.services: IANA registry (package data) merged with an /etc/services file.

Every test passes ``etc_services=`` explicitly (a file in tmp_path, or None), so the host's own
/etc/services never changes an answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portscope import services
from portscope.errors import InvalidInput
from portscope.services import (REGISTRY_DATE, ServiceEntry, is_unauthorized_use, lookup,
                                resolve_service, service_name)

IANA = {"etc_services": None}

ETC_SERVICES_TEXT = """\
# a services(5) file, as in Debian
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
myweb\t\t443/tcp\t\twww-secure\t# my own name for https
domain\t\t53/udp
bad line without a port
broken\t\tx/tcp
toolarge\t70000/tcp
"""


@pytest.fixture
def etc_services(tmp_path):
    path = tmp_path / "services"
    path.write_text(ETC_SERVICES_TEXT)
    return path


# --- both directions --------------------------------------------------------------------------

def test_port_443_gives_https_on_every_protocol():
    entries = lookup("443", **IANA)
    assert {(e.name, e.proto) for e in entries} == {("https", "tcp"), ("https", "udp"),
                                                    ("https", "sctp")}
    assert all(e.source == "iana" and (e.port_low, e.port_high) == (443, 443) for e in entries)
    assert service_name(443, **IANA) == "https"


def test_name_https_gives_443_case_insensitive():
    assert resolve_service("https", **IANA) == 443
    assert resolve_service("HTTPS", "udp", **IANA) == 443
    assert {e.port_low for e in lookup("HttpS", **IANA)} == {443}


def test_name_with_several_ports_lists_them_in_registry_order():
    ports = [e.port_low for e in lookup("http-alt", **IANA)]
    assert ports == sorted(ports) and set(ports) == {591, 8008, 8080}
    assert resolve_service("http-alt", **IANA) == 591  # IANA's first assignment


def test_port_range_entry():
    entries = lookup("6010", **IANA)
    assert [(e.name, e.port_low, e.port_high, e.proto) for e in entries] == [
        ("x11", 6000, 6063, "tcp"), ("x11", 6000, 6063, "udp")]
    assert entries[0].ports == "6000-6063"
    assert service_name(6063, **IANA) == "x11"
    assert service_name(6064, **IANA) != "x11"
    assert resolve_service("x11", **IANA) == 6000


def test_unassigned_block_has_empty_name_and_no_service_name():
    entries = lookup("49151", **IANA)
    assert [(e.name, e.proto, e.description) for e in entries] == [("", "", "IANA Reserved")]
    assert service_name(49151, **IANA) is None
    assert lookup("65535", **IANA) == []
    assert service_name(65535, **IANA) is None


def test_udp_and_tcp_differ():
    assert service_name(514, "tcp", **IANA) == "shell"
    assert service_name(514, "udp", **IANA) == "syslog"
    assert service_name(512, "UDP", **IANA) == "comsat"  # first of comsat, biff
    assert resolve_service("syslog", "udp", **IANA) == 514
    with pytest.raises(InvalidInput, match="no tcp port.*udp"):
        resolve_service("syslog", "tcp", **IANA)


def test_protocols_without_ports_have_no_names():
    assert service_name(22, "unix", **IANA) is None
    assert service_name(6, "raw", **IANA) is None
    assert is_unauthorized_use(79, "raw") is False
    with pytest.raises(InvalidInput, match="unknown protocol"):
        resolve_service("ssh", "icmp", **IANA)


# --- /etc/services ----------------------------------------------------------------------------

def test_etc_services_name_wins_for_display(etc_services):
    assert service_name(443, "tcp", etc_services=etc_services) == "myweb"
    assert service_name(443, "udp", etc_services=etc_services) == "https"  # not in the file
    assert service_name(443, "tcp", **IANA) == "https"


def test_etc_services_entries_come_first_in_lookup(etc_services):
    entries = lookup("443", etc_services=etc_services)
    assert entries[0] == ServiceEntry("myweb", 443, 443, "tcp", "my own name for https",
                                      "etc-services")
    assert [e.source for e in entries] == ["etc-services"] + ["iana"] * 3
    assert lookup("www-secure", etc_services=etc_services) == [entries[0]]  # an alias
    assert resolve_service("MYWEB", etc_services=etc_services) == 443
    assert resolve_service("ssh", etc_services=etc_services) == 22


def test_etc_services_malformed_lines_are_skipped(etc_services):
    assert lookup("broken", etc_services=etc_services) == []
    assert lookup("toolarge", etc_services=etc_services) == []
    assert [e.source for e in lookup("22", etc_services=etc_services)].count("etc-services") == 1


def test_etc_services_is_reread_when_it_changes(etc_services):
    assert service_name(443, etc_services=etc_services) == "myweb"
    etc_services.write_text("yourweb 443/tcp\n")
    assert service_name(443, etc_services=etc_services) == "yourweb"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_missing_etc_services_is_not_an_error(tmp_path, kind):
    path = tmp_path / "services"
    if kind == "directory":
        path.mkdir()
    assert service_name(443, etc_services=path) == "https"
    assert [e.source for e in lookup("https", etc_services=path)] == ["iana"] * 3
    assert resolve_service("https", etc_services=path) == 443


# --- errors ------------------------------------------------------------------------------------

def test_unknown_name_raises_invalid_input_with_suggestion():
    with pytest.raises(InvalidInput, match=r"unknown service name 'htps'.*did you mean.*https"):
        resolve_service("htps", **IANA)
    with pytest.raises(InvalidInput, match=r"^unknown service name 'zzzqqqxx'$"):
        resolve_service("zzzqqqxx", **IANA)
    assert lookup("zzzqqqxx", **IANA) == []


@pytest.mark.parametrize("name", ["", " ", "ht\ttps"])
def test_blank_or_odd_names(name):
    with pytest.raises(InvalidInput):
        resolve_service(name, **IANA)
    if name.strip():
        assert lookup(name, **IANA) == []
    else:
        with pytest.raises(InvalidInput):
            lookup(name, **IANA)


def test_bad_ports():
    with pytest.raises(InvalidInput):
        lookup("70000", **IANA)
    assert lookup("0080", **IANA) == lookup("80", **IANA)
    for port in (-1, 65536, True, "80"):
        with pytest.raises(ValueError):
            service_name(port, **IANA)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            is_unauthorized_use(port, "tcp")  # type: ignore[arg-type]


# --- unauthorized use --------------------------------------------------------------------------

def test_unauthorized_use_single_port_records():
    assert is_unauthorized_use(79, "tcp") and is_unauthorized_use(79, "udp")  # finger
    (entry, *_) = lookup("79", **IANA)
    assert entry.name == "finger" and entry.unauthorized_use
    assert entry.unauthorized_ports == ((79, 79),)
    assert not is_unauthorized_use(443, "tcp")
    assert not lookup("443", **IANA)[0].unauthorized_use


def test_unauthorized_use_narrowed_to_the_ports_a_range_note_names():
    # x11 6000-6063: "Known Unauthorized Use on port 6003"
    assert is_unauthorized_use(6003, "tcp")
    assert not is_unauthorized_use(6000, "tcp") and not is_unauthorized_use(6010, "tcp")
    (x11_tcp, _) = lookup("6010", **IANA)
    assert x11_tcp.unauthorized_use and x11_tcp.unauthorized_ports == ((6003, 6003),)
    # Unassigned 33436-33655: "Known Unauthorized Use on ports 33436-33534"
    assert is_unauthorized_use(33500, "udp") and not is_unauthorized_use(33600, "udp")


def test_unauthorized_use_on_unassigned_port_counts_for_every_protocol():
    # port 100: Unassigned, no protocol, "Known Unauthorized Use on 100"
    assert all(is_unauthorized_use(100, proto) for proto in ("tcp", "udp", "sctp", "dccp"))


def test_unauthorized_use_only_for_the_flagged_protocol():
    # 3300: ceph/tcp is flagged, ceph/udp is not
    assert is_unauthorized_use(3300, "tcp") and not is_unauthorized_use(3300, "udp")


def test_many_unauthorized_use_entries_are_shipped():
    flagged = [port for port in range(65536) if is_unauthorized_use(port, "tcp")]
    assert 60 < len(flagged) < 400  # the CSV has 111 flagged records, some name port ranges
    assert {79, 90, 100, 1521, 6003, 8888}.issubset(flagged)


# --- data and shape ---------------------------------------------------------------------------

def test_registry_date_is_in_the_module_and_the_data_header():
    assert REGISTRY_DATE == "2024-04-30"
    header = services.iana_header()
    assert f"registry-date: {REGISTRY_DATE}" in header
    assert any("iana.org" in line for line in header)


def test_entries_are_frozen_slotted_and_json_ready():
    entry = lookup("6003", **IANA)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"  # type: ignore[misc]
    assert not hasattr(entry, "__dict__")
    data = json.loads(json.dumps(dataclasses.asdict(entry)))
    assert data == {"name": "x11", "port_low": 6000, "port_high": 6063, "proto": "tcp",
                    "description": "X Window System", "source": "iana",
                    "unauthorized_use": True, "unauthorized_ports": [[6003, 6003]]}


def test_import_reads_nothing():
    code = ("import portscope.services as s, sys; "
            "sys.exit(s._iana.cache_info().currsize + s._etc_cached.cache_info().currsize)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 65535), st.sampled_from(["tcp", "udp", "sctp", "dccp"]))
def test_every_answer_covers_the_port(port, proto):
    entries = lookup(str(port), **IANA)
    assert all(e.port_low <= port <= e.port_high for e in entries)
    name = service_name(port, proto, **IANA)
    assert name is None or name in {e.name for e in entries if e.proto in (proto, "")}
    if is_unauthorized_use(port, proto):
        assert any(e.unauthorized_use for e in entries)
