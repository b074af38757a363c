"""The exact sources' pure parts: tracepoint lines, hint matching and pairing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from portscope.history.diff import Event, EventKind, Item, Key, Source
from portscope.history.sources import Hint, _apply_hints, parse_trace_line
from portscope.types import Family, Proto, State

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
LINE = (b"   python3 -x-1234   [001] ..... 100.250000: inet_sock_set_state: family=AF_INET "
        b"protocol=IPPROTO_TCP sport=3000 dport=0 saddr=127.0.0.1 daddr=0.0.0.0 "
        b"saddrv6=::ffff:127.0.0.1 daddrv6=:: oldstate=TCP_CLOSE newstate=TCP_LISTEN")


def test_a_listen_line_is_an_open_hint_with_the_callers_pid_and_time():
    hint = parse_trace_line(LINE, clock_offset_s=T0.timestamp() - 100)
    assert hint == Hint(Source.TRACEPOINT, T0 + timedelta(seconds=0.25), True, Proto.TCP,
                        Family.IPV4, "127.0.0.1", 3000, 1234)


def test_a_close_line_and_other_transitions():
    close = LINE.replace(b"oldstate=TCP_CLOSE newstate=TCP_LISTEN",
                         b"oldstate=TCP_LISTEN newstate=TCP_CLOSE")
    assert parse_trace_line(close, 0).opened is False
    other = LINE.replace(b"newstate=TCP_LISTEN", b"newstate=TCP_SYN_SENT")
    assert parse_trace_line(other, 0) is None
    assert parse_trace_line(b"garbage", 0) is None


def test_v6_lines_use_the_v6_address():
    v6 = LINE.replace(b"family=AF_INET ", b"family=AF_INET6 ").replace(
        b"saddrv6=::ffff:127.0.0.1", b"saddrv6=::1")
    hint = parse_trace_line(v6, 0)
    assert hint.family is Family.IPV6 and hint.address == "::1"


def _hint(opened, at, port=3000):
    return Hint(Source.TRACEPOINT, at, opened, Proto.TCP, Family.IPV4, "127.0.0.1", port, 7)


def test_a_poll_event_is_timed_by_its_hint():
    key = Key(1, Proto.TCP, "127.0.0.1", 3000, 9)
    item = Item(Family.IPV4, State.LISTEN, (), 0)
    event = Event(EventKind.OPENED, key, item, T0 + timedelta(seconds=1), T0, Source.POLL)
    exact = T0 + timedelta(seconds=0.5)
    (timed,), kept = _apply_hints([event], [(_hint(True, exact), 0)], {(Proto.TCP,
                                  "127.0.0.1", 3000, Family.IPV4)}, set())
    assert (timed.at, timed.after, timed.source, timed.pid) == (exact, None,
                                                                Source.TRACEPOINT, 7)
    assert kept == []


def test_a_hint_older_than_the_interval_does_not_time_it():
    key = Key(1, Proto.TCP, "127.0.0.1", 3000, 9)
    item = Item(Family.IPV4, State.LISTEN, (), 0)
    event = Event(EventKind.OPENED, key, item, T0 + timedelta(seconds=1), T0, Source.POLL)
    (kept_event,), _ = _apply_hints([event], [(_hint(True, T0 - timedelta(seconds=5)), 0)],
                                    set(), set())
    assert kept_event.source is Source.POLL


def test_an_unseen_listener_becomes_an_opened_and_closed_pair():
    events, kept = _apply_hints([], [(_hint(True, T0), 0),
                                     (_hint(False, T0 + timedelta(milliseconds=10)), 0)],
                                set(), set())
    assert [(e.kind, e.key.inode, e.key.netns, e.at) for e in events] == [
        (EventKind.OPENED, 0, None, T0),
        (EventKind.CLOSED, 0, None, T0 + timedelta(milliseconds=10))]
    assert kept == []
