"""Screenshots of the TUI (pytest-textual-snapshot) from a fixed snapshot source and clock:
the same pixels on every machine. Accept a deliberate change with ``--snapshot-update`` and
look at the SVGs in ``__snapshots__/`` before committing them."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("textual")
sys.path.insert(0, os.path.dirname(__file__))

import fixed  # noqa: E402

from portscope.tui.app import PortscopeApp  # noqa: E402
from portscope.tui.source import FixedSource  # noqa: E402


def app(view="listeners", snapshots=None):
    source = FixedSource(snapshots or [fixed.snapshot()])
    return PortscopeApp(source, interval_s=60, view=view, clock=fixed.fixed_clock())


async def settle(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def next_refresh(pilot):
    await settle(pilot)
    pilot.app.action_refresh_now()
    await settle(pilot)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_listeners(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_all_with_detail_pane(snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await settle(pilot)
    assert snap_compare(app("all"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_changes_marked_new_and_closed(snap_compare, size):
    """The second snapshot opens 0.0.0.0:8080 (green '+'); then back to the first: closed
    (red '-')."""
    snapshots = [fixed.snapshot(), fixed.snapshot(extra_listener=True), fixed.snapshot()]

    async def run_before(pilot):
        await next_refresh(pilot)
        await next_refresh(pilot)
    assert snap_compare(app(snapshots=snapshots), terminal_size=size, run_before=run_before)


def test_grouped_by_process_filtered(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("slash", *"!user:root")
        await pilot.pause()
    assert snap_compare(app("processes"), terminal_size=(80, 24), run_before=run_before)


def test_no_color(snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    snapshots = [fixed.snapshot(), fixed.snapshot(extra_listener=True)]
    instance = app(snapshots=snapshots)
    assert instance.no_color
    assert snap_compare(instance, terminal_size=(80, 24), run_before=next_refresh)
