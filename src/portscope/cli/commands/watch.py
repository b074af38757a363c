"""``portscope watch``: live changes of the listeners (and with --connections, connections)."""

from __future__ import annotations

import argparse
import json
import sys

from ...render import history as render
from .. import stream
from ..status import ExitStatus


def register(sub) -> None:
    parser = sub.add_parser(
        "watch", help="live changes: opened, closed, owners-changed, state-changed",
        description="Print each change of the listeners as it happens: opened, closed, "
                    "owners-changed (a holder added or gone: fork, exec, handover) and "
                    "state-changed, with the owners as they were when the socket was seen. "
                    "Changes are found by polling (said as 'between T1 and T2'); as root the "
                    "tracepoint sock:inet_sock_set_state times TCP opens and closes exactly "
                    "(and sees listeners that live shorter than a poll), and the sock_diag "
                    "destroy reports time closes. Each line names its source. Ctrl-C ends "
                    "it (exit 130).")
    stream.add_stream_options(parser)
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line (schema_version 1)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    feed = stream.open_feed(args)
    out = sys.stdout
    colour = render.use_colour(out)
    try:
        for batch in feed.run():
            for event in batch.events:
                if args.json:
                    out.write(json.dumps(render.event_json(event)) + "\n")
                else:
                    out.write(render.event_line(event, colour=colour) + "\n")
            out.flush()
    finally:
        feed.close()
    return ExitStatus.OK
