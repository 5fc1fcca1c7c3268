"""Recording channels for recovery and feeding recovering sockets (#18, docs/recovery.md).

The bus callback is synchronous and must never wait: a message of a recorded channel is handed
to the history at once (``append_nowait`` queues it in receive order, before any ``since``
issued later) and to that channel's :class:`_Pipe`, which waits for the offsets one message at a
time, in order, and only then gives the message to the recovering sockets. Sockets without
recovery never pass through here: the hub writes their frames before it even records.

When the history is slow or down, live delivery must not stall: a message waits at most
:data:`APPEND_WAIT` for its offset, then goes out without one; the first such wait opens a
breaker for :data:`COOLDOWN` seconds during which messages are neither recorded nor waited for
(they reach recovering sockets at once, without offset). A reconnect's read is bounded by
:data:`SINCE_WAIT` and answers ``recovered: false`` when it runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from luna_sender import wire
from luna_sender.bus.base import BusError
from luna_sender.bus.history import Entry, History, Offset, Replay
from luna_sender.delivery import matching
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.recovery import Recording

if TYPE_CHECKING:
    from luna_sender.delivery.connection import Connection
    from luna_sender.runtime.metrics import Metrics

log = logging.getLogger("luna_sender.hub")

APPEND_WAIT = 1.0
COOLDOWN = 1.0
SINCE_WAIT = 2.0

# hub callback: (channel, kind, data, offset) -> writes to the channel's recovering sockets
Deliver = Callable[[str, str, bytes, Offset | None], None]


def render_for(
    conn: Connection, kind: str
) -> Callable[[Entry], Iterator[tuple[int | None, bytes]]]:
    """The seam's renderer for one socket: a recorded message -> its matching events."""
    candidates = matching.only(conn.filter)

    def render(entry: Entry) -> Iterator[tuple[int | None, bytes]]:
        try:
            msg = matching.decode(kind, entry.data)
        except wire.PoisonMessage:
            return
        for part, envelope, _ in matching.indexed(msg, candidates):
            yield part, envelope

    return render


def _quiet(done: asyncio.Future[Offset]) -> None:
    """An abandoned append's error is expected (the breaker reported it): retrieve it."""
    if not done.cancelled():
        done.exception()


class _Pipe:
    """One channel's messages on their way to its recovering sockets, in receive order."""

    __slots__ = ("channel", "kind", "owner", "queue", "task")

    def __init__(self, owner: Recorder, channel: str, kind: str) -> None:
        self.owner = owner
        self.channel = channel
        self.kind = kind
        self.queue: deque[tuple[bytes, asyncio.Future[Offset] | None]] = deque()
        self.task: asyncio.Task[None] | None = None

    def push(self, data: bytes, pending: asyncio.Future[Offset] | None) -> None:
        if pending is not None and pending.done() and not self.queue:  # memory://: no wait
            self.owner.deliver(self.channel, self.kind, data, self.owner.settled(pending))
            return
        if pending is None and not self.queue:
            self.owner.deliver(self.channel, self.kind, data, None)
            return
        self.queue.append((data, pending))
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"history-pipe {self.channel}")

    async def _run(self) -> None:
        owner = self.owner
        try:
            while self.queue:
                data, pending = self.queue[0]
                offset = None
                if pending is not None:
                    if not pending.done() and not owner.broken():
                        await asyncio.wait((pending,), timeout=APPEND_WAIT)
                    if pending.done():
                        offset = owner.settled(pending)
                    else:
                        owner.trip(f"no answer within {APPEND_WAIT:.1f}s")
                self.queue.popleft()
                owner.deliver(self.channel, self.kind, data, offset)
        finally:
            self.task = None


class Recorder:
    """Which channels are recorded, their pipes, the breaker, and the replay on reconnect."""

    def __init__(
        self, history: History | None, linger: float, deliver: Deliver, metrics: Metrics
    ) -> None:
        self.history = history
        self.recording = Recording(linger)
        self.channels: set[str] = set()  # recorded now: the one look-up on the plain path
        self.deliver = deliver
        self.metrics = metrics
        self._pipes: dict[str, _Pipe] = {}
        self._open_until = 0.0

    # --- the breaker -----------------------------------------------------------------------

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

    # --- recording -------------------------------------------------------------------------

    def record(self, channel: str, kind: str, data: bytes) -> None:
        """Called by the bus callback for a recorded channel: never waits."""
        pending = None
        history = self.history
        if history is not None and not self.broken():
            try:
                pending = history.append_nowait(channel, data)
            except Exception as exc:  # a history that fails synchronously is down too
                self.trip(str(exc))
            else:
                pending.add_done_callback(_quiet)
        pipe = self._pipes.get(channel)
        if pipe is None:
            pipe = self._pipes[channel] = _Pipe(self, channel, kind)
        pipe.push(data, pending)

    def joined(self, channel: str) -> None:
        self.recording.joined(channel)
        self.channels.add(channel)

    def left(self, channel: str) -> None:
        self.recording.left(channel, time.monotonic())

    def expired(self) -> list[str]:
        """Channels whose linger just ended: no longer recorded (the hub may unsubscribe)."""
        done = self.recording.expired(time.monotonic())
        for channel in done:
            self.channels.discard(channel)
            pipe = self._pipes.get(channel)
            if pipe is not None and pipe.task is None:
                del self._pipes[channel]
        return done

    def lingering(self, channel: str) -> bool:
        return self.recording.wanted(channel, time.monotonic())

    # --- reconnect -------------------------------------------------------------------------

    async def resume(self, conn: Connection, channel: str, kind: str) -> None:
        """Write the recovery frame, the replay and the held live events of a ``since`` socket.

        Called once the 101 is sent. The socket was registered before, so whatever arrives
        meanwhile is held by its seam; the read is queued after every append this instance
        made so far (read-your-writes), and the seam drops what the replay already covered.
        """
        seam = conn.seam
        assert seam is not None
        replay: Replay | None = None
        if seam.since is not None and self.history is not None and not self.broken():
            try:
                async with asyncio.timeout(SINCE_WAIT):
                    replay = await self.history.since(channel, seam.since)
            except (BusError, TimeoutError) as exc:
                self.trip(str(exc) or type(exc).__name__)
        payloads = seam.finish(replay, render_for(conn, kind))
        for payload in payloads:  # no await in between: nothing live can slip in
            conn.send(text_frame(payload))
        self.metrics.recovered(seam.outcome, seam.replayed)

    async def size(self) -> int | None:
        if self.history is None:
            return 0
        try:
            async with asyncio.timeout(SINCE_WAIT):
                return await self.history.size()
        except (BusError, TimeoutError):
            return None

    async def close(self) -> None:
        for pipe in list(self._pipes.values()):
            if pipe.task is not None:
                pipe.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pipe.task
        if self.history is not None:
            with contextlib.suppress(Exception):
                await self.history.close()
