"""Stop deadlines counted in time this process ran, not in wall time.

A process that stood still (a paused VM, swap, SIGSTOP) during a stop woke up with every
wall-clock deadline past: the watchdog exited 1 without the 1001 Closes, the worker supervisor
killed workers that had already stopped cleanly, and clients that answered their Close meanwhile
were reset (an outside pass: 20 of 20 at a 3 s stall). A countdown sampled at least every
:data:`STEP` seconds counts at most ``STEP + SLACK`` per sample, so a stall costs the deadline
one sample, whatever its length, while a stop that is really stuck still meets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

STEP = 0.25
SLACK = 0.25  # a late wake-up on a busy host still counts in full


class RunningDeadline:
    """``seconds`` of running time; :meth:`left` must be called at least every :data:`STEP`."""

    __slots__ = ("_last", "_left")

    def __init__(self, seconds: float) -> None:
        self._left = seconds
        self._last = time.monotonic()

    def left(self) -> float:
        now = time.monotonic()
        self._left -= min(now - self._last, STEP + SLACK)
        self._last = now
        return self._left


async def wait_running(event: asyncio.Event, seconds: float) -> bool:
    """``event.wait()`` for at most ``seconds`` of running time; whether it was set."""
    deadline = RunningDeadline(seconds)
    while not event.is_set() and (left := deadline.left()) > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), min(STEP, left))
    return event.is_set()
