"""One subscriber socket as the fan-out sees it: a transport to write prebuilt frames to, the
progress it makes, and the one Close the server may send it.

Backpressure: a socket's outgoing queue *is* its transport write buffer. A frame that finds more
than ``ws.queue_max_bytes`` still unsent (the cap is at least the largest accepted message, so a
reader that keeps up never hits it), or a buffer that makes no progress for ``ws.stall_timeout``
seconds, evicts that socket with close code 1008 — it never slows the others.
See docs/reliability.md.

Every server close takes one path: :meth:`Connection.request_close` records the code and cancels
the handler parked in aiohttp's read loop; the handler then calls :meth:`Connection.finish_close`,
so aiohttp itself sends the one Close frame and waits for the client's — nothing is written
behind aiohttp's back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from luna_sender.filters.base import CompiledFilter
from luna_sender.runtime.sockets import reset, stirred

if TYPE_CHECKING:
    from luna_sender.delivery.recovery import Seam

# The hub's logger: a connection's close is part of the fan-out's story in the logs.
log = logging.getLogger("luna_sender.hub")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_RESUME = 1012  # Service Restart: reconnect now (with since, for a recovering socket)
SLOW_CONSUMER_REASON = "slow consumer: outgoing queue overflow"
STALLED_REASON = "slow consumer: no progress"
_ids = itertools.count(1)


class Socket(Protocol):
    """The socket a connection closes (web/wsproto.SocketProtocol): what the close path uses."""

    @property
    def closed(self) -> bool: ...

    def cancel(self, msg: Any = None) -> bool: ...

    async def close(self, *, code: int, message: bytes = b"") -> bool: ...


class _Gone:
    """The socket of a connection that has ended: closed, and nothing to cancel or close."""

    __slots__ = ()
    closed = True

    def cancel(self, msg: Any = None) -> bool:
        return False

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        return False


GONE: Socket = _Gone()


class Evictor(Protocol):
    """Whoever holds the connection and decides what an overflow costs (the hub)."""

    def evict(self, conn: Connection, code: int, reason: str) -> None: ...


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
        "handler",
        "hub",
        "id",
        "kind",
        "opened_at",
        "progress_mark",
        "queued",
        "reading",
        "recover",
        "request_id",
        "seam",
        "stall_since",
        "transport",
        "ws",
    )

    def __init__(
        self,
        kind: str,
        ws: Socket,
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
        self.hub: Evictor | None = None
        self.close_code: int | None = None  # set once: the one Close this socket will get
        self.close_reason: str | None = None
        self.delivered = 0
        # The socket's reader, once the 101 is written: what request_close "cancels" to hand
        # the close to it (web/wsproto.py).
        self.handler: Socket | None = None
        self.reading = False
        self.cancel_sent = False
        # Recovery (#18, delivery/recovery.py): envelopes carry "offset"; with ``since`` the
        # seam holds live events until the replay is written.
        self.recover = False
        self.seam: Seam | None = None

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

    def send_control(self, frame: bytes) -> bool:
        """A control frame the protocol owes the client (a pong), under the same cap as
        events: a backlog above ``cap`` evicts exactly as :meth:`send` does and the frame is
        not written. A client that floods pings and reads nothing grew the buffer by its
        bandwidth until the stall sweeper came (outside pass: +178 MB per socket in 6 s)."""
        transport = self.transport
        if transport.get_write_buffer_size() > self.cap:
            if self.hub is not None:
                self.hub.evict(self, CLOSE_POLICY, SLOW_CONSUMER_REASON)
            return False
        transport.write(frame)
        self.queued += len(frame)  # the stall sweeper's progress counts every byte written
        return True

    def send_joined(self, data: bytes, head: int, count: int) -> bool | None:
        """Several frames joined into ``data`` as one write (one syscall, one client wake-up);
        ``head`` is the bytes before the last frame. None when the cap could decide otherwise
        for a later frame than the first: the caller sends them one by one through
        :meth:`send`, so eviction and what is written are exactly as for separate frames."""
        if self.closing:
            return False
        transport = self.transport
        if transport.is_closing():
            self.closing = True
            return False
        # Frame i would see at most this backlog plus the frames before it: if even the last
        # one stays within the cap, every one of them would have been written.
        if transport.get_write_buffer_size() + head > self.cap:
            return None
        transport.write(data)
        self.queued += len(data)
        self.delivered += count
        return True

    def stalled(self, now: float, timeout: float) -> bool:
        """True once the write buffer has made no progress for ``timeout`` seconds.

        Called by the hub's periodic sweep: progress is measured between sweeps, so a
        socket that drains slowly but steadily is never taken for a stalled one.
        """
        pending = self.transport.get_write_buffer_size()
        flushed = self.queued - pending
        if pending == 0 or flushed > self.progress_mark:
            self.progress_mark = flushed
            self.stall_since = None if pending == 0 else now
        elif self.stall_since is None:
            self.stall_since = now
        elif now - self.stall_since >= timeout:
            return True
        return False

    def request_close(self, code: int, reason: str, hold: bool = False) -> bool:
        """Ask the socket's own handler to close it; False if a close was already requested.
        With ``hold`` nothing more is written to it and the Close waits for :meth:`send_close`
        (the hub's interruption: the gap marker must be in the history first)."""
        if self.close_code is not None:
            return False
        self.close_code = code
        self.close_reason = reason
        if hold:
            self.closing = True
            self.cancel_sent = True  # the handshake's end (web/streams.py) must not send it
            return True
        self.send_close()
        return True

    def send_close(self) -> None:
        handler = self.handler
        # A handler not in its read loop (mid-handshake, or already closing on the client's
        # Close or a protocol error) checks close_code itself or is past needing it.
        if self.reading and handler is not None and not self.ws.closed:
            self.cancel_sent = True
            handler.cancel()
        else:
            self.cancel_sent = False

    def release(self) -> None:
        """The socket has ended: drop the references back to its protocol, which names this
        connection (``proto.conn``). That cycle kept a closed socket's objects (its filter,
        protocol, transport) until a full cyclic pass, which the GC policy plans only after
        ``gc.min_churn`` closes (outside pass: 730 MB per 300 closed sockets)."""
        self.ws = GONE
        self.handler = None

    async def finish_close(self, timeout: float) -> None:
        """Send the requested Close, wait (bounded) for the client's, then close TCP."""
        assert self.close_code is not None
        message = (self.close_reason or "").encode()[:123]
        # Frames keep flowing until the Close is written (aiohttp writes it before its first
        # await): an event accepted before the shutdown is not dropped in between.
        self.closing = True
        closing = asyncio.ensure_future(self.ws.close(code=self.close_code, message=message))
        answered = False
        try:
            # A client that never answers is cut. One whose answer, or reading, this process
            # has not seen because it stood still (a paused VM: runtime/sockets.py) is waited
            # for again: 20 of 20 that answered a 1001 during a 3 s stall were reset.
            while not answered:
                if (await asyncio.wait({closing}, timeout=timeout))[0]:
                    answered = not closing.cancelled() and closing.exception() is None
                    break
                if not stirred(self.transport):
                    break
        finally:
            closing.cancel()  # a no-op once it is done
        if not answered:
            log.debug("websocket %s: no closing handshake within %.1fs", self.id, timeout)
            reset(self.transport, "ws_close_timeout")
