"""Per-channel event history: what a reconnecting socket is replayed from (docs/recovery.md).

A history records every bus message of a channel, in bus order, for a bounded window (``size``
messages, ``ttl`` seconds, ``max_bytes``), and names each one with an :class:`Offset`.

Offsets are opaque to clients. They carry an *epoch* — a random id of one incarnation of the
channel's history — and a *position* ``(ms, seq)``: ``seq`` counts the channel's messages one by
one (1, 2, 3, ... with no holes), ``ms`` is when the message was recorded (the time trimming is
judged by). Because ``seq`` has no holes, "was anything after this offset trimmed?" has an exact
answer: the window still holds every message after ``seq`` iff its first retained message is
``seq + 1`` or earlier. The epoch makes a history that was lost (Redis restarted without
persistence, FLUSHALL, an in-memory history of a restarted process, an offset from another
channel) answer "unknown" rather than replay the wrong events.

An envelope may also name an event *inside* a message (``part``: a face message carries several
events, each sent as its own frame, and a connection may be cut between two of them). ``since``
then returns that message first, and the caller skips the parts it already delivered.

*Gap markers* make holes in recording visible. A history only holds what some instance appended;
a stretch when nobody recorded the channel (no instance subscribed, or an append failed or was
skipped) would otherwise look covered. A marker is an entry that takes a ``seq`` like a message
but is never replayed: ``since`` answers :data:`NOT_RECOVERED` when one lies after the offset.
``mark_nowait(channel, start=True)`` is called when an instance starts recording a channel: it
registers the instance as a recorder of the channel and writes a marker only when no other live
recorder is registered (nobody saw what was published before); in Redis a registration is
believed only while another client listens to the channel (a recorder killed without a stop
stays registered a few seconds, its subscription does not). ``start=False`` writes one
unconditionally: the instance knows it missed something. Markers are counted by ``size``.

Only bus/ talks to Redis (the architecture rule): the Redis history is bus/redis_history.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

# Generous bounds: anything larger is garbage, and int() on a 10,000-digit string is slow.
_OFFSET = re.compile(r"([0-9a-f]{1,32})\.([0-9]{1,16})-([0-9]{1,19})(?:\.([0-9]{1,6}))?")
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True, order=True)
class Offset:
    """One message's (or, with ``part``, one event's) place in one channel's history."""

    epoch: str
    ms: int
    seq: int
    part: int | None = None

    def __str__(self) -> str:
        base = f"{self.epoch}.{self.ms}-{self.seq}"
        return base if self.part is None else f"{base}.{self.part}"

    def at(self, part: int) -> Offset:
        """The offset of event ``part`` of this message (what a face envelope carries)."""
        return Offset(self.epoch, self.ms, self.seq, part)

    def message(self) -> Offset:
        return Offset(self.epoch, self.ms, self.seq)


def parse(token: object) -> Offset | None:
    """The offset a client sent back, or None for anything not made by :func:`str` above.

    Never raises: the contract answers any unrecognised ``since`` with ``recovered: false``.
    """
    if not isinstance(token, str) or len(token) > 80:
        return None
    found = _OFFSET.fullmatch(token)
    if found is None:
        return None
    seq = int(found[3])
    if seq > _MAX_SEQ or seq == 0:
        return None
    part = None if found[4] is None else int(found[4])
    offset = Offset(found[1], int(found[2]), seq, part)
    return offset if str(offset) == token else None  # only the spelling the service writes


def new_epoch() -> str:
    return os.urandom(6).hex()


class Entry(NamedTuple):
    offset: Offset
    data: bytes


class Replay(NamedTuple):
    """The answer to :meth:`History.since`.

    ``recovered`` False: the offset is unknown (garbage, another epoch, from the future) or
    messages after it have left the window; ``entries`` is then empty and the caller goes live.
    """

    recovered: bool
    entries: list[Entry]


NOT_RECOVERED = Replay(False, [])


