"""The seam between replay and live for a socket that reconnects with ``since`` (#18).

The contract (spec "Recovery after reconnect"): first ``{"recovery": {"recovered", "replayed"}}``,
then every event after the offset that matches the socket's filters, in bus order, then live —
no gap and no duplicate. The only way to have no gap is to listen before reading: the socket is
registered for live events first (they are held here), the history is read second, and whatever
was held that the history already covered is dropped. :class:`Seam` is that bookkeeping, pure
(no I/O), so every interleaving can be tested without sockets.

How it is wired (web/streams.py, delivery/hub.py, delivery/recorder.py):

1. Handshake with ``recover=true`` or ``since=...``: the connection gets ``recover = True`` (its
   live frames carry ``"offset"``); with ``since`` also ``seam = Seam(since_param)``.
2. ``hub.add(conn)`` registers it (in groups of recovering sockets) and :class:`Recording`
   starts recording its channel; from here on live events reach it.
3. Every message of a recorded channel is appended in receive order from the synchronous bus
   callback (``History.append_nowait``) and goes through that channel's ordered pipeline to the
   recovering sockets once its offset is known: ``with_offset(envelope, str(offset))``, for
   face events ``offset.at(i)``. With a seam: ``payload = conn.seam.hold(offset, payload, key)``;
   None: send nothing. The channel stays subscribed and recorded for ``history.ttl`` after its
   last recovering socket left.
4. After the 101: ``replay = history.since(channel, seam.since)`` (bounded; an error or timeout
   -> ``None``: recovered false), then, with no await in between, every payload of
   ``seam.finish(replay, render)``. The read is queued after every append this instance made
   (read-your-writes). A channel this instance starts recording first gets the messages it
   received on it just before (:class:`Tail`) appended again, ahead of the read: another
   instance that recorded them may not have appended them yet.
5. Metrics: ``seam.outcome`` ("recovered", "not_recovered") and ``seam.replayed``.

Live events held while the replay was read are kept only if they come after the last message
the history returned (the *watermark*). History and live share one offset space (every instance
appends the same message under the same offset), so "already replayed" is an offset comparison.
An event from another epoch (the history was lost meanwhile) is always kept; an event with no
offset (the history did not answer in time) is kept unless the replay held the same message
(same bytes): at-least-once over at-most-once, and never twice from the service. After
:meth:`Seam.finish` the watermark stays until the first event past it, because the pipeline
may deliver a replayed event's live copy after the read returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from luna_sender.bus.history import Entry, Offset, Replay, parse

# A renderer: one recorded bus message -> this socket's matching events as (part, envelope).
Render = Callable[[Entry], Iterable[tuple[int | None, bytes]]]


def with_offset(envelope: bytes, offset: str) -> bytes:
    """The envelope with ``"offset"`` added as its last key.

    Envelopes are JSON objects whose last byte is their own closing brace (wire.py writes every
    key after the event), and offsets contain only ``[0-9a-f.-]``, so a splice is exact and
    costs one copy instead of a re-encode.
    """
    return b"".join((envelope[:-1], b',"offset":"', offset.encode("ascii"), b'"}'))


def recovery_payload(recovered: bool, replayed: int) -> bytes:
    return orjson.dumps({"recovery": {"recovered": recovered, "replayed": replayed}})


class Seam:
    """One reconnecting socket, from its registration to the end of its replay."""

    __slots__ = ("_held", "_seen", "_watermark", "live", "recovered", "replayed", "since")

    def __init__(self, since: object) -> None:
        # Anything unparseable is "unknown": recovered false, never an error (the contract).
        self.since: Offset | None = parse(since)
        self._held: list[tuple[Offset | None, bytes, int | None]] = []
        self._watermark: Offset | None = None
        self._seen: frozenset[int] = frozenset()
        self.live = False
        self.recovered = False
        self.replayed = 0

    @property
    def transparent(self) -> bool:
        """Live and past the replay: :meth:`hold` would pass everything through."""
        return self.live and self._watermark is None

    @property
    def outcome(self) -> str:
        return "recovered" if self.recovered else "not_recovered"

    def hold(self, offset: Offset | None, payload: bytes, key: int | None = None) -> bytes | None:
        """A live event for this socket: held until :meth:`finish`, passed through after.

        ``key`` identifies the bus message (the hub passes ``hash(data)``): an event the history
        could not name (no offset) is dropped when the replay held the same message.

        After :meth:`finish` an event the replay already covered may still come by: the hub's
        pipeline delivers an event once its append answered, which can be after the read that
        returned it. Such events are dropped too, until the first one past the replay, after
        which (the pipeline keeps receive order) the seam lets everything through untouched.
        """
        if not self.live:
            self._held.append((offset, payload, key))
            return None
        watermark = self._watermark
        if watermark is None:
            return payload
        if offset is None:
            return None if key is not None and key in self._seen else payload
        if _covered(offset, watermark):
            return None
        self._watermark = None
        self._seen = frozenset()
        return payload

    def finish(self, replay: Replay | None, render: Render) -> list[bytes]:
        """Everything to write, in order: the recovery frame, the replay, the held events.

        ``replay`` None means the history could not be read (or ``since`` was garbage). The
        caller writes the list without awaiting in between; the seam is live afterwards.
        """
        payloads: list[bytes] = []
        since = self.since
        watermark: Offset | None = None
        seen: frozenset[int] = frozenset()
        if replay is not None and replay.recovered and since is not None:
            self.recovered = True
            watermark = since.message()
            seen = frozenset(hash(entry.data) for entry in replay.entries)
            for entry in replay.entries:
                watermark = entry.offset
                skip_upto = since.part if entry.offset.seq == since.seq else None
                for part, envelope in _safe(render, entry):
                    if skip_upto is not None and part is not None and part <= skip_upto:
                        continue
                    named = entry.offset if part is None else entry.offset.at(part)
                    payloads.append(with_offset(envelope, str(named)))
        elif since is not None:
            # Not recovered, yet an event at or before ``since`` is one the client has: this
            # instance may still deliver it late (it was stalled, or its offset came after the
            # read). An outside pass saw it as the first live frame after ``false``, 10 of 10.
            watermark = since
        self.replayed = len(payloads)
        for held, payload, key in self._held:
            if held is None:
                if key is None or key not in seen:
                    payloads.append(payload)
            elif watermark is None or not _covered(held, watermark):
                payloads.append(payload)
        self._held = []
        self._watermark = watermark
        self._seen = seen
        self.live = True
        return [recovery_payload(self.recovered, self.replayed), *payloads]


def _covered(offset: Offset, watermark: Offset) -> bool:
    """At or before ``watermark``; an event of the watermark's own message only up to its part.
    By time and sequence: a history restored from an older snapshot counts its sequence again
    from an older value, but at a later time, so a client's offset from before the restore
    never hides an event appended after it."""
    if offset.epoch != watermark.epoch:
        return False
    at, mark = (offset.ms, offset.seq), (watermark.ms, watermark.seq)
    if at != mark:
        return at < mark
    return watermark.part is None or offset.part is None or offset.part <= watermark.part


def _safe(render: Render, entry: Entry) -> list[tuple[int | None, bytes]]:
    try:
        return list(render(entry))
    except Exception:  # a message that cannot be rendered is skipped, as poison is live
        return []


class Recording:
    """Which channels this instance records, and for how long after their last recovering socket.

    Pure bookkeeping with the clock passed in; :meth:`records` is on the fan-out's hot path (two
    dict look-ups). The hub calls :meth:`expired` from its sweeper and unsubscribes what it
    returns unless other sockets still hold the channel.
    """

    __slots__ = ("_active", "_linger", "_until")

    def __init__(self, linger: float) -> None:
        self._linger = linger
        self._active: dict[str, int] = {}  # channel -> recovering sockets on it
        self._until: dict[str, float] = {}  # channel -> end of its linger

    def joined(self, channel: str) -> None:
        self._active[channel] = self._active.get(channel, 0) + 1
        self._until.pop(channel, None)

    def left(self, channel: str, now: float) -> None:
        count = self._active.get(channel, 0) - 1
        if count > 0:
            self._active[channel] = count
            return
        self._active.pop(channel, None)
        self._until[channel] = now + self._linger

    def records(self, channel: str, now: float) -> bool:
        if channel in self._active:
            return True
        until = self._until.get(channel)
        return until is not None and until > now

    def wanted(self, channel: str, now: float) -> bool:
        """Whether the channel must stay subscribed for recording's sake."""
        return self.records(channel, now)

    def expired(self, now: float) -> list[str]:
        """Channels whose linger is over (each returned once)."""
        done = [channel for channel, until in self._until.items() if until <= now]
        for channel in done:
            del self._until[channel]
        return done


