"""Live connections, indexed for matching, and the fan-out.

Data flows one way: bus -> :meth:`Hub.on_message` -> filters -> socket. Each bus message is decoded
once; connections with identical filters share a :class:`Group`, so a predicate runs once per
distinct filter, not once per socket; the envelope of an event is serialised and framed once,
lazily (only when something matches), and the same frame bytes are written to every matching
transport.

Backpressure: a socket's outgoing queue *is* its transport write buffer. A frame that finds more
than ``ws.queue_max_bytes`` still unsent (the cap is at least the largest accepted message, so a
reader that keeps up never hits it), or a buffer that makes no progress for ``ws.stall_timeout``
seconds, evicts that socket with close code 1008 — it never slows the others.
See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from luna_sender import errors, wire
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.groups import GroupIndex, face_index, general_index
from luna_sender.filters.base import CompiledFilter

if TYPE_CHECKING:
    from aiohttp import web

    from luna_sender.bus import Bus
    from luna_sender.config.settings import Settings
    from luna_sender.runtime.metrics import Metrics

log = logging.getLogger("luna_sender.hub")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
SLOW_CONSUMER_REASON = "slow consumer: outgoing queue overflow"
STALLED_REASON = "slow consumer: no progress"
_ids = itertools.count(1)


class Connection:
    """One subscriber socket. Writes go straight to the transport: frames are prebuilt."""

    __slots__ = (
        "account",
        "cancel_sent",
        "cap",
        "close_code",
        "close_reason",
        "closing",
        "delivered",
        "filter",
        "hub",
        "id",
        "kind",
        "opened_at",
        "progress_mark",
        "queued",
        "reading",
        "request_id",
        "stall_since",
        "task",
        "transport",
        "ws",
    )

    def __init__(
        self,
        kind: str,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        compiled: CompiledFilter,
        account: str | None,
        request_id: str,
        cap: int,
    ) -> None:
        self.id = next(_ids)
        self.kind = kind
        self.ws = ws
        self.transport = transport
        self.filter = compiled
        self.account = account
        self.request_id = request_id
        self.opened_at = time.monotonic()
        self.queued = 0  # bytes handed to the transport so far
        self.progress_mark = 0  # bytes known flushed at the last sweep
        self.stall_since: float | None = None
        self.closing = False
        self.cap = cap
        self.hub: Hub | None = None
        self.close_code: int | None = None  # set once: the one Close this socket will get
        self.close_reason: str | None = None
        self.delivered = 0
        self.task: asyncio.Task[Any] | None = None  # the handler, parked in its read loop
        self.reading = False
        self.cancel_sent = False

    def send(self, frame: bytes) -> bool:
        if self.closing:
            return False
        transport = self.transport
        if transport.is_closing():
            self.closing = True
            return False
        # The backlog *before* this frame is what the client failed to take: a frame of any
        # accepted size is written to a socket that kept up (docs/reliability.md).
        if transport.get_write_buffer_size() > self.cap:
            if self.hub is not None:
                self.hub.evict(self, CLOSE_POLICY, SLOW_CONSUMER_REASON)
            return False
        transport.write(frame)
        self.queued += len(frame)
        self.delivered += 1
        return True


@dataclass(slots=True)
class Group:
    """Connections whose filters compiled to the same key: one predicate run serves them all."""

    filter: CompiledFilter
    conns: set[Connection] = field(default_factory=set)

    def send(self, frame: bytes) -> int:
        sent = 0
        for conn in self.conns:
            if conn.send(frame):
                sent += 1
        return sent


class GroupSet:
    """The groups of one account (or of all general subscribers) with their equality index."""

    __slots__ = ("groups", "index")

    def __init__(self, index: GroupIndex[Group]) -> None:
        self.groups: dict[Hashable, Group] = {}
        self.index = index

    def __bool__(self) -> bool:
        return bool(self.groups)

    def add(self, conn: Connection) -> None:
        group = self.groups.get(conn.filter.key)
        if group is None:
            group = self.groups[conn.filter.key] = Group(conn.filter)
            self.index.add(id(group), group, conn.filter.index)
        group.conns.add(conn)

    def remove(self, conn: Connection) -> bool:
        """Remove ``conn``; True when that closed its group."""
        group = self.groups.get(conn.filter.key)
        if group is not None:
            group.conns.discard(conn)
            if not group.conns:
                del self.groups[conn.filter.key]
                self.index.remove(id(group))
                return True
        return False


class Hub:
    def __init__(
        self, bus: Bus, settings: Settings, metrics: Metrics, hooks: Any | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.metrics = metrics
        self.hooks = hooks
        self._face_prefix = settings.channel_prefix + ":"
        self._general_channel = settings.general_channel_name
        self._max_bus_bytes = settings.limits.bus_message_max_bytes
        self._face: dict[str, GroupSet] = {}
        self._general = GroupSet(general_index())
        self.connections: set[Connection] = set()
        self.closed_total = 0  # connections removed since start (the GC policy's churn)
        self._pinned: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._emptied: asyncio.Event | None = None  # set when the last socket leaves at shutdown
        self.shutting_down = False
        # Scanning like/nlike filters summed over distinct live groups: each group runs its
        # own once per event, so this sum (not sockets) is what one event costs the loop.
        self.scanning_likes = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start(self.on_message)
        await self.bus.subscribe(self._general_channel)
        self._sweeper = asyncio.create_task(self._sweep(), name="hub-stall-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.bus.stop()

    async def pin_account(self, account: str) -> None:
        """Keep an account's channel subscribed without sockets (plugins forwarding events)."""
        self._pinned.add(account)
        await self.bus.subscribe(self.face_channel(account))

    def subscribed_channel_count(self) -> int:
        """The general channel plus every account channel held for sockets or pinned."""
        return 1 + len(self._face.keys() | self._pinned)

    def face_channel(self, account: str) -> str:
        return self._face_prefix + account

    @property
    def general_channel(self) -> str:
        return self._general_channel

    # --- registry --------------------------------------------------------------------------

    def _admit_likes(self, conn: Connection, groups: GroupSet | None) -> int:
        """The scanning LIKE filters ``conn`` would add; 503/29012 beyond the service's cap."""
        extra = conn.filter.scanning_likes
        if not extra or (groups is not None and conn.filter.key in groups.groups):
            return 0
        cap = self.settings.limits.like_scanning_max
        if self.scanning_likes + extra > cap:
            raise errors.LunaError(errors.TOO_MANY_LIKE_FILTERS, cap)
        return extra

    async def add(self, conn: Connection) -> None:
        groups = self._face.get(conn.account or "") if conn.kind == "face" else self._general
        self.scanning_likes += self._admit_likes(conn, groups)
        conn.hub = self
        self.connections.add(conn)
        self.metrics.connections[conn.kind].inc()
        if conn.kind == "face":
            assert conn.account is not None
            if groups is None:
                groups = self._face[conn.account] = GroupSet(face_index())
            groups.add(conn)
            # Every socket, not only an account's first: the 101 waits (bounded) until Redis has
            # confirmed the channel, which a second socket may otherwise beat. Cheap when live.
            await self.bus.subscribe(self.face_channel(conn.account))
        else:
            self._general.add(conn)

    async def remove(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.closed_total += 1
        self.metrics.connections[conn.kind].dec()
        if conn.kind == "face":
            assert conn.account is not None
            groups = self._face.get(conn.account)
            if groups is not None and groups.remove(conn):
                self.scanning_likes -= conn.filter.scanning_likes
            if not groups:
                self._face.pop(conn.account, None)
                if conn.account not in self._pinned:
                    await self.bus.unsubscribe(self.face_channel(conn.account))
        elif self._general.remove(conn):
            self.scanning_likes -= conn.filter.scanning_likes
        if self._emptied is not None and not self.connections:
            self._emptied.set()

    # --- fan-out ---------------------------------------------------------------------------

    def on_message(self, channel: str, data: bytes) -> None:
        if channel == self._general_channel:
            self._dispatch(channel, data, "general")
        elif channel.startswith(self._face_prefix):
            self._dispatch(channel, data, "face")

    def _poison(self, kind: str, channel: str, reason: str) -> None:
        self.metrics.poison(kind)
        log.warning("skipped undecodable %s message on channel %s: %s", kind, channel, reason)

    def _dispatch(self, channel: str, data: bytes, kind: str) -> None:
        started = time.perf_counter()
        self.metrics.received[kind].inc()
        if kind == "face":
            groups = self._face.get(channel[len(self._face_prefix) :])
        else:
            groups = self._general
        if not groups:
            if self.hooks is not None:
                self.hooks.event_received(channel, kind, data, 0, 0.0)
            return
        if len(data) > self._max_bus_bytes:
            self._poison(kind, channel, f"{len(data)} bytes exceeds the bus message limit")
            return
        msg: wire.FaceMessage | wire.GeneralMessage
        try:
            if kind == "face":
                msg = wire.decode_face(data)
                sent = self._fan_out_face(msg, groups)
            else:
                msg = wire.decode_general(data)
                sent = self._fan_out_general(msg, groups)
        except wire.PoisonMessage as exc:
            self._poison(kind, channel, str(exc))
            return
        if sent:
            self.metrics.delivered[kind].inc(sent)
            self.metrics.delivered_message(kind, started, msg.create_time)
        if self.hooks is not None:
            self.hooks.event_received(channel, kind, data, sent, time.perf_counter() - started)

    def _fan_out_face(self, msg: wire.FaceMessage, groups: GroupSet) -> int:
        sent = 0
        for event in msg.events:
            subject = (event, msg)
            frame: bytes | None = None
            for group in groups.index.candidates(subject):
                if _safe_match(group.filter.match, subject):
                    if frame is None:
                        frame = text_frame(msg.envelope(event))
                    sent += group.send(frame)
        return sent

    def _fan_out_general(self, msg: wire.GeneralMessage, groups: GroupSet) -> int:
        sent = 0
        frame: bytes | None = None
        for group in groups.index.candidates(msg):
            if _safe_match(group.filter.match, msg):
                if frame is None:
                    frame = text_frame(msg.envelope())
                sent += group.send(frame)
        return sent

    # --- eviction and shutdown -------------------------------------------------------------

    def request_close(self, conn: Connection, code: int, reason: str) -> bool:
        """Ask the socket's own handler to close it: the one path every server close takes.

        The handler is parked in aiohttp's read loop; cancelling it there hands the close to
        :meth:`finish_close` in that task, so aiohttp itself sends the one Close frame and then
        waits for the client's — nothing is written behind aiohttp's back.
        """
        if conn.close_code is not None:
            return False
        conn.close_code = code
        conn.close_reason = reason
        task = conn.task
        # A handler not in its read loop (mid-handshake, or already closing on the client's
        # Close or a protocol error) checks close_code itself or is past needing it.
        if conn.reading and task is not None and not conn.ws.closed:
            conn.cancel_sent = True
            task.cancel()
        return True

    async def finish_close(self, conn: Connection) -> None:
        """Send the requested Close, wait (bounded) for the client's, then close TCP."""
        assert conn.close_code is not None
        message = (conn.close_reason or "").encode()[:123]
        # Frames keep flowing until the Close is written (aiohttp writes it before its first
        # await): an event accepted before the shutdown is not dropped in between.
        conn.closing = True
        try:
            async with asyncio.timeout(self.settings.ws.shutdown_timeout):  # inline, no task
                await conn.ws.close(code=conn.close_code, message=message)
        except Exception:  # a timeout: a client that never answers is cut here
            log.debug(
                "websocket %s: no closing handshake within %.1fs",
                conn.id,
                self.settings.ws.shutdown_timeout,
            )
            conn.transport.abort()

    def evict(self, conn: Connection, code: int, reason: str) -> None:
        """Close a socket that cannot keep up, without waiting on it."""
        if conn.closing or not self.request_close(conn, code, reason):
            return
        conn.closing = True  # a slow consumer's backlog is not added to
        self.metrics.closed("slow_consumer")
        self.metrics.dropped("slow_consumer")
        log.warning("closing websocket %s (%s): %s", conn.id, conn.filter.summary(), reason)

    async def _sweep(self) -> None:
        interval = min(1.0, self.settings.ws.stall_timeout / 4)
        timeout = self.settings.ws.stall_timeout
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.closing:
                    continue
                pending = conn.transport.get_write_buffer_size()
                flushed = conn.queued - pending
                if pending == 0 or flushed > conn.progress_mark:
                    conn.progress_mark = flushed
                    conn.stall_since = None if pending == 0 else now
                elif conn.stall_since is None:
                    conn.stall_since = now
                elif now - conn.stall_since >= timeout:
                    self.evict(conn, CLOSE_POLICY, STALLED_REASON)

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown"
    ) -> None:
        """Send every socket ``code`` and wait (bounded) for the closing handshakes."""
        self.shutting_down = True
        conns = list(self.connections)
        if not conns:
            return
        self._emptied = asyncio.Event()
        for conn in conns:
            self.request_close(conn, code, reason)
        # Each handler bounds its own handshake by ws.shutdown_timeout; the margin covers the
        # bookkeeping after it (unsubscribing), then whatever is left is cut.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), self.settings.ws.shutdown_timeout + 0.5)
        for conn in conns:
            if conn in self.connections:
                conn.transport.abort()


def _safe_match(match: Callable[[Any], bool], subject: Any) -> bool:
    try:
        return match(subject)
    except Exception:  # a filter bug on an odd event must not stop the fan-out
        log.debug("filter raised on an event; treated as no match", exc_info=True)
        return False