class History(Protocol):
    """The contract every history keeps (memory and Redis alike).

    - ``append`` records ``data`` on ``channel`` and returns its offset. Offsets of one channel
      increase in the order appends are made (bus order when appends follow receive order).
      Several processes appending the same message (each instance receives it from the bus)
      record it once and all get the same offset. A shared history can only tell "the same
      message" by its bytes: byte-identical messages inside ``Window.dedupe`` are one
      (docs/recovery.md). The memory history serves one process, which receives each message
      once, so it records every append.
    - ``since`` answers with every recorded message strictly after ``offset`` in order — or,
      when the offset names a ``part``, from that message on — and ``recovered`` True; or
      :data:`NOT_RECOVERED`. Any ``since`` made after an ``append`` returned (or was started
      by the same process: the Redis history runs its commands in call order) sees it.
    - A history that cannot answer (Redis down) raises ``BusError`` from either method; the
      caller delivers live and reports ``recovered: false``.
    - ``size`` is the number of messages currently held (the metric's gauge), ``close``
      releases connections.
    - ``shared``: other processes append to it too. Only then can an event this instance
      received before it recorded the channel be missing from a read it makes when it starts
      (another recorder has not appended it yet), so the hub appends those again first
      (delivery/recovery.Tail).
    """

    shared: bool
    fences: bool  # other recorders can be fenced (bus/fences.py): not on a Cluster

    async def append(self, channel: str, data: bytes) -> Offset: ...

    def append_nowait(self, channel: str, data: bytes) -> asyncio.Future[Offset]:
        """:meth:`append`, queued before returning: the hub calls it from the synchronous bus
        callback, so appends are ordered exactly as messages were received, and before any
        ``since`` called afterwards."""
        ...

    async def since(self, channel: str, offset: Offset) -> Replay: ...

    def mark_nowait(self, channel: str, start: bool) -> asyncio.Future[bool]:
        """Queue a gap marker (see the module doc), ordered with appends like
        :meth:`append_nowait`; the result says whether one was written."""
        ...

    async def counted_on(self, channel: str, timeout: float) -> set[str]:
        """The other recorders whose registration this instance's last start marker on
        ``channel`` believed instead of writing one; they are fenced (bus/fences.py)."""
        ...

    async def ask_fence(self, name: str, token: str, channel: str) -> bool:
        """Ask recorder ``name`` for a fence on ``channel``; False when it cannot answer."""
        ...

    def answer_nowait(self, channel: str, token: str, reply_to: str) -> asyncio.Future[Any]:
        """Answer a fence, ordered after the appends queued so far."""
        ...

    async def proven(self, channel: str, token: str, name: str) -> bool:
        """Whether recorder ``name`` wrote the answer to fence ``token`` (not a forgery)."""
        ...

    async def release(self, channel: str) -> None:
        """This instance no longer records ``channel``: drop its registration."""
        ...

    def domain(self, channel: str) -> str:
        """What fails with ``channel``'s history: "", or its slot's node in a Cluster."""
        ...

    async def size(self) -> int: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Window:
    """How much history a channel keeps (the ``history.*`` settings, docs/recovery.md)."""

    size: int = 1000
    ttl: float = 300.0
    max_bytes: int = 4 * 1024 * 1024
    dedupe: float = 30.0  # seconds a message's hash is remembered (several instances append)
    meta_ttl: float = 86400.0  # how long an idle channel's epoch and counter outlive its events


def covers(first_seq: int, last_seq: int, offset: Offset) -> bool:
    """Whether a window holding ``first_seq..last_seq`` (nothing when first > last) still has
    every message after ``offset``: the one exactness rule both histories share."""
    if offset.seq > last_seq:
        return False  # from the future: another incarnation that reused this epoch id
    if offset.part is not None:
        return offset.seq >= first_seq  # the message itself must still be there
    return offset.seq >= first_seq - 1


class Span(NamedTuple):
    """What one read of a channel saw, enough to answer ``since`` for any offset at or after
    the first entry it holds (the Redis history answers many sockets from one read)."""

    epoch: str
    first: int  # first seq still in the window (last + 1 when empty)
    last: int  # last seq given
    entries: list[Entry]  # consecutive seqs, gap markers included (data b"")
    gaps: Collection[int]  # seqs of the gap markers among them


def judge(offset: Offset, span: Span) -> Replay:
    """The replay for ``offset`` from ``span``: the exactness rules both histories share.

    ``span.entries`` must start at or before the entry ``offset`` names (whenever that entry is
    still in the window) and run to ``span.last``.
    """
    if span.epoch != offset.epoch or not covers(span.first, span.last, offset):
        return NOT_RECOVERED
    entries = span.entries
    base = entries[0].offset.seq if entries else span.last + 1
    if offset.seq >= span.first:
        at = offset.seq - base
        if at < 0 or entries[at].offset.ms != offset.ms:
            return NOT_RECOVERED  # same seq, another message: not an offset we gave
    start = offset.seq if offset.part is not None else offset.seq + 1
    if max(start, span.first) < base:
        return NOT_RECOVERED  # the read began later than this offset (its ms was not ours)
    picked = entries[start - base :] if start > base else entries
    if span.gaps and any(seq >= start for seq in span.gaps):
        return NOT_RECOVERED  # nobody recorded part of what came after the offset
    return Replay(True, picked)


@dataclass(slots=True)
class _Ring:
    epoch: str = field(default_factory=new_epoch)
    seq: int = 0
    ms: int = 0
    held: int = 0  # bytes
    used: float = 0.0
    gaps: set[int] = field(default_factory=set)  # seqs of gap markers still in the window
    entries: deque[tuple[Offset, bytes, float]] = field(default_factory=deque)


