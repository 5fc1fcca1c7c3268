"""One recorded channel's messages on their way to its recovering sockets, in receive order.

A message waits here for its offset (its history append) at most :data:`APPEND_WAIT`, then goes
out without one; the owner's breaker (delivery/recorder.py) decides whether to wait at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from luna_sender.bus.history import Offset

if TYPE_CHECKING:
    from luna_sender.delivery.recorder import Recorder
    from luna_sender.delivery.recovery import Tally

APPEND_WAIT = 1.0
COOLDOWN = 1.0

log = logging.getLogger("luna_sender.hub")


class Breaker:
    """Opened by a wait for the history that ran out, or a history that failed: for
    :data:`COOLDOWN` seconds messages are neither recorded nor waited for, so live delivery to
    recovering sockets never stalls behind a slow or dead history."""

    __slots__ = ("_open_until",)

    def __init__(self) -> None:
        self._open_until = 0.0

    def broken(self) -> bool:
        return self._open_until > time.monotonic()

    def trip(self, why: str) -> None:
        if not self.broken():
            log.warning("history unavailable (%s): live events go out without offset", why)
        self._open_until = time.monotonic() + COOLDOWN

    def settled(self, done: asyncio.Future[Offset]) -> Offset | None:
        if done.cancelled():
            return None
        error = done.exception()
        if error is None:
            return done.result()
        self.trip(str(error))
        return None


_Queued = tuple[bytes, "asyncio.Future[Offset] | None", "Tally", float]


class Pipe:
    """One channel's messages on their way to its recovering sockets, in receive order."""

    __slots__ = ("channel", "kind", "owner", "queue", "task")

    def __init__(self, owner: Recorder, channel: str, kind: str) -> None:
        self.owner = owner
        self.channel = channel
        self.kind = kind
        self.queue: deque[_Queued] = deque()
        self.task: asyncio.Task[None] | None = None

    def push(
        self, data: bytes, pending: asyncio.Future[Offset] | None, plain: Tally, at: float
    ) -> None:
        if pending is not None and pending.done() and not self.queue:  # memory://: no wait
            offset = self.owner.breaker.settled(pending)
            self.owner.forward(self.channel, self.kind, data, offset, plain, at)
            return
        if pending is None and not self.queue:
            self.owner.forward(self.channel, self.kind, data, None, plain, at)
            return
        self.queue.append((data, pending, plain, at))
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"history-pipe {self.channel}")

    async def _run(self) -> None:
        owner = self.owner
        try:
            while self.queue:
                data, pending, plain, at = self.queue[0]
                offset = None
                if pending is not None:
                    if not pending.done() and not owner.breaker.broken():
                        wait = APPEND_WAIT + owner.held(self.channel)
                        await asyncio.wait((pending,), timeout=wait)
                    if pending.done():
                        offset = owner.breaker.settled(pending)
                    else:
                        owner.breaker.trip(f"no answer within {APPEND_WAIT:.1f}s")
                self.queue.popleft()
                owner.forward(self.channel, self.kind, data, offset, plain, at)
        finally:
            self.task = None
