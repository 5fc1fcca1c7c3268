"""Handshake work takes turns with delivery.

Why: every request is parsed, and every handshake's query compiled into its filter, on the
event loop: tenths of a millisecond to a few for the largest. 600 upgrades with 110 KB queries
arriving at once are 600 callbacks ready in the same loop turn, and the bus reader is polled
again only after all of them: an outside pass measured deliveries held 2.5-4.8 s behind for
every subscriber while one client's burst was parsed and compiled. Here request parsing
(web/httpd.py) and the handshakes' compiles (web/streams.py) spend at most :data:`BUDGET`
seconds in each :data:`WINDOW`; past it they wait for the window's end, which lets the loop poll
its sockets and deliver before the next slice. Small requests (under :data:`SMALL_BYTES` of head
or query) are never held: only the large ones a burst is made of take turns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

BUDGET = 0.010
WINDOW = 0.020
# Work on less input than this is done at once, whatever the budget: its cost is microseconds,
# and health probes, publishes and ordinary subscribers must not queue behind a burst.
SMALL_BYTES = 4096


class Turns:
    """One per process (:data:`HANDSHAKES`): the HTTP parser of every connection and every
    handshake's filter compile draw on the same budget."""

    __slots__ = ("_end", "_spent", "budget", "window")

    def __init__(self, budget: float = BUDGET, window: float = WINDOW) -> None:
        self.budget = budget
        self.window = window
        self._end = 0.0
        self._spent = 0.0

    def exhausted(self) -> bool:
        now = time.perf_counter()
        if now >= self._end:
            self._end, self._spent = now + self.window, 0.0
        return self._spent >= self.budget

    def wait(self) -> float:
        """Seconds until the next slice."""
        return max(0.0, self._end - time.perf_counter())

    async def take(self, size: int) -> float:
        """Wait for a slice with budget left, for work on ``size`` bytes of input (none for a
        small one); the start time to hand to :meth:`spent`."""
        if size >= SMALL_BYTES:
            while self.exhausted():
                await asyncio.sleep(self.wait())
        return time.perf_counter()

    def spent(self, started: float) -> None:
        self._spent += time.perf_counter() - started

    @asynccontextmanager
    async def turn(self, size: int) -> AsyncIterator[None]:
        """:meth:`take`, the work in the block, then :meth:`spent`, raise or not."""
        started = await self.take(size)
        try:
            yield
        finally:
            self.spent(started)


HANDSHAKES = Turns()