class MemoryHistory:
    """The history for ``memory://``: a bounded ring per channel, gone with the process.

    A restarted process starts new epochs, so offsets given out before answer ``recovered:
    false`` — exactly what happened (the events in between were never recorded anywhere).
    """

    shared = False
    fences = False

    def __init__(
        self, window: Window | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.window = window or Window()
        self._clock = clock
        self._rings: dict[str, _Ring] = {}
        self._recording: set[str] = set()  # channels registered by mark_nowait(start=True)

    def _now(self) -> float:
        return self._clock()

    def append_nowait(self, channel: str, data: bytes) -> asyncio.Future[Offset]:
        done: asyncio.Future[Offset] = asyncio.get_running_loop().create_future()
        done.set_result(self._append(channel, data))
        return done

    async def append(self, channel: str, data: bytes) -> Offset:
        return self._append(channel, data)

    def mark_nowait(self, channel: str, start: bool) -> asyncio.Future[bool]:
        """In one process the only recorder is this one: recording that starts again after a
        pause (a linger ended) marks the pause. A channel with no ring yet needs no marker: no
        offset of this process names it, and offsets of a previous process have another epoch."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fresh = channel not in self._recording
        self._recording.add(channel)
        ring = self._rings.get(channel)
        write = (fresh or not start) and ring is not None
        if write:
            assert ring is not None
            ring.gaps.add(self._append(channel, b"").seq)
        done.set_result(write)
        return done

    # One process: no other recorder to fence.
    async def counted_on(self, channel: str, timeout: float) -> set[str]:
        return set()

    async def ask_fence(self, name: str, token: str, channel: str) -> bool:
        return False

    def answer_nowait(self, channel: str, token: str, reply_to: str) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(0)
        return done

    async def proven(self, channel: str, token: str, name: str) -> bool:
        return False

    def domain(self, channel: str) -> str:
        return ""

    async def release(self, channel: str) -> None:
        self._recording.discard(channel)

    def _append(self, channel: str, data: bytes) -> Offset:
        now = self._now()
        ring = self._rings.get(channel)
        if ring is None or now - ring.used > self.window.meta_ttl:
            ring = self._rings[channel] = _Ring()
        ring.used = now
        ring.seq += 1
        ring.ms = max(ring.ms, int(now * 1000))
        offset = Offset(ring.epoch, ring.ms, ring.seq)
        ring.entries.append((offset, data, now))
        ring.held += len(data)
        self._trim(ring, now)
        return offset

    def _trim(self, ring: _Ring, now: float) -> None:
        window = self.window
        entries = ring.entries
        # The newest message always stays: a window that cannot hold one event still names it.
        while len(entries) > 1 and (
            len(entries) > window.size
            or ring.held > window.max_bytes
            or now - entries[0][2] > window.ttl
        ):
            _, data, _ = entries.popleft()
            ring.held -= len(data)
        if entries and now - entries[0][2] > window.ttl:
            ring.held -= len(entries.popleft()[1])

    async def since(self, channel: str, offset: Offset) -> Replay:
        ring = self._rings.get(channel)
        if ring is None:
            return NOT_RECOVERED
        self._trim(ring, self._now())
        entries = ring.entries
        first = entries[0][0].seq if entries else ring.seq + 1
        if ring.gaps:
            ring.gaps = {seq for seq in ring.gaps if seq >= first}
        span = [Entry(o, d) for o, d, _ in entries]
        return judge(offset, Span(ring.epoch, first, ring.seq, span, ring.gaps))

    async def size(self) -> int:
        return sum(len(ring.entries) for ring in self._rings.values())

    async def close(self) -> None:
        self._rings.clear()
        self._recording.clear()


def create_history(
    url: str,
    window: Window | None = None,
    prefix: str | None = None,
    presence: Callable[[], str | None] | None = None,
) -> History:
    """The history matching a bus URL: in Redis for every Redis bus, in memory for memory://.

    Sentinel and Cluster buses get a client of the same kind as the bus's own (the current
    master; the node owning each channel's slot), built from the same URL. ``presence`` gives
    the bus connection's presence name (bus/presence.py), under which this instance records.
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryHistory(window)
    client: object | None = None
    if scheme in {"redis+sentinel", "rediss+sentinel"}:
        from luna_sender.bus.sentinel import master_client

        client = master_client(url)
    elif scheme in {"redis+cluster", "rediss+cluster"}:
        from luna_sender.bus.cluster import cluster_client

        client = cluster_client(url)
    elif scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"no history for bus URL scheme {scheme!r}")
    from luna_sender.bus.redis_history import DEFAULT_PREFIX, RedisHistory

    cluster = scheme in {"redis+cluster", "rediss+cluster"}
    return RedisHistory(
        url,
        window,
        prefix=prefix or DEFAULT_PREFIX,
        client=client,
        sees_subscribers=not cluster,
        presence=presence,
    )