# How much a Tail holds: the last TAIL_SLOTS messages, at most TAIL_BYTES of them together
# (the oldest go first) and none over TAIL_MESSAGE, no older than TAIL_AGE seconds (nor half of
# history.dedupe).
TAIL_SLOTS = 2048
TAIL_BYTES = 16 * 1024 * 1024
TAIL_MESSAGE = 1024 * 1024
# A frozen recorder is believed for 1.5 s after its last refresh (redis_history.FRESH), and a
# resume's read waits SETTLE: what the freeze held back is up to 1.6 s old when the ring is read.
# At 1 s an outside pass lost the freeze's first events behind ``true`` (moves 1.0-1.5 s in).
TAIL_AGE = 2.0
# How long after a new subscription its appends and a resume's read wait (Recorder.joined).
SETTLE = 0.1


class Tail:
    """The last messages this instance received on channels it did not record.

    The race it closes (docs/recovery.md): a client resumes on instance A, which serves plain
    sockets of the account (or ``/ws/general``, always subscribed) but does not record the
    channel; event E reached A just before, so A does not send it live, and A's ``since`` read
    misses it when the instance that recorded E (the one the client left) has not appended it
    yet: a few ms normally, up to 1.5 s while that instance stalls. A appends what it holds of
    the channel again before its read. The shared history records each message once (by its
    bytes, within ``history.dedupe``) and returns the offset it already has, so this costs a
    Redis call per held message, once per channel that starts recording, and records nothing
    twice: the age bound stays under half of ``dedupe`` for that reason.

    On the hot path, one store and a byte count per message of a plain channel: a fixed ring,
    trimmed only when large messages pass the byte budget. Deques trimmed to the last second
    measured costlier, if within the benchmark's spread (docs/performance.md, "The recovery
    tail"). 32 slots covered 4 ms at 8,000 events/s, 256 some 85 ms at 3,000/s: too little for a
    stalled recorder. A resume scans the ring once per channel it starts recording (84 µs).
    """

    __slots__ = ("_age", "_bytes", "_next", "_ring")

    def __init__(self, dedupe: float, slots: int = TAIL_SLOTS) -> None:
        self._age = min(TAIL_AGE, dedupe / 2)
        self._ring: list[tuple[float, str, bytes] | None] = [None] * slots
        self._next = 0
        self._bytes = 0  # held in the ring

    def add(self, at: float, channel: str, data: bytes) -> None:
        size = len(data)
        if size > TAIL_MESSAGE:
            return
        ring, i = self._ring, self._next
        old = ring[i]
        held = self._bytes + size - (0 if old is None else len(old[2]))
        ring[i] = (at, channel, data)
        self._next = i = (i + 1) % len(ring)
        while held > TAIL_BYTES:  # large messages: the oldest make room
            old = ring[i]
            if old is not None:
                held -= len(old[2])
                ring[i] = None
            i = (i + 1) % len(ring)
        self._bytes = held

    def take(self, channel: str, now: float) -> list[bytes]:
        """The channel's messages still held, oldest first (the hub's clock: perf_counter)."""
        i, ring, oldest = self._next, self._ring, now - self._age
        return [
            entry[2]
            for entry in ring[i:] + ring[:i]
            if entry is not None and entry[1] == channel and entry[0] >= oldest
        ]


