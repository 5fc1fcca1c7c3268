"""Live connections, indexed for matching, and the fan-out.

Data flows one way: bus -> :meth:`Hub.on_message` -> filters -> socket. Each message is decoded
once; sockets with identical filters share a :class:`Group`, so a predicate runs once per distinct
filter; an envelope is built and framed once, only when something matches, and one loop turn's
frames go to a socket as one write. Decoding and matching: :mod:`.matching` (shared with the
forwarder plugin); writes, backpressure, close: :mod:`.connection`. See docs/reliability.md."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol

from luna_sender import wire
from luna_sender.bus import presence
from luna_sender.delivery import matching
from luna_sender.delivery.connection import CLOSE_GOING_AWAY, CLOSE_RESUME, Connection
from luna_sender.delivery.frames import text_frame
from luna_sender.delivery.groups import Batch, Budgets, GroupSet, face_index, general_index
from luna_sender.delivery.recorder import POISON, Recorder
from luna_sender.delivery.recovery import Tally
from luna_sender.delivery.rendering import write_recorded
from luna_sender.delivery.sweep import Sweep
from luna_sender.runtime.clock import wait_running
from luna_sender.runtime.sockets import reset

if TYPE_CHECKING:
    from luna_sender.bus import Bus
    from luna_sender.bus.history import History, Offset
    from luna_sender.config import Settings
    from luna_sender.runtime.metrics import Metrics

log = logging.getLogger("luna_sender.hub")
# Bus bytes joined into one write per socket at most: about what a socket's send buffer
# (ws.socket_send_buffer) takes in one call; a longer join saves no syscall, only delays.
BATCH_BYTES = 256 * 1024
INTERRUPTED_REASON = "event stream interrupted: resume with since"
MARK_WAIT = 2.0  # at most this long between an interruption and its sockets' Close


class HubHooks(Protocol):
    """What the hub reports to the plugin host (plugins/host.py's ``PluginManager``), once per
    bus message on the delivery path: it must only enqueue."""

    def event_received(
        self, channel: str, kind: str, data: bytes, delivered: int, transport_time: float
    ) -> None: ...


class Hub:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        metrics: Metrics,
        hooks: HubHooks | None = None,
        history: History | None = None,
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
        self.budgets = Budgets(settings.limits)
        # Recovering sockets (#18) live in groups of their own, fed by the recorder's pipes
        # once their event's offset is known; the plain groups above never wait for it.
        self._face_rec: dict[str, GroupSet] = {}
        self._general_rec = GroupSet(general_index())
        h = settings.history
        self.recorder = Recorder(history, h.ttl, self._deliver_recovering, metrics, h.dedupe)
        self._recorded = self.recorder.channels
        self._tail = self.recorder.tail
        # Bus messages of the current loop turn, fanned out together by _drain.
        self._inbox: list[tuple[str, bytes, str, float, Tally | None]] = []
        self._holding: set[Connection] = set()  # recovering sockets whose Close waits (interrupted)
        self._closers: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # Bound once: asyncio.get_running_loop() makes a getpid() syscall on every call
        self._call_soon = asyncio.get_running_loop().call_soon
        await self.bus.start(self.on_message)
        await self.bus.subscribe(self._general_channel)
        self._sweeper = asyncio.create_task(Sweep(self).run(), name="hub-stall-sweeper")

    async def stop(self) -> None:
        for task in [self._sweeper, *self._closers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.bus.stop()
        await self.recorder.close()

    async def pin_account(self, account: str) -> None:
        """Keep an account's channel subscribed without sockets (plugins forwarding events)."""
        self._pinned.add(account)
        await self.bus.subscribe(self.face_channel(account))

    def subscribed_channel_count(self) -> int:
        """The general channel plus every account channel held for sockets or pinned."""
        cut = len(self._face_prefix)
        recorded = {c[cut:] for c in self._recorded if c != self._general_channel}
        return 1 + len(self._face.keys() | self._pinned | self._face_rec.keys() | recorded)

    def face_channel(self, account: str) -> str:
        return self._face_prefix + account

    @property
    def general_channel(self) -> str:
        return self._general_channel

    # --- registry --------------------------------------------------------------------------

    def _sets(self, conn: Connection) -> tuple[dict[str, GroupSet], GroupSet]:
        if conn.recover:
            return self._face_rec, self._general_rec
        return self._face, self._general

    def channel_of(self, conn: Connection) -> str:
        return (
            self.face_channel(conn.account or "") if conn.kind == "face" else self._general_channel
        )

    def held(self, account: str) -> bool:
        """Whether an account's channel must stay subscribed (sockets, plugins, recording)."""
        channel = self.face_channel(account)
        return (
            account in self._face
            or account in self._face_rec
            or account in self._pinned
            or self.recorder.lingering(channel)
        )

    async def add(self, conn: Connection) -> None:
        faces, general = self._sets(conn)
        groups = faces.get(conn.account or "") if conn.kind == "face" else general
        self.budgets.admit(conn.filter, groups is None or conn.filter.key not in groups.groups)
        conn.hub = self
        self.connections.add(conn)
        self.metrics.connections[conn.kind].inc()
        if conn.kind == "face":
            assert conn.account is not None
            new = conn.recover and not self.held(conn.account)  # a new subscription below
            if groups is None:
                groups = faces[conn.account] = GroupSet(face_index())
            groups.add(conn)
            if conn.recover:
                self.recorder.joined(self.face_channel(conn.account), new)
            # Every socket, not only an account's first: the 101 waits (bounded) until Redis has
            # confirmed the channel, which a second socket may otherwise beat. Cheap when live.
            await self.bus.subscribe(self.face_channel(conn.account))
        else:
            general.add(conn)
            if conn.recover:
                self.recorder.joined(self._general_channel)

    async def resume(self, conn: Connection) -> None:
        """A ``since`` socket, once its 101 is sent: recovery frame, replay, held events."""
        await self.recorder.resume(conn, self.channel_of(conn), conn.kind)

    async def remove(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self._holding.discard(conn)
        self.closed_total += 1
        self.metrics.connections[conn.kind].dec()
        faces, general = self._sets(conn)
        if conn.recover:
            self.recorder.left(self.channel_of(conn))
        if conn.kind == "face":
            assert conn.account is not None
            groups = faces.get(conn.account)
            self.budgets.release(conn.filter, groups is not None and groups.remove(conn))
            if not groups:
                faces.pop(conn.account, None)
                if not self.held(conn.account):
                    await self.bus.unsubscribe(self.face_channel(conn.account))
        else:
            self.budgets.release(conn.filter, general.remove(conn))
        if self._emptied is not None and not self.connections:
            self._emptied.set()

    # --- fan-out ---------------------------------------------------------------------------

    def on_message(self, channel: str, data: bytes) -> None:
        if channel == self._general_channel:
            kind = "general"
        elif channel.startswith(self._face_prefix):
            kind = "face"
        else:  # else only a presence channel's fences are read (bus/fences.py)
            return self.recorder.on_presence(data) if channel.startswith(presence.PREFIX) else None
        # Fanned out at the end of the loop turn with every message of the same turn (the bus
        # reader hands all it has buffered at once): see _drain. Recorded at once, so appends
        # keep receive order ahead of any later ``since``; plain sockets pay one look-up.
        started = time.perf_counter()
        tally = Tally() if channel in self._recorded else None
        inbox = self._inbox
        inbox.append((channel, data, kind, started, tally))
        if len(inbox) == 1:
            self._call_soon(self._drain)
        if tally is not None:
            if len(data) <= self._max_bus_bytes:
                self.recorder.record(channel, kind, data, tally, started)
            elif not self._plain(channel, kind):  # else the plain path reports it
                self._poison(kind, channel, f"{len(data)} bytes exceeds the bus message limit")
        elif self._tail is not None:
            self._tail.add(started, channel, data)  # in case a resume starts recording it

    def _counted(self, channel: str, kind: str, data: bytes, started: float, sent: int) -> None:
        """The plugins' one notice per bus message; a recorded one's comes from whichever of
        its two fan-outs (plain, recovering) finishes second, with both counts."""
        if self.hooks is not None:
            self.hooks.event_received(channel, kind, data, sent, time.perf_counter() - started)

    def _plain(self, channel: str, kind: str) -> bool:
        if kind == "face":
            return bool(self._face.get(channel[len(self._face_prefix) :]))
        return bool(self._general)

    def _deliver_recovering(
        self,
        channel: str,
        kind: str,
        data: bytes,
        offset: Offset | None,
        tally: Tally,
        started: float,
        stale: bool,
    ) -> None:
        """A recorded message to its recovering sockets, counted with its plain deliveries."""
        if kind == "face":
            groups = self._face_rec.get(channel[len(self._face_prefix) :])
        else:
            groups = self._general_rec
        if not groups:
            if tally.recovering(0, None):
                self._counted(channel, kind, data, started, tally.total())
            return
        try:
            sent, create_time = write_recorded(groups, kind, data, offset, stale)
        except wire.PoisonMessage as exc:
            if not self._plain(channel, kind):  # else the plain path reported it
                self._poison(kind, channel, str(exc))
            return
        if sent:
            self.metrics.delivered[kind].inc(sent)
            if tally.plain == 0:  # one latency observation per message: the first write's
                self.metrics.delivered_message(kind, started, create_time)
        if tally.recovering(sent, create_time):
            self._counted(channel, kind, data, started, tally.total())

    def _poison(self, kind: str, channel: str, reason: str) -> None:
        self.metrics.poison(kind)
        log.warning("skipped undecodable %s message on channel %s: %s", kind, channel, reason)

    def _drain(self) -> None:
        """Fan out one loop turn's messages: each group gets its frames in message order as
        one write per socket. Under load several events arrive per turn, and one write of k
        frames costs one syscall and one client wake-up instead of k; a lone event is written
        as before. Per socket the order is the bus order (a socket is in one group)."""
        inbox, self._inbox = self._inbox, []
        batch, done, size = Batch(), [], 0
        for channel, data, kind, started, tally in inbox:
            spans: list[tuple[int, int]] = []
            create_time = self._dispatch(channel, data, kind, batch, spans)
            if create_time is not POISON:
                done.append((channel, data, kind, started, create_time, spans, tally))
            size += len(data)
            if size >= BATCH_BYTES:  # a long backlog goes out in slices, the first one early
                self._send(batch, done)
                batch, done, size = Batch(), [], 0
        self._send(batch, done)

    def _send(self, batch: Batch, done: list[Any]) -> None:
        counts = batch.send()
        metrics = self.metrics
        for channel, data, kind, started, create_time, spans, tally in done:
            sent = 0
            for key, i in spans:
                sent += counts[key][i]
            if sent:
                metrics.delivered[kind].inc(sent)
                metrics.delivered_message(kind, started, create_time)
            elif tally is not None and tally.rec:  # only recovering sockets took it, first
                metrics.delivered_message(kind, started, tally.create_time)
            if tally is None:
                self._counted(channel, kind, data, started, sent)
            elif tally.plain_done(sent):
                self._counted(channel, kind, data, started, tally.total())

    def _dispatch(self, channel: str, data: bytes, kind: str, batch: Batch, spans: Any) -> object:
        """Match one message and queue its frames in ``batch``, noting in ``spans`` where they
        went; returns the producer's create time, or :data:`POISON` (reported here)."""
        self.metrics.received[kind].inc()
        if kind == "face":
            groups = self._face.get(channel[len(self._face_prefix) :])
        else:
            groups = self._general
        if not groups:
            return None
        if len(data) > self._max_bus_bytes:
            self._poison(kind, channel, f"{len(data)} bytes exceeds the bus message limit")
            return POISON
        try:
            # A recorded channel is read again by the recorder and replays: orjson's fixed
            # bounds for all of its reads (wire.decode_face)
            reads = groups.reads if channel not in self._recorded else wire.READS_ALL
            msg = matching.decode(kind, data, reads)
            for envelope, matched in matching.select(msg, groups.index.candidates, reads):
                frame = text_frame(envelope)
                for group in matched:
                    spans.append(batch.add(group, frame))
        except wire.PoisonMessage as exc:
            # Frames of the message's earlier events still go out, as they did when written
            # on the spot; the message is reported once, as poison.
            spans.clear()
            self._poison(kind, channel, str(exc))
            return POISON
        return msg.create_time

    # --- eviction and shutdown -------------------------------------------------------------

    def evict(self, conn: Connection, code: int, reason: str) -> None:
        """Close a socket that cannot keep up, without waiting on it."""
        if conn.closing or not conn.request_close(code, reason):
            return
        conn.closing = True  # a slow consumer's backlog is not added to
        self.metrics.closed("slow_consumer")
        self.metrics.dropped("slow_consumer")
        log.warning("closing websocket %s (%s): %s", conn.id, conn.filter.summary(), reason)

    def interrupted(self, channels: Collection[str] | None = None) -> None:
        """The bus subscription was cut (for ``channels`` only, when given: one Cluster shard)
        and is back: what was published meanwhile reached no one here, so the recorder owes gap
        markers, and every open recovering socket is closed before a live event from after them
        reaches it. Left open, its newest offset would lie past the gap and a later resume from
        it would answer ``recovered: true`` over the loss (an outside pass: ~3 events per account
        per Redis restart); closed, its client resumes from an offset before the markers and is
        told ``false``. The Close waits (bounded) until the markers are written: the client may
        resume on another instance. Plain sockets stay open."""
        marked = self.recorder.interrupted(channels)
        cut = [c for c in self.connections if c.recover]
        if channels is not None:
            cut = [c for c in cut if self.channel_of(c) in channels]
        held = [c for c in cut if c.request_close(CLOSE_RESUME, INTERRUPTED_REASON, hold=True)]
        self._holding.update(held)
        task = asyncio.get_running_loop().create_task(self._close_interrupted(held, marked))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close_interrupted(self, held: list[Connection], marked: list[Any]) -> None:
        if marked:
            with contextlib.suppress(TimeoutError):  # Redis gone again: its reads fail too
                async with asyncio.timeout(MARK_WAIT):
                    await asyncio.wait(marked)
        for conn in held:
            if conn in self._holding:
                self._holding.discard(conn)
                conn.send_close()
                self.metrics.closed("bus_interrupted")

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
            if conn in self._holding:  # its Close was waiting for gap markers: now
                self._holding.discard(conn)
                conn.send_close()
            else:
                conn.request_close(code, reason)
        # Each handler bounds its own handshake by ws.shutdown_timeout; the margin covers the
        # bookkeeping after it (unsubscribing), then whatever is left is cut. In running time:
        # a stall of this process is not the clients' (runtime/clock.py).
        await wait_running(self._emptied, self.settings.ws.shutdown_timeout + 0.5)
        for conn in conns:
            if conn in self.connections:
                reset(conn.transport, "ws_stopping")
