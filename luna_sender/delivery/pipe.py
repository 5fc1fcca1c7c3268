"""One recorded channel's messages on their way to its recovering sockets, in receive order.

A message waits here for its offset (its history append) at most :data:`APPEND_WAIT`, then goes
out without one; the owner's breaker (delivery/recorder.py) decides whether to wait at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from luna_sender.bus.history import Offset
from luna_sender.runtime.logs import Throttle

if TYPE_CHECKING:
    from luna_sender.delivery.recorder import Recorder
    from luna_sender.delivery.recovery import Tally

APPEND_WAIT = 1.0
COOLDOWN = 1.0
REPORT_EVERY = 30.0  # seconds between log lines of one failure domain's breaker

log = logging.getLogger("luna_sender.hub")


class Breaker:
    """Opened by a wait for the history that ran out, or a history that failed: for
    :data:`COOLDOWN` seconds messages are neither recorded nor waited for, so live delivery to
    recovering sockets never stalls behind a slow or dead history. One per failure domain
    (``History.domain``): a Cluster master's trouble leaves the other masters' channels alone
    (before, one master's outage took every channel's offsets, and its resumes, with it)."""

    __slots__ = ("_domain", "_open_until", "_told")

    def __init__(self, domain: Callable[[str], str] | None = None) -> None:
        self._domain = domain
        self._open_until: dict[str, float] = {}
        self._told: dict[str, Throttle] = {}  # per domain: one line per REPORT_EVERY s

    def broken(self, channel: str) -> bool:
        key = "" if self._domain is None else self._domain(channel)
        return self._open_until.get(key, 0.0) > time.monotonic()

    def trip(self, channel: str, why: str) -> None:
        key = "" if self._domain is None else self._domain(channel)
        # Each opening was a line: one a second per master for as long as a history outage
        # lasted while events flowed. Now the first, then one per REPORT_EVERY with a count.
        if not self._open_until.get(key, 0.0) > time.monotonic():
            throttle = self._told.setdefault(key, Throttle(REPORT_EVERY))
            if (held := throttle.due()) is not None:
                where = f" {key}" if key else ""
                more = f" ({held} more times since the last report)" if held else ""
                log.warning(
                    "history%s unavailable (%s): live events go out without offset%s",
                    where,
                    why,
                    more,
                )
        self._open_until[key] = time.monotonic() + COOLDOWN

    def settled(self, channel: str, done: asyncio.Future[Offset]) -> Offset | None:
        if done.cancelled():
            return None
        error = done.exception()
        if error is None:
            return done.result()
        self.trip(channel, str(error))
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
            offset = self.owner.breaker.settled(self.channel, pending)
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
                    if not pending.done() and not owner.breaker.broken(self.channel):
                        wait = APPEND_WAIT + owner.held(self.channel)
                        await asyncio.wait((pending,), timeout=wait)
                    if pending.done():
                        offset = owner.breaker.settled(self.channel, pending)
                    else:
                        owner.breaker.trip(self.channel, f"no answer within {APPEND_WAIT:.1f}s")
                self.queue.popleft()
                owner.forward(self.channel, self.kind, data, offset, plain, at)
        finally:
            self.task = None
