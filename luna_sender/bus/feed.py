"""The pub/sub connection's bytes, taken from the transport: each message reaches the hub inside
the data callback that brought it.

Why: on the platform's load a process wake-up costs more than the event it brings (a do-nothing
subscriber pays ~50 us of CPU per wake-up on the benchmark machine, docs/performance.md), and
reading through redis-py's StreamReader added a buffer copy, a future and a task step to every
wake-up before the first message reached the hub. Here the bytes go from the transport to the
connection's own hiredis reader, and each message to the handler, in one callback.

Every other reply (subscribe confirmations, pongs, errors, push notifications) keeps its order in
a queue that the bus reader task finishes with redis-py's steps (``dialect.finish_reply``), so the
subscription bookkeeping is what it was. Messages do not wait for that queue: a message never
depends on a confirmation (the hub holds its sockets before it subscribes).

The stream protocol redis-py's writer waits on still gets every connection event (pause and
resume writing, EOF, connection lost), so redis-py sees the connection as before; only the bytes
are taken. :meth:`Feed.detach` hands the bytes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from luna_sender.bus.base import MessageHandler
from luna_sender.bus.dialect import NOT_ENOUGH_DATA, ChannelNames

log = logging.getLogger("luna_sender.bus")
CLOSED = "Connection closed by server."  # redis-py's words for the same event


class Feed(asyncio.Protocol):
    """Stands in for a redis-py connection's StreamReaderProtocol while the bus reads."""

    def __init__(
        self,
        reader: Any,
        transport: asyncio.Transport,
        inner: asyncio.StreamReaderProtocol,
        kinds: tuple[str | bytes, ...],
        names: ChannelNames,
        handler: MessageHandler,
    ) -> None:
        self._reader = reader  # hiredis.Reader, the connection parser's own
        self._transport = transport
        self._inner = inner
        self._kinds = kinds
        self._names = names
        self._handler = handler
        self._others: deque[Any] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    @classmethod
    def attach(
        cls,
        connection: Any,
        parser: Any,
        kinds: tuple[str | bytes, ...],
        names: ChannelNames,
        handler: MessageHandler,
    ) -> Feed | None:
        """Take over a connected redis-py connection's reads; None where its shape is not the
        one this knows (redis-py then keeps reading, through ``get_message``)."""
        writer = getattr(connection, "_writer", None)
        stream = getattr(connection, "_reader", None)
        transport = getattr(writer, "transport", None)
        if transport is None or transport.is_closing() or stream is None:
            return None
        inner = transport.get_protocol()
        buffered = getattr(stream, "_buffer", None)
        if not isinstance(inner, asyncio.StreamReaderProtocol) or buffered is None:
            return None
        feed = cls(parser._reader, transport, inner, kinds, names, handler)
        # Bytes the stream already holds came first: they go to hiredis before any new ones.
        if buffered:
            parser._reader.feed(bytes(buffered))
            buffered.clear()
        transport.set_protocol(feed)
        if getattr(stream, "_paused", False):  # the stream had stopped reading at its limit
            stream._paused = False
            transport.resume_reading()
        feed._take()
        return feed

    def detach(self) -> None:
        """Give the bytes back to redis-py's stream (the reader is leaving this connection)."""
        if self._transport.get_protocol() is self and not self._transport.is_closing():
            self._transport.set_protocol(self._inner)

    async def next_reply(self) -> Any:
        """The next reply that is not a message, in order; raises once the connection is gone."""
        while not self._others:
            if self._error is not None:
                raise self._error
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        return self._others.popleft()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        self._take()

    def eof_received(self) -> bool | None:
        self._fail(RedisConnectionError(CLOSED))
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"Error while reading from the bus: {exc}" if exc is not None else CLOSED
        self._fail(RedisConnectionError(reason))
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # --- internals ---------------------------------------------------------------------------

    def _take(self) -> None:
        reader, kinds, names, handler = self._reader, self._kinds, self._names, self._handler
        while True:
            try:
                reply = reader.gets()
            except Exception as exc:  # a protocol error: nothing after it can be trusted
                self._fail(RedisConnectionError(f"Protocol error from the bus: {exc}"))
                self._transport.abort()
                return
            if reply is NOT_ENOUGH_DATA or reply is False:
                return
            # isinstance: hiredis >= 3.2 returns a message as a PushNotification (a list)
            if isinstance(reply, list) and len(reply) == 3 and reply[0] in kinds:
                channel = names[reply[1]]
                try:
                    handler(channel, reply[2])
                except Exception:  # a hub bug must not take the subscription down
                    log.exception("event dispatch failed on channel %s", channel)
                continue
            self._others.append(reply)
            self._notify()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._notify()

    def _notify(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
