"""Recording channels for recovery and feeding recovering sockets (#18, docs/recovery.md).

The bus callback is synchronous and must never wait: a message of a recorded channel is handed
to the history at once (``append_nowait`` queues it in receive order, before any ``since``
issued later) and to that channel's :class:`Pipe` (delivery/pipe.py), which waits for the
offsets one message at a time, in order, and only then gives the message to the recovering
sockets. Sockets without recovery never pass through here: the hub writes their frames before
it even records.

When the history is slow or down, live delivery must not stall: a message waits a bounded
time for its offset, then goes out without one, and opens the breaker (delivery/pipe.py). A
reconnect's read is bounded by :data:`SINCE_WAIT` and answers ``recovered: false`` then.

Every hole in recording leaves a gap marker in the history (bus/history.py), so a later
``since`` from before it answers ``recovered: false`` instead of promising what was not seen:

- *Start.* A channel this instance starts recording gets ``mark_nowait(start=True)`` (a marker
  unless another live recorder is registered) lazily, queued just before whichever comes
  first: the first append of the channel, or the ``since`` read of a resuming socket. Both
  happen after the subscription is effective (a message arrived through it; the hub awaits the
  subscribe before the resume), and the marker is queued ahead of every append this instance
  makes for the channel, in the same ordered queue. So the marker lies after everything that
  may have been published before this instance listened, and before what it records.
- *Holes.* An append skipped by the breaker, failing, or failing to queue makes the channel
  *dirty*; the next append (or ``since`` read) of the channel is preceded by an unconditional
  marker. An append abandoned after :data:`APPEND_WAIT` that later succeeds left no hole; the
  breaker it opened skips (and marks) the following ones.
- A channel that stops being recorded (its linger ended) is released: another instance, or this
  one later, starting it again marks what nobody saw meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from luna_sender.bus import fences
from luna_sender.bus.base import BusError
from luna_sender.bus.history import History, Offset, Replay
from luna_sender.delivery.fencing import Fencing
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.pipe import Breaker, Pipe
from luna_sender.delivery.recovery import SETTLE, Recording, Tail, Tally, after, chain, retrieve
from luna_sender.delivery.rendering import render_for

if TYPE_CHECKING:
    from luna_sender.delivery.connection import Connection
    from luna_sender.runtime.metrics import Metrics

log = logging.getLogger("luna_sender.hub")

SINCE_WAIT = 2.0
POISON = object()  # the hub's plain fan-out found the message undecodable (it reported it)


# hub callback: (channel, kind, data, offset, tally, started, stale) -> writes to the channel's
# recovering sockets; ``tally``/``started`` are the hub's, passed through (Recorder.record);
# ``stale``: the offset is not past what the sockets got (Recorder.forward).
Deliver = Callable[[str, str, bytes, Offset | None, Tally, float, bool], None]
_Deferred = tuple[bytes, "asyncio.Future[Offset]"]
# A new subscription settling: (its end, the messages it holds, the fences asked meanwhile)
_Settle = tuple[float, list[_Deferred], list[tuple[str, str]]]


class Recorder:
    """Which channels are recorded, their pipes, the breaker, and the replay on reconnect."""

    def __init__(
        self,
        history: History | None,
        linger: float,
        deliver: Deliver,
        metrics: Metrics,
        dedupe: float = 30.0,
    ) -> None:
        self.history = history
        self.recording = Recording(linger)
        # What the hub received on channels not recorded: appended again when one starts
        # (fences make it needless: they wait for the recorders that did receive those)
        shared = history is not None and history.shared
        self.tail = Tail(dedupe) if shared and history and not history.fences else None
        self._owed: dict[str, list[bytes]] = {}  # channel -> its tail, appended after the marker
        self._deferred: dict[str, _Settle] = {}  # channel -> its settle (joined)
        self.channels: set[str] = set()  # recorded now: the one look-up on the plain path
        self.deliver = deliver
        self.metrics = metrics
        self._pipes: dict[str, Pipe] = {}
        self._last: dict[str, Offset] = {}  # channel -> the highest offset its pipe delivered
        self.breaker = Breaker(history.domain if history is not None else None)
        self._unmarked: set[str] = set()  # recorded since joined, start marker not queued yet
        self._dirty: set[str] = set()  # an append was lost: a marker before the next one
        self.fencing = Fencing(history) if history is not None and history.shared else None
        self._fences: dict[str, asyncio.Future[bool]] = {}  # channel -> its start's fence

    def forward(
        self, channel: str, kind: str, data: bytes, offset: Offset | None, plain: Tally, at: float
    ) -> None:
        """A pipe's message to the hub, under its offset only if that is past every offset
        the channel's sockets got: a byte-identical republish within ``history.dedupe`` is
        recorded once and answers the first one's offset, and so does a message another
        recorder appended late, after ones this instance recorded. Under that older offset a
        socket's offsets went backwards, and a resume from its last one replayed an event a
        second time (an outside pass: 5 of 5). It goes out without offset instead, as an
        unrecorded event does; plain sockets get it all the same. Its offset still goes to
        resuming sockets' seams, which drop it when their replay or ``since`` covered it: an
        outside pass got a late copy three times when it went unnamed there too."""
        stale = False
        if offset is not None:
            last = self._last.get(channel)
            if last is None or last.epoch != offset.epoch or after(offset, last):
                self._last[channel] = offset
            else:
                stale = True
        self.deliver(channel, kind, data, offset, plain, at, stale)

    # --- recording -------------------------------------------------------------------------

    def _mark(self, history: History, channel: str) -> asyncio.Future[bool] | None:
        """Queue the marker this channel owes, if any (module doc), before the next operation."""
        start, dirty = channel in self._unmarked, channel in self._dirty
        if not start and not dirty:
            return None
        self._unmarked.discard(channel)
        self._dirty.discard(channel)
        marked = history.mark_nowait(channel, start=not dirty)
        marked.add_done_callback(lambda done: self._lost(channel, done))
        if not dirty and self.fencing is not None:
            self._fences[channel] = asyncio.ensure_future(self._fenced(history, channel))
        for data in self._owed.pop(channel, ()):  # after the marker, before what is recorded
            again = history.append_nowait(channel, data)
            again.add_done_callback(lambda done: self._lost(channel, done))
        return marked

    def _lost(self, channel: str, done: asyncio.Future[Any]) -> None:
        """An operation's outcome: a failed one makes the channel owe a marker."""
        if done.cancelled() or done.exception() is not None:
            self._dirty.add(channel)

    def _skipped(self, history: History, channel: str) -> None:
        """The breaker skips this message: a hole. Its marker is queued now, not before the next
        append: another instance that starts recording the channel meanwhile counts on this
        one (it is a registered recorder), and its ``since`` read must find the hole marked as
        soon as Redis answers again, not a cooldown and an event later (a 1-3 s Redis stall
        showed replays missing the skipped events). The channel stays dirty, so the next
        append marks whatever else was skipped after this marker."""
        if channel not in self._dirty:
            try:
                marked = history.mark_nowait(channel, start=False)
            except Exception:  # not even queued: the next append's marker still comes
                pass
            else:
                marked.add_done_callback(lambda done: self._lost(channel, done))
        self._dirty.add(channel)

    def record(self, channel: str, kind: str, data: bytes, plain: Tally, at: float) -> None:
        """Called by the bus callback for a recorded channel: never waits. ``plain`` (the
        hub's count of this message's deliveries) and ``at`` (receipt) go with the
        message to the hub's delivery, which reports it (hooks, metrics) once, with both."""
        pending = None
        history = self.history
        if history is not None and self.breaker.broken(channel):
            self._skipped(history, channel)
        elif history is not None:
            settling = self._deferred.get(channel)
            if settling is None:
                pending = self._append(history, channel, data)
            else:  # a new subscription settling: appended with the rest by _flush
                pending = asyncio.get_running_loop().create_future()
                pending.add_done_callback(retrieve)  # the pipe may give up on it first
                settling[1].append((data, pending))
        pipe = self._pipes.get(channel)
        if pipe is None:
            pipe = self._pipes[channel] = Pipe(self, channel, kind)
        pipe.push(data, pending, plain, at)

    def _append(self, history: History, channel: str, data: bytes) -> asyncio.Future[Offset] | None:
        try:
            self._mark(history, channel)
            pending = history.append_nowait(channel, data)
        except Exception as exc:  # a history that fails synchronously is down too
            self._dirty.add(channel)
            self.breaker.trip(channel, str(exc))
            return None
        pending.add_done_callback(lambda done: self._lost(channel, done))
        return pending

    def _flush(self, channel: str) -> None:
        """A new subscription's settle is over: its start marker, and its messages so far once
        the fence that marker starts is done, so that they land after what the recorders it
        counted on appended (appended at once, one landed ahead of its predecessor: out of bus
        order in 1-4 of 100 such resumes; after 100 ms, behind a recorder frozen longer)."""
        history = self.history
        if channel not in self._deferred or history is None:
            return
        try:
            self._mark(history, channel)
        except Exception as exc:  # not even queued: still owed, queued before the next append
            self._dirty.add(channel)
            self.breaker.trip(channel, str(exc))
        fence = self._fences.get(channel)
        if fence is None:
            self._release(channel)
        else:
            fence.add_done_callback(lambda _: self._release(channel))

    def _release(self, channel: str) -> None:
        settling, history = self._deferred.pop(channel, None), self.history
        if settling is None or history is None:
            return
        for data, done in settling[1]:
            real = None
            if self.breaker.broken(channel):
                self._skipped(history, channel)
            else:
                real = self._append(history, channel, data)
            if real is None:
                done.cancel()
            else:
                real.add_done_callback(functools.partial(chain, done))
        for token, reply_to in settling[2]:  # fences asked while settling: behind these
            self._answer(history, channel, token, reply_to)

    def on_presence(self, data: bytes) -> None:
        """A message on this instance's presence channel: a fence asked of it, or the answer
        to one it asked (bus/fences.py)."""
        got, history = fences.parse(data), self.history
        if got is None or history is None or self.fencing is None:
            return
        kind, token, who, channel = got
        if kind == fences.ANSWER:
            self.fencing.answered(token, who)
        elif channel in self.channels:  # else no answer: the asker marks a gap
            self._answer(history, channel, token, who)

    def _answer(self, history: History, channel: str, token: str, reply_to: str) -> None:
        """Behind the appends of all received before the request, a settling channel's with its
        settle, after any marker the channel owes."""
        settling = self._deferred.get(channel)
        if settling is not None:
            settling[2].append((token, reply_to))
            return
        try:
            self._mark(history, channel)
            history.answer_nowait(channel, token, reply_to).add_done_callback(retrieve)
        except Exception:  # not answered: the asker marks a gap
            pass

    async def _fenced(self, history: History, channel: str) -> bool:
        """The start marker counted on other recorders: a gap marker when one did not answer
        its fence (bus/fences.py), queued at once, before any resume's read waiting on this."""
        assert self.fencing is not None
        try:
            fenced = await self.fencing.run(channel)
        finally:
            if self._fences.get(channel) is asyncio.current_task():
                del self._fences[channel]
        if not fenced and channel in self.channels:
            self._dirty.add(channel)
            with contextlib.suppress(Exception):  # not even queued: still owed
                self._mark(history, channel)
        return fenced

    def joined(self, channel: str, subscribing: bool = False) -> None:
        """A start: another recorder may not have appended the events just before it, so this
        one's appends and reads wait for its fence, and with ``subscribing`` (a new
        subscription) :data:`SETTLE` first (a read at once lost one behind ``true`` in 1 of 65
        resumes; appends at once landed ahead of a late recorder's, out of bus order in 6 of 6
        general resumes with its tail overrun). memory:// has no other recorder."""
        self.recording.joined(channel)
        fresh = channel not in self.channels and channel not in self._deferred
        if fresh and self.fencing is not None:
            delay = SETTLE if subscribing else 0.0
            self._deferred[channel] = (time.monotonic() + delay, [], [])
            asyncio.get_running_loop().call_later(delay, self._flush, channel)
        if channel not in self.channels:
            self._unmarked.add(channel)
            if self.tail is not None:  # from here on, every message is recorded
                owed = self.tail.take(channel, time.perf_counter())
                if owed:
                    self._owed[channel] = owed
        self.channels.add(channel)

    def left(self, channel: str) -> None:
        self.recording.left(channel, time.monotonic())

    def expired(self) -> list[str]:
        """Channels whose linger just ended: no longer recorded (the hub may unsubscribe)."""
        done = self.recording.expired(time.monotonic())
        for channel in done:
            self.channels.discard(channel)
            self._unmarked.discard(channel)
            self._owed.pop(channel, None)
            self._deferred.pop(channel, None)
            self._dirty.discard(channel)  # the next start marks it (nobody else may record)
            self._last.pop(channel, None)
            if self.history is not None:
                task = asyncio.ensure_future(self.history.release(channel))
                task.add_done_callback(retrieve)
            pipe = self._pipes.get(channel)
            if pipe is not None and pipe.task is None:
                del self._pipes[channel]
        return done

    def interrupted(self, cut: Collection[str] | None = None) -> list[asyncio.Future[bool]]:
        """The bus subscription was lost (for the channels in ``cut`` only, when given) and is
        back: what was published meanwhile reached no one here, and maybe not other instances
        either (a failover cuts them all), so each recorded channel owes a marker, queued at once
        ahead of anything recorded after the cut, and returned: a client told of the cut may
        resume on another instance, whose read must find them (an outside pass: 16 of 16 such
        resumes answered true over lost events meanwhile)."""
        channels = set(self.channels if cut is None else self.channels.intersection(cut))
        self._dirty.update(channels)
        marked = []
        if self.history is not None:
            for channel in channels:
                try:
                    done = self._mark(self.history, channel)
                except Exception:  # not even queued: still owed, the next append queues it
                    self._dirty.add(channel)
                else:
                    if done is not None:
                        marked.append(done)
        return marked

    def held(self, channel: str) -> float:
        """Extra wait for an offset: a start holds its appends for its settle and fence."""
        return SETTLE + fences.WAIT if channel in self._deferred else 0.0

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
        if seam.since is not None and self.history is not None and not self.breaker.broken(channel):
            settling = self._deferred.get(channel)
            if settling is not None:  # a new subscription: another recorder's appends first
                await asyncio.sleep(settling[0] - time.monotonic())
                self._flush(channel)
            try:
                self._mark(self.history, channel)  # the read must see the marker it owes
                fence = self._fences.get(channel)
                if fence is not None:  # the other recorders' appends, or a gap marker, first
                    await asyncio.wait([fence], timeout=2 * fences.WAIT)
                self._release(channel)  # and this one's held messages, before the read
                self._mark(self.history, channel)
            except Exception as exc:  # a marker that cannot even be queued: no promise
                self._dirty.add(channel)
                self.breaker.trip(channel, str(exc))
            if not self.breaker.broken(channel):
                try:
                    async with asyncio.timeout(SINCE_WAIT):
                        replay = await self.history.since(channel, seam.since)
                except (BusError, TimeoutError) as exc:
                    self.breaker.trip(channel, str(exc) or type(exc).__name__)
        payloads = seam.finish(replay, render_for(conn, kind))
        live = 0
        for n, payload in enumerate(payloads):  # no await in between: nothing live slips in
            # [recovery frame, replayed..., held live...]: held live events count as delivered
            if conn.send(text_frame(payload)) and n > seam.replayed:
                live += 1
        self.metrics.recovered(seam.outcome, seam.replayed)
        if live:
            self.metrics.delivered[kind].inc(live)

    async def size(self) -> int | None:
        if self.history is None:
            return 0
        try:
            async with asyncio.timeout(SINCE_WAIT):
                return await self.history.size()
        except (BusError, TimeoutError):
            return None

    async def close(self) -> None:
        self._deferred.clear()  # a settle ending after this appends nothing
        for fence in list(self._fences.values()):
            fence.cancel()
        for pipe in list(self._pipes.values()):
            if pipe.task is not None:
                pipe.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pipe.task
        if self.history is not None:
            with contextlib.suppress(Exception):
                await self.history.close()
