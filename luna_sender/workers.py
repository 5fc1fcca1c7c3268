"""Multi-process serving: ``--workers N`` runs N independent processes on one port.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads new connections across them,
and each holds its own single bus subscription (Redis fans events out to every worker). There is
no cross-worker state to share — which is why more than one worker requires a Redis bus: with
``memory://`` an event published to one worker would never reach another's sockets.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from .config import Settings

log = logging.getLogger("luna_sender.workers")


def run_workers(settings: Settings, serve_one: Callable[[Settings, bool], None]) -> int:
    """Start ``settings.workers`` children, forward SIGTERM/SIGINT, return the exit code."""
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=serve_one, args=(settings, True), name=f"luna-sender-worker-{i}")
        for i in range(settings.workers)
    ]
    for child in children:
        child.start()
    log.info("started %d workers: %s", len(children), [c.pid for c in children])

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    codes = [child.exitcode for child in children]
    # A worker killed by the forwarded signal itself counts as a clean stop.
    failed = [c for c in codes if c not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed:
        print(f"luna-sender: workers exited with {codes}", file=sys.stderr)
        return 1
    return 0