class Tally:
    """One recorded bus message's deliveries, counted by the hub's plain fan-out (at the end
    of the loop turn) and by its recovering sockets (once the offset is known) in either
    order: the plugins get one notice per message, from whichever side finishes second."""

    __slots__ = ("create_time", "plain", "rec")

    def __init__(self) -> None:
        self.plain: int | None = None
        self.rec: int | None = None
        self.create_time: object = None

    def plain_done(self, sent: int) -> bool:
        self.plain = sent
        return self.rec is not None

    def recovering(self, sent: int, create_time: object) -> bool:
        self.rec, self.create_time = sent, create_time
        return self.plain is not None

    def total(self) -> int:
        return (self.plain or 0) + (self.rec or 0)


def chain(done: asyncio.Future[Offset], real: asyncio.Future[Offset]) -> None:
    """A deferred append's outcome, to the future its message waits on in the pipe."""
    if done.done():
        return
    if real.cancelled():
        done.cancel()
    elif (error := real.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(real.result())


def after(offset: Offset, last: Offset) -> bool:
    """Later in the same epoch, by time then sequence (a restored snapshot counts its sequence
    again from an older value, at a later time; delivery/recovery.py's ``_covered``)."""
    return (offset.ms, offset.seq) > (last.ms, last.seq)


def retrieve(done: asyncio.Future[Any]) -> None:
    """An abandoned operation's error is expected (the breaker reported it): retrieve it."""
    if not done.cancelled():
        done.exception()
