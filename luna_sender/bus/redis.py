"""Redis pub/sub backend: one pub/sub connection per process, however many websockets.

The reader owns the connection and survives anything Redis does to it (restart, ``CLIENT KILL``,
output-buffer eviction, a freeze): on any error it marks itself disconnected (link.py), backs
off (50 ms doubling to ``max_backoff``), opens a fresh connection and resubscribes every wanted
channel. Subscription changes go through one reconciler, and what Redis is subscribed to is
learnt from its own replies (subscriptions.py), so a late or out-of-order confirmation never
leaves a socket deaf. A self-check (PING barrier every ``audit_interval``) repairs any drift
that remains. Publishing never retries a command that may have reached Redis (publishing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from luna_sender.bus import dialect as replies
from luna_sender.bus import publishing
from luna_sender.bus.base import (
    NOT_REACHABLE,
    NOT_SUBSCRIBED,
    BusError,
    BusOptions,
    Cut,
    MessageHandler,
    Repaired,
    log_address,
)
from luna_sender.bus.dialect import CLASSIC, Dialect
from luna_sender.bus.feed import Feed
from luna_sender.bus.link import Link
from luna_sender.bus.presence import Announcer
from luna_sender.bus.publishing import StallGuard, health_ping, publish_once, reason
from luna_sender.bus.subscriptions import KEEPALIVE, Subscriptions

log = logging.getLogger("luna_sender.bus")
# No retries inside redis-py: a retried PUBLISH after a timeout is a duplicate event, and the
# reader below reconnects the pub/sub connection itself (one place, one log line per change).
NO_RETRY = Retry(NoBackoff(), 0)


class RedisBus:
    """``redis://``, ``rediss://``, ``unix://``; the base of the Sentinel and Cluster backends."""

    dialect: ClassVar[Dialect] = CLASSIC
    announces: ClassVar[bool] = True  # a presence channel (presence.py); not in a Cluster

    def __init__(self, url: str, options: BusOptions | None = None, *, client: Any = None) -> None:
        options = options or BusOptions()
        self.url, self._max_backoff = url, options.max_backoff
        self._subscribe_timeout = options.subscribe_timeout
        self._publish_timeout = options.publish_timeout
        self._audit_interval, self._health_grace = options.audit_interval, options.health_grace
        self._on_repair: Repaired | None = None
        self._on_cut: Cut | None = None
        # Any: a Redis, or the Sentinel/Cluster backends' own client (sentinel.py, cluster.py)
        self._client: Any = (
            client
            if client is not None
            else aioredis.from_url(
                url,
                socket_connect_timeout=1.0,
                socket_timeout=2.0,
                health_check_interval=0,
                retry=NO_RETRY,
            )
        )
        self._handler: MessageHandler | None = None
        self.subs = Subscriptions()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pings: deque[tuple[int, asyncio.Future[None] | None, float]] = deque()
        self._write_lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._link = Link(log_address(url), self._max_backoff)
        self._repairing: set[str] = set()
        self._repairs_running: set[asyncio.Task[None]] = set()
        self._publish_guard = StallGuard()
        self._publish_slots = asyncio.Semaphore(publishing.slots(self._client))
        self._health: asyncio.Future[None] | None = None
        self._channel_names = replies.ChannelNames()
        self.announcer = Announcer(self.announces)

    def observe(
        self, *, reconnected: Callable[[], None], repaired: Repaired, cut: Cut | None = None
    ) -> None:
        self._link.on_reconnect = reconnected
        self._on_repair = repaired
        self._on_cut = cut

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def start(self, on_message: MessageHandler) -> None:
        self._handler = on_message
        self._tasks = [
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
            asyncio.create_task(self._reconciler(), name="redis-bus-reconciler"),
            asyncio.create_task(self._auditor(), name="redis-bus-auditor"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop_pubsub()
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # --- protocol --------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> None:
        """PUBLISH once, never blindly retried (publishing.py says when it is undecidable)."""
        async with self._publish_guard(self._publish_slots, self._publish_timeout):
            await self._publish_once(channel, data)

    async def _publish_once(self, channel: str, data: bytes) -> None:
        await publish_once(self._client.connection_pool, channel, data, self._publish_timeout)

    async def subscribe(self, channel: str) -> None:
        self.subs.want(channel)
        if self.subs.live(channel):
            return
        self._dirty.set()
        if self._link.known_down:
            return  # known down: resubscribed on reconnect; waiting would only stall the client
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        with contextlib.suppress(TimeoutError):  # still wanted: the self-check follows it up
            await asyncio.wait_for(fut, self._subscribe_timeout)

    async def unsubscribe(self, channel: str) -> None:
        self.subs.unwant(channel)
        self._dirty.set()

    async def flush(self, timeout: float) -> None:
        """A PING Redis answers after every message queued before it (shutdown: an event accepted
        just before SIGTERM reaches its sockets before the 1001), after the publishes in flight."""
        started = time.monotonic()
        await self._publish_guard.drained(timeout)
        if self._pubsub is None or not self.connected:
            return
        timeout = max(0.1, timeout - (time.monotonic() - started))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await self._ping(fut)
            await asyncio.wait_for(fut, timeout)
        except Exception as exc:  # best effort: shutdown goes on regardless
            log.debug("bus flush incomplete: %s", exc)

    async def check(self) -> None:
        if not self.connected:
            raise BusError(self._link.last_error or "pub/sub connection is down", NOT_REACHABLE)
        stale = self.subs.not_live_for(self._health_grace)
        if stale:
            raise BusError(
                f"{len(stale)} wanted channel(s) not confirmed by Redis for over "
                f"{self._health_grace} s: {', '.join(stale[:5])}",
                NOT_SUBSCRIBED,
            )
        if self._pings and (late := time.monotonic() - self._pings[0][2]) > self._health_grace:
            raise BusError(f"no answer on the pub/sub connection for {late:.0f} s", NOT_REACHABLE)
        # One PING answers every check in flight: 110 concurrent checks took 110 connections.
        if self._health is None or self._health.done():
            self._health = asyncio.ensure_future(self._health_probe())
            self._health.add_done_callback(lambda task: task.cancelled() or task.exception())
        await asyncio.shield(self._health)

    def _health_probe(self) -> Awaitable[None]:  # the publishes' pool; Cluster: the nodes read
        return health_ping(self._client)

    # --- internals -------------------------------------------------------------------------

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self.announcer.lost()
        self._forget_connection()
        if pubsub is not None:
            connection = getattr(pubsub, "connection", None)
            if connection is not None:  # it goes back to the pool: other users are not ours
                connection.deregister_connect_callback(self._on_silent_reconnect)
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py

    def _forget_connection(self) -> None:
        """A new connection answers nothing that was sent on the old one."""
        self.subs.reset()
        for _seq, fut, _at in self._pings:
            if fut is not None and not fut.done():  # flush's wait: an error, not a cancel that
                fut.set_exception(BusError("the connection was lost"))  # escaped a SIGTERM stop
        self._pings.clear()

    def _subscriber(self) -> Any:
        """The client the pub/sub connection is opened from; Cluster rotates nodes here."""
        return self._client

    async def _send(self, pubsub: PubSub, subscribe: bool, channels: set[str]) -> None:
        """Write one SUBSCRIBE/UNSUBSCRIBE; the lock keeps bookkeeping order = wire order."""
        command = self.dialect.subscribe if subscribe else self.dialect.unsubscribe
        async with self._write_lock:
            self.subs.sent(subscribe, channels)
            await getattr(pubsub, command)(*channels)

    async def _ping(self, fut: asyncio.Future[None] | None) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise BusError("no pub/sub connection")
        async with self._write_lock:
            self._pings.append((self.subs.barrier(), fut, time.monotonic()))
            await pubsub.ping()

    async def _connect(self) -> PubSub:
        pubsub: PubSub = self._subscriber().pubsub()
        self.subs.reset()
        # Always hold at least one subscription so the connection exists and can be read.
        await self._send(pubsub, True, self.subs.wanted | {KEEPALIVE})
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            # redis-py may reconnect a pub/sub connection by itself while writing; it then
            # resubscribes from its own records, which the bookkeeping must not trust.
            connection.register_connect_callback(self._on_silent_reconnect)
        self.announcer.renew(same_connection=False)  # named before the first message is read
        await self.announcer.send(pubsub, self._write_lock)
        return pubsub

    def _on_silent_reconnect(self, connection: Any) -> None:
        if self._pubsub is None or getattr(self._pubsub, "connection", None) is not connection:
            return  # the first connect of _connect, or no longer the pub/sub connection
        self._forget_connection()
        self.announcer.renew(same_connection=False)
        self._dirty.set()
        self._link.reopened_by_client()

    async def _reader(self) -> None:
        backoff, failures = 0.05, 0
        self._link.connecting()
        while not self._stopping:
            try:
                pubsub = await self._connect()
                self._pubsub = pubsub
                self._link.up(failures)
                self._dirty.set()
                backoff, failures = 0.05, 0
                await self._read_loop(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._link.lost(reason(exc), failures)
                await self._drop_pubsub()
                if failures > 1:  # the first retry is immediate: most drops are one-offs
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)

    async def _next_message(self, pubsub: PubSub) -> dict[str, Any] | None:
        return await pubsub.get_message(timeout=None)  # type: ignore[no-any-return]

    async def _read_loop(self, pubsub: PubSub) -> None:
        """Messages straight from the transport through hiredis (feed.py): redis-py's path cost
        ~15 us per message, and its stream a task step per wake-up. Other replies still take
        redis-py's steps (dialect.py), as does any read without hiredis."""
        handler = self._handler
        assert handler is not None
        feed: Feed | None = None
        try:
            while True:
                try:
                    if feed is None and (parser := replies.hiredis_parser(pubsub)) is not None:
                        kinds, names = self.dialect.message, self._channel_names
                        feed = Feed.attach(pubsub.connection, parser, kinds, names, handler)
                    if feed is not None:
                        msg = await replies.finish_reply(pubsub, await feed.next_reply())
                    else:
                        msg = await self._next_message(pubsub)
                    if msg is not None:
                        self._on_reply(msg, handler)
                except ResponseError as exc:
                    # An error reply (e.g. NOPERM for one channel) answers a whole command; the
                    # connection is fine. The self-check re-subscribes channel by channel.
                    log.warning("bus subscription command refused: %s", exc)
        finally:
            if feed is not None:
                feed.detach()

    def _on_reply(self, msg: dict[str, Any], handler: MessageHandler) -> None:
        kind = msg["type"]
        if kind in self.dialect.message:
            channel = self._channel_names[msg["channel"]]
            try:
                handler(channel, msg["data"])
            except Exception:  # a hub bug must not take the subscription down
                log.exception("event dispatch failed on channel %s", channel)
        elif kind in ("pong", b"pong"):
            self._pong()
        elif kind in self.dialect.subscribed or kind in self.dialect.unsubscribed:
            channel = self._channel_names[msg["channel"]]
            if self.subs.replied(kind in self.dialect.subscribed, channel):
                self._repairing.discard(channel)
                for fut in self._waiters.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)

    async def _stalled(self, seconds: float) -> None:
        """The oldest PING is unanswered after ``seconds``: the Cluster backends act on it."""

    def _diff(self) -> tuple[set[str], set[str]]:  # the sharded bus holds lost shards' back
        return self.subs.diff()

    def _pong(self) -> None:
        if not self._pings:
            return
        barrier, fut, _at = self._pings.popleft()
        missing, extra = self.subs.audit(barrier)
        if missing or extra:
            task = asyncio.get_running_loop().create_task(self._repair(missing, extra))
            self._repairs_running.add(task)  # held: the loop keeps only weak references
            task.add_done_callback(self._repairs_running.discard)
        elif self._diff() != (set(), set()):
            self._dirty.set()
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _repair(self, missing: set[str], extra: set[str]) -> None:
        """Redis disagrees with what was requested, every reply being in: ask again."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        fresh = (missing | extra) - self._repairing
        self._repairing |= missing
        if missing:  # something went unheard: the current presence name must not vouch
            self.announcer.renew(same_connection=True)
            self._dirty.set()
        if self._on_repair:
            self._on_repair(len(missing), len(extra))
        if (cut := (missing & fresh) - {KEEPALIVE}) and self._on_cut is not None:
            self._on_cut(frozenset(cut), False)  # once each, before it is asked again
        (log.warning if fresh else log.debug)(
            "bus subscription drift repaired: %d channel(s) not confirmed, %d not released",
            len(missing),
            len(extra),
            extra={
                "bus_state": "repair",
                "missing": sorted(missing)[:10],
                "extra": sorted(extra)[:10],
            },
        )
        try:
            # One command per channel: an error reply (NOPERM) then spoils only its own.
            for channel in sorted(missing):
                await self._send(pubsub, True, {channel})
            for channel in sorted(extra):
                await self._send(pubsub, False, {channel})
        except Exception as exc:  # the reader notices the broken connection and reconnects
            log.debug("subscription repair failed: %s", exc)

    async def _auditor(self) -> None:
        while True:
            await asyncio.sleep(self._audit_interval)
            if self._pings:  # unanswered: a stall, no need to pile more PINGs on it
                await self._stalled(time.monotonic() - self._pings[0][2])
            if self._pubsub is None or not self.connected or self._pings:
                continue
            with contextlib.suppress(Exception):
                await self._ping(None)

    async def _reconciler(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            pubsub = self._pubsub
            if pubsub is None or not self.connected:
                continue
            add, remove = self._diff()
            try:
                if self.announcer.due:  # after a new connection's first subscriptions
                    await self.announcer.send(pubsub, self._write_lock)
                if add:
                    await self._send(pubsub, True, add)
                if remove:
                    await self._send(pubsub, False, remove)
            except Exception as exc:  # the reader notices the broken connection and reconnects
                log.debug("subscription change failed: %s", exc)
