"""Take the README's screenshot of ``portscope tui`` on real sockets: a few real servers
are started on loopback, the app runs headless (Textual's pilot) and saves an SVG.

    python docs/tui_screenshot.py docs/tui.svg
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

HTTP = [sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"]
#: a pre-fork server (three processes hold one listener; the workers die with their parent),
#: a UDP socket on ::1 and a client connected to the HTTP server
PREFORK = [sys.executable, "-c", """
import ctypes, os, signal, socket, time
s = socket.socket(); s.bind(("0.0.0.0", 5000)); s.listen()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::1", 5353))
for _ in range(2):
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
        time.sleep(3600)
c = socket.create_connection(("127.0.0.1", 8000))
time.sleep(3600)
"""]


async def shoot(path: str) -> None:
    from portscope.tui.app import PortscopeApp
    app = PortscopeApp(interval_s=60, netns="host")
    async with app.run_test(size=(110, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("slash", *"port:5000-8000", "enter")
        await pilot.pause()
        prefork = subprocess.Popen(PREFORK)
        try:
            time.sleep(1)
            app.action_refresh_now()            # the new listeners come in green
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("down", "enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            app.save_screenshot(path)
        finally:
            prefork.kill()
            prefork.wait()


def main() -> None:
    server = subprocess.Popen(HTTP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        asyncio.run(shoot(sys.argv[1] if len(sys.argv) > 1 else "tui.svg"))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
