"""Redis pub/sub backend: one pub/sub connection per process, however many websockets.

The reader owns the connection and survives anything Redis does to it (restart, ``CLIENT KILL``,
output-buffer eviction): on any error it marks itself disconnected, backs off (50 ms doubling to
``max_backoff``), opens a fresh connection and resubscribes every wanted channel. Subscription
changes go through one reconciler so SUBSCRIBE/UNSUBSCRIBE never race each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError

from .base import BusError, MessageHandler

log = logging.getLogger("luna_sender.bus")
NOT_CONNECTED_YET = "not connected yet"


class RedisBus:
    # Pub/sub flavour: classic SUBSCRIBE here; the sharded Cluster backend swaps these names.
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    MESSAGE_TYPES: tuple[str | bytes, ...] = ("message", b"message")
    SUBSCRIBED_TYPES: tuple[str | bytes, ...] = ("subscribe", b"subscribe")
    def __init__(
        self,
        url: str,
        *,
        max_backoff: float = 1.0,
        subscribe_timeout: float = 2.0,
        on_reconnect: Callable[[], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        client: Any | None = None,
    ) -> None:
        self.url = url
        self._max_backoff = max_backoff
        self._subscribe_timeout = subscribe_timeout
        self._on_reconnect = on_reconnect
        self._on_disconnect = on_disconnect
        # Sentinel and Cluster backends pass their own client (see sentinel.py, cluster.py).
        # After a Redis restart the pool still holds dead connections: retry a command once on
        # a fresh one (connection errors only, so a slow PUBLISH is never sent twice).
        self._client: Any = client if client is not None else aioredis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=0,
            retry=Retry(NoBackoff(), 2), retry_on_error=[ConnectionError],
        )
        self._handler: MessageHandler | None = None
        self._wanted: set[str] = set()
        self._actual: set[str] = set()
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pong_waiters: list[asyncio.Future[None]] = []
        self._pubsub: PubSub | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.connected = False
        self._ever_connected = False
        self.last_error: str | None = NOT_CONNECTED_YET
        self.reconnects = 0
        self.disconnected_since: float | None = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, on_message: MessageHandler) -> None:
        self._handler = on_message
        self._tasks = [
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
            asyncio.create_task(self._reconciler(), name="redis-bus-reconciler"),
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
        try:
            await self._client.publish(channel, data)
        except Exception as exc:  # redis-py raises many types for one cause: Redis unreachable
            raise BusError(f"{type(exc).__name__}: {exc}") from exc

    async def subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        if channel in self._confirmed:
            return
        self._dirty.set()
        if not self.connected and self.last_error != NOT_CONNECTED_YET:
            return  # known down: resubscribed on reconnect; waiting would only stall the client
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fut, self._subscribe_timeout)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._dirty.set()

    async def flush(self, timeout: float) -> None:
        """PING on the pub/sub connection: Redis answers after every message queued before it.

        Used on shutdown so an event accepted by a publish route just before SIGTERM is written
        to its sockets before they get the 1001 close.
        """
        pubsub = self._pubsub
        if pubsub is None or not self.connected:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong_waiters.append(fut)
        try:
            await pubsub.ping()
            await asyncio.wait_for(fut, timeout)
        except Exception as exc:  # best effort: shutdown goes on regardless
            log.debug("bus flush incomplete: %s", exc)

    async def check(self) -> None:
        if not self.connected:
            raise BusError(self.last_error or "pub/sub connection is down")
        try:
            await asyncio.wait_for(self._client.ping(), 1.0)
        except Exception as exc:
            raise BusError(f"{type(exc).__name__}: {exc}") from exc

    # --- internals -------------------------------------------------------------------------

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._actual.clear()
        self._confirmed.clear()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _subscriber(self) -> Any:
        """The client the pub/sub connection is opened from; Cluster rotates nodes here."""
        return self._client

    async def _connect(self) -> PubSub:
        pubsub = self._subscriber().pubsub()
        # Always hold at least one subscription so the connection exists and can be read.
        wanted = set(self._wanted) or {"__luna_sender_keepalive__"}
        await getattr(pubsub, self.SUBSCRIBE)(*wanted)
        self._actual = set(wanted)
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            # redis-py may reconnect and resubscribe a pub/sub connection by itself (e.g. after
            # CLIENT KILL); count those too, they are outages our loop never sees.
            connection.register_connect_callback(self._on_silent_reconnect)
        return pubsub

    def _on_silent_reconnect(self, _connection: Any) -> None:
        self.reconnects += 1
        log.warning("redis pub/sub connection re-established by the client")
        if self._on_reconnect:
            self._on_reconnect()

    async def _reader(self) -> None:
        backoff = 0.05
        while not self._stopping:
            try:
                pubsub = await self._connect()
                self._pubsub = pubsub
                if self._ever_connected and self._on_reconnect:
                    self._on_reconnect()
                self._ever_connected = True
                self.connected = True
                self.disconnected_since = None
                self.last_error = None
                backoff = 0.05
                self._dirty.set()
                await self._read_loop(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.connected:
                    log.warning("redis pub/sub connection lost (%s); reconnecting", reason)
                    self.reconnects += 1
                    if self._on_disconnect:
                        self._on_disconnect(reason)
                self.connected = False
                self.last_error = reason
                if self.disconnected_since is None:
                    self.disconnected_since = time.monotonic()
                await self._drop_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _next_message(self, pubsub: Any) -> dict[str, Any] | None:
        return await pubsub.get_message(timeout=None)

    async def _read_loop(self, pubsub: PubSub) -> None:
        handler = self._handler
        assert handler is not None
        while True:
            msg: dict[str, Any] | None = await self._next_message(pubsub)
            if msg is None:
                continue
            kind = msg["type"]
            if kind in self.MESSAGE_TYPES:
                channel = msg["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode("utf-8", "replace")
                try:
                    handler(channel, msg["data"])
                except Exception:  # a hub bug must not take the subscription down
                    log.exception("event dispatch failed on channel %s", channel)
            elif kind in ("pong", b"pong"):
                waiters, self._pong_waiters = self._pong_waiters, []
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
            elif kind in self.SUBSCRIBED_TYPES:
                channel = msg["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode("utf-8", "replace")
                self._confirmed.add(channel)
                for fut in self._waiters.pop(channel, []):
                    if not fut.done():
                        fut.set_result(None)

    async def _reconciler(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            pubsub = self._pubsub
            if pubsub is None or not self.connected:
                continue
            add = self._wanted - self._actual
            remove = self._actual - self._wanted - {"__luna_sender_keepalive__"}
            if not self._wanted and not self._actual:
                continue
            try:
                if add:
                    self._actual |= add
                    await getattr(pubsub, self.SUBSCRIBE)(*add)
                if remove and (self._actual - remove):
                    self._actual -= remove
                    self._confirmed -= remove
                    await getattr(pubsub, self.UNSUBSCRIBE)(*remove)
            except Exception as exc:  # the reader notices the broken connection and reconnects
                log.debug("subscription change failed: %s", exc)
