#!/usr/bin/env python3
"""How fast ``portscope tui`` answers, side by side with the command line, in one run.

1. **Refresh** (listeners view) with N established connections on the host (``fixture.py``,
   default N = 100,000, so 200,000 sockets): one ``portscope`` run (the listener listing,
   wall time of the process) against one TUI refresh measured inside the app, split into
   the scan (the worker thread's capture: the listeners and their Accepted counts) and the UI
   work (diff, rows, filter, sort, table update). Goal: refresh <= one ``portscope`` run + 50 ms.
2. **Key presses** with 10,000 rows in the all view (a fixed snapshot: the latency is UI
   work only): cursor moves and filter keystrokes driven by Textual's pilot, each timed from
   the key to the screen being updated, beside the same with 10 rows (the pilot's own cost),
   and the app's own work per key timed directly (the handler and every visible line drawn
   again). Goal: within 50 ms.
3. **Memory**: this process's peak RSS after the refreshes and key presses. Goal: < 300 MiB.

Run as root on a quiet machine, under the benchmark lock when others share it::

    flock "$LOCK" env -u PYTHONDONTWRITEBYTECODE venv/bin/python benchmarks/bench_tui.py

``--conns 0`` skips the fixture (refresh measured on the host as it is). The key presses are
also timed with 10 rows: what the pilot itself costs per press.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def start_fixture(conns: int) -> subprocess.Popen:
    state = f"/tmp/portscope-bench-tui-{os.getpid()}.json"
    proc = subprocess.Popen([sys.executable, str(HERE / "fixture.py"), "--conns", str(conns),
                             "--state", state, "--die-with-parent"], stdout=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if line.startswith("READY"):
            return proc
    raise RuntimeError(f"fixture exited with {proc.wait()}")


def cli_runs(portscope: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*portscope, "--netns", "host"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


async def tui_refreshes(runs: int) -> tuple[list[float], list[float], list[float], int]:
    """(total, scan, ui) seconds of each refresh of the listeners view, and its row count."""
    from portscope.tui.app import PortscopeApp
    from portscope.tui.table import SocketTable

    class Timed(PortscopeApp):
        def _apply(self, *args):
            started = time.perf_counter()
            super()._apply(*args)
            self.ui_s = time.perf_counter() - started

    app = Timed(interval_s=60, netns="host")
    total, scan, ui = [], [], []
    async with app.run_test(size=(160, 50)) as pilot:
        for i in range(runs + 1):
            before = app.refreshes
            started = time.perf_counter()
            app.action_refresh_now()
            while app.refreshes == before:
                await asyncio.sleep(0.001)
            await pilot.pause()
            if i:                      # the first refresh imports and warms up
                total.append(time.perf_counter() - started)
                scan.append(app.scan_cost_s)
                ui.append(app.ui_s)
        rows = len(app.query_one(SocketTable).rows)
    return total, scan, ui, rows


def synthetic_snapshot(count: int):
    """``count`` established connections held by 50 processes (made-up data)."""
    from portscope.types import (Endpoint, Family, Owner, ProcessInfo, Proto, Snapshot,
                                 Socket, State)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    procs = [ProcessInfo(pid=1000 + i, name=f"server{i}", user="www-data", uid=33,
                         exe=f"/usr/bin/server{i}", started_at=now) for i in range(50)]
    sockets = tuple(Socket(Proto.TCP, Family.IPV4, Endpoint("127.0.0.1", 20000 + i % 300),
                           Endpoint("127.0.0.1", 32768 + i % 28000), State.ESTABLISHED,
                           100000 + i, 33, 4026531840,
                           owners=(Owner(procs[i % 50].pid, 10 + i, procs[i % 50]),),
                           cookie=100000 + i) for i in range(count))
    return Snapshot(sockets, now, "bench", "netlink")


async def key_presses(rows: int, presses: int) -> dict[str, list[float]]:
    from portscope.tui import model
    from portscope.tui.app import PortscopeApp
    from portscope.tui.source import FixedSource
    from portscope.tui.table import SocketTable

    app = PortscopeApp(FixedSource([synthetic_snapshot(rows)]), interval_s=60, view="all")
    result: dict[str, list[float]] = {"cursor": [], "filter": [], "cursor_work": [],
                                      "filter_work": []}
    async with app.run_test(size=(160, 50)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(app.query_one(SocketTable).rows) == rows
        await pilot.press("down")              # the first press pays one-time setup
        for _ in range(presses):
            started = time.perf_counter()
            await pilot.press("down")
            result["cursor"].append(time.perf_counter() - started)
        await pilot.press("slash")
        for char in "server1 !port:20001"[:presses]:
            started = time.perf_counter()
            await pilot.press(char)
            result["filter"].append(time.perf_counter() - started)
        await pilot.press("enter")
        # the app's own work per key, without the pilot: what the handler does, then every
        # line on screen drawn again
        table = app.query_one(SocketTable)
        height = table.size.height
        for _ in range(presses):
            started = time.perf_counter()
            table.action_cursor(1)
            for y in range(height):
                table.render_line(y)
            result["cursor_work"].append(time.perf_counter() - started)
        query = ""
        for char in "server1 !port:20001"[:presses]:
            query += char
            started = time.perf_counter()
            try:
                app._terms = model.parse_query(query)
            except model.QueryError:
                pass
            app._show(resort=False, measure=False)
            for y in range(height):
                table.render_line(y)
            result["filter_work"].append(time.perf_counter() - started)
    return result


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--portscope", default=str(Path(sys.executable).with_name("portscope")))
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    fixture = start_fixture(args.conns) if args.conns else None
    try:
        cli = cli_runs([args.portscope], args.runs)
        total, scan, ui, listeners = asyncio.run(tui_refreshes(args.runs))
    finally:
        if fixture is not None:
            fixture.terminate()
            fixture.wait()
    keys = asyncio.run(key_presses(args.rows, 19))
    floor = asyncio.run(key_presses(10, 19))        # the pilot's own cost per key press
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{args.conns} connections; {listeners} listener rows")
    print(f"portscope (listeners, a process): {ms(cli)}")
    print(f"tui refresh (listeners view):     {ms(total)}")
    print(f"  scan (worker thread):           {ms(scan)}")
    print(f"  UI work (diff, rows, table):    {ms(ui)}")
    budget = statistics.median(cli) + 0.050
    print(f"goal: refresh <= portscope + 50 ms = {budget * 1000:.1f} ms: "
          f"{'met' if statistics.median(total) <= budget else 'NOT met'} "
          f"(ratio refresh/portscope {statistics.median(total) / statistics.median(cli):.2f})")
    print(f"key press, cursor ({args.rows} rows, all view): {ms(keys['cursor'])}")
    print(f"key press, filter keystroke ({args.rows} rows): {ms(keys['filter'])}")
    print(f"  the app's own work per key (handler + every visible line drawn): cursor "
          f"{ms(keys['cursor_work'])}; filter {ms(keys['filter_work'])}")
    print(f"the same with 10 rows (the pilot's floor): cursor {ms(floor['cursor'])}; "
          f"filter {ms(floor['filter'])}")
    print(f"peak RSS of this process: {peak_mib:.0f} MiB (goal < 300 MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "load": load, "conns": args.conns, "listener_rows": listeners, "cli_s": cli,
            "refresh_s": total, "scan_s": scan, "ui_s": ui, "keys_s": keys,
            "rows": args.rows, "floor_keys_s": floor, "peak_rss_mib": peak_mib}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
