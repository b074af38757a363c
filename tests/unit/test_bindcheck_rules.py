"""The bind rules as pure functions: address overlap and option conflicts (no sockets).

The same rules are checked against the kernel by tests/system/test_bindcheck.py.
"""

from __future__ import annotations

import pytest

from portscope.bindcheck import _kernel_order, conflict, overlap
from portscope.types import Endpoint, Family, Proto, Socket, State


def sock(address: str, *, v6only=None, state=State.LISTEN, proto=Proto.TCP, uid=0,
         remote=None) -> Socket:
    family = Family.IPV6 if ":" in address else Family.IPV4
    if family is Family.IPV6 and v6only is None:
        v6only = address != "::" and not address.startswith("::ffff:")
    return Socket(proto, family, Endpoint(address, 8080), remote, state, 1, uid, v6only=v6only)


@pytest.mark.parametrize("new, old, expected", [
    (("0.0.0.0", None), sock("0.0.0.0"), "in-use"),
    (("127.0.0.1", None), sock("127.0.0.1"), "in-use"),
    (("127.0.0.1", None), sock("0.0.0.0"), "wildcard-overlap"),
    (("0.0.0.0", None), sock("127.0.0.1"), "wildcard-overlap"),
    (("127.0.0.2", None), sock("127.0.0.1"), None),
    (("::", False), sock("127.0.0.1"), "dual-stack-overlap"),
    (("127.0.0.1", None), sock("::", v6only=False), "dual-stack-overlap"),
    (("0.0.0.0", None), sock("::", v6only=True), None),
    (("::", True), sock("0.0.0.0"), None),
    (("::", True), sock("::", v6only=False), "in-use"),
    (("::1", True), sock("::"), "wildcard-overlap"),
    (("0.0.0.0", None), sock("::1", v6only=True), None),
    (("127.0.0.1", None), sock("::ffff:127.0.0.1"), "in-use"),
    (("127.0.0.2", None), sock("::ffff:0.0.0.0"), "wildcard-overlap"),
    (("::", True), sock("::ffff:127.0.0.1"), None),
    (("fe80::1", True), sock("fe80::1%eth1"), "in-use"),
])
def test_overlap(new, old, expected):
    address, v6only = new
    family = Family.IPV6 if ":" in address else Family.IPV4
    assert overlap(family, address, v6only, old) == expected


def test_link_local_on_different_interfaces_do_not_overlap():
    assert overlap(Family.IPV6, "fe80::1%eth0", True, sock("fe80::1%eth1")) is None


OPTIONS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("state", [State.LISTEN, State.BOUND_INACTIVE, State.ESTABLISHED])
@pytest.mark.parametrize("old", OPTIONS)
@pytest.mark.parametrize("new", OPTIONS)
def test_tcp_conflict_table(state, old, new):
    s = sock("127.0.0.1", state=state)
    reuseaddr, reuseport = new
    shares = (reuseaddr and old[0] and state is not State.LISTEN) or (reuseport and old[1])
    assert conflict(Proto.TCP, reuseaddr, reuseport, 0, s, old) is (not shares)


def test_tcp_reuseport_uid_rule_spares_time_wait():
    assert conflict(Proto.TCP, False, True, 1000, sock("127.0.0.1", uid=0), (False, True))
    tw = sock("127.0.0.1", state=State.TIME_WAIT, uid=0)
    assert conflict(Proto.TCP, False, True, 1000, tw, (False, True)) is False


@pytest.mark.parametrize("old", OPTIONS)
@pytest.mark.parametrize("new", OPTIONS)
def test_udp_conflict_table(old, new):
    s = sock("127.0.0.1", state=State.UNCONN, proto=Proto.UDP, uid=0)
    reuseaddr, reuseport = new
    assert conflict(Proto.UDP, reuseaddr, reuseport, 0, s, old) is \
        (not ((reuseaddr and old[0]) or (reuseport and old[1])))
    # another user: only SO_REUSEADDR still shares
    assert conflict(Proto.UDP, reuseaddr, reuseport, 1000, s, old) is \
        (not (reuseaddr and old[0]))


def test_unknown_options_give_unknown_only_when_they_matter():
    tw = sock("127.0.0.1", state=State.TIME_WAIT)
    assert conflict(Proto.TCP, False, False, 0, tw, None) is True
    assert conflict(Proto.TCP, True, False, 0, tw, None) is None
    assert conflict(Proto.TCP, True, False, 0, sock("127.0.0.1"), None) is True


def test_kernel_errno_order():
    assert _kernel_order(Family.IPV4, ["EADDRNOTAVAIL"], True, "EADDRINUSE") == "EADDRNOTAVAIL"
    assert _kernel_order(Family.IPV6, ["EADDRNOTAVAIL"], True, "EADDRINUSE") == "EACCES"
    assert _kernel_order(Family.IPV4, [], True, "EADDRINUSE") == "EACCES"
    assert _kernel_order(Family.IPV4, [], False, "EADDRINUSE") == "EADDRINUSE"
    assert _kernel_order(Family.IPV6, [], False, None) is None
