"""A "no" says why, in the user's words: ``free`` names what took the ports of the range,
``services`` gives an unassigned port's class and whether it lies in the ephemeral range.

Each test runs in a private network namespace, whose port ranges are the kernel's defaults
(ephemeral 32768-60999) unless the test sets them.
"""

from __future__ import annotations


from netns import netns  # noqa: F401  (the fixture)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_free_in_the_ephemeral_range_says_so(netns):
    result = netns.portscope("free", "--range", "40000-40010")
    assert result.returncode == 1 and result.stdout == ""
    line = one_line(result)
    assert "40000-40010" in line and "ephemeral range 32768-60999" in line, line
    assert "all" in line and "ip_local_port_range" in line, line


def test_free_says_which_ports_are_held_and_reserved(netns):
    netns.sysctl("net.ipv4.ip_local_reserved_ports", "8082")
    netns.holder("""
        l = socket.socket(); l.bind(("127.0.0.1", 8081)); l.listen()
        ready()
    """)
    result = netns.portscope("free", "--range", "8081-8082")
    assert result.returncode == 1
    line = one_line(result)
    assert "1 are held by a socket" in line and "1 are reserved" in line, line
    assert "ephemeral" not in line, line


def test_services_gives_class_and_ephemeral_status_of_an_unassigned_port(netns):
    result = netns.portscope("services", "60000")
    assert result.returncode == 1
    line = one_line(result)
    assert "dynamic" in line and "ephemeral range 32768-60999" in line, line
    outside = one_line(netns.portscope("services", "61500"))
    assert "dynamic" in outside and "outside this host's ephemeral range" in outside, outside
    code, doc = netns.portscope_json("services", "60000")
    assert code == 1
    assert doc["port"] == {"port": 60000, "port_class": "dynamic", "ephemeral": True,
                           "reserved": False}
    assert netns.portscope_json("services", "https")[1]["port"] is None
