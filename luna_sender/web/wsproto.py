"""A subscriber socket after its 101: a small ``asyncio.Protocol`` instead of aiohttp's reader.

Why (issue #19, W7): an idle socket parked in aiohttp's read loop kept the whole request (its
handler, parser, tasks, WebSocketResponse) alive, ~19 KiB each. Clients send nothing that matters
(spec §2.1), so after the 101 the route hands the transport to this protocol
(``LunaRequestHandler.detach``): what stays per socket is the transport, this object and the
:class:`Connection`.

It reads client frames as aiohttp's reader did, so clients see the same behaviour (spec §2.1
and docs/reliability.md "Close codes": pings answered within ``ws.queue_max_bytes``, 1009/1007/1002
on bad input, a client's Close answered 1000). The heartbeat runs on a shared grid (``BEAT_GRID``).
A server close goes request_close -> :meth:`cancel` -> finish_close -> :meth:`close`: one Close
frame, then a bounded wait for the client's.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import math
import struct
from collections.abc import Callable
from typing import Any

from luna_sender.delivery.connection import Connection
from luna_sender.delivery.frames import close_frame, pong_frame, unmask
from luna_sender.runtime.logs import request_id_var
from luna_sender.runtime.sockets import reset, stirred, unread

OK = 1000
ABNORMAL = 1006
PROTOCOL_ERROR = 1002
INVALID_TEXT = 1007
TOO_BIG = 1009
# Close codes a client may send (aiohttp's list); others outside 3000-4999 are a protocol error.
ALLOWED_CLOSE_CODES = frozenset({*range(1000, 1004), *range(1007, 1015)})  # 1014: IANA's too
MAX_PAYLOAD_LEN = 2**63 - 1
PING_FRAME = b"\x89\x00"
_utf8 = codecs.getincrementaldecoder("utf-8")
# The heartbeat logs nothing: its timers share one empty context instead of each copying the
# request's (a copy per idle socket).
_QUIET = contextvars.Context()
# Heartbeat timers fall on a shared grid of this many seconds (at most a quarter of the
# heartbeat): sockets due within one step are pinged in one loop iteration, their pongs come back
# as one burst. A timer per socket cost 3.7 ms/s of CPU for 1,000 idle sockets, 2.0 on the grid
# (docs/performance.md "Round 4", benchmarks/idle_cost.py).
BEAT_GRID = 1.0


def _on_grid(when: float, heartbeat: float) -> float:
    """``when`` rounded up to the heartbeat grid: never earlier, at most one step later."""
    step = min(BEAT_GRID, heartbeat / 4)
    return math.ceil(when / step) * step


# Bytes one read may bring before the socket waits for the next loop iteration (above).
READ_BUDGET = 16 * 1024


class FrameError(Exception):
    """A client frame the protocol forbids: closes the socket with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class SocketProtocol(asyncio.Protocol):
    """The read side and the close handshake of one open subscriber socket."""

    __slots__ = (
        "close_code",
        "close_timeout",
        "closed",
        "conn",
        "done",
        "heard",
        "heartbeat",
        "held",
        "max_size",
        "msg_op",
        "msg_size",
        "on_end",
        "peer_closed",
        "pinged",
        "tail",
        "text",
        "text_bad",
        "timer",
        "transport",
        "waiter",
    )
    conn: Connection  # set by the route once the Connection (which names this object) exists

    def __init__(
        self,
        transport: asyncio.Transport,
        max_size: int,
        heartbeat: float | None,
        close_timeout: float,
    ) -> None:
        self.transport = transport
        self.max_size = max_size
        self.heartbeat = heartbeat  # seconds of silence before a ping (None: no heartbeat)
        self.close_timeout = close_timeout
        # Called once, when the socket is gone (hub, logs, plugins); None while the route's
        # handler still runs (recovery), which then ends the socket itself.
        self.on_end: Callable[[SocketProtocol], Any] | None = None
        self.tail: bytearray | None = None  # an incomplete frame, only while one is arriving
        self.msg_op = 0  # opcode of a fragmented message in progress (0: none)
        self.msg_size = 0
        self.text: codecs.IncrementalDecoder | None = None
        self.text_bad = False
        self.closed = False  # a Close was sent or the transport is gone: no pongs, no pings
        self.peer_closed = False  # the client's Close (or garbage) came: read no further
        self.close_code: int | None = None  # logged unless the hub closed it (conn.close_code)
        self.waiter: asyncio.Future[None] | None = None  # close(): the client's Close
        self.done = False
        self.heard = 0.0  # loop time data last arrived
        self.pinged = 0.0  # loop time of the unanswered ping (0: none)
        # The heartbeat's timer; once closing, the abort that bounds the TCP close.
        self.timer: asyncio.TimerHandle | None = None
        self.held = False  # not read while its write backlog is over the cap (_control)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def start(self, tail: bytes) -> None:
        """The 101 is written: arm the heartbeat and read what came behind the upgrade."""
        if self.heartbeat is not None:
            loop = asyncio.get_running_loop()
            self.heard = loop.time()
            due = _on_grid(self.heard + self.heartbeat, self.heartbeat)
            self.timer = loop.call_at(due, self._beat, context=_QUIET)
        if tail:
            self.data_received(tail)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.heard = asyncio.get_running_loop().time()
        if self.peer_closed:
            return
        if len(data) > READ_BUDGET:
            # libuv reads a busy socket up to 32 times per loop iteration; a client flooding
            # tiny frames (each parsed here) then held the loop for seconds (outside pass:
            # /healthcheck 2-6 s). One read per iteration for such a socket, as aiohttp's flow
            # control gave: pause, and resume when the loop has served everyone else.
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_reading)
        tail = self.tail
        if tail is not None:
            tail += data
            data = bytes(tail)
        try:
            pos = self._parse(data)
        except FrameError as exc:
            self._fail(exc.code)
            return
        self.tail = bytearray(data[pos:]) if pos < len(data) else None

    def eof_received(self) -> bool | None:
        """No half-open sockets: the client's FIN ends the socket. The transport closes once
        what is queued is sent, for as long as the client takes it: the hub's stall sweep resets
        one that takes nothing for ``ws.stall_timeout`` (delivery/sweep.py ``_evict_stalled``).
        Marked closing at once: else the sweep took it for a live stalled socket, evicted it
        1008 and cut it at the close timeout, or reset it as closing, whichever came first."""
        self.conn.closing = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.peer_closed = True
        self.tail = None
        self._stop_timer()
        self.conn.closing = True
        if self.close_code is None:
            self.close_code = ABNORMAL
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.done = True
        self.conn.reading = False
        if self.on_end is not None:
            self.on_end(self)

    # -- what Connection calls (the ``ws`` and ``handler`` it knows) -----------------------

    def cancel(self, msg: Any = None) -> bool:
        """request_close's hand-over: run the server's close in a task of its own."""
        self.conn.cancel_sent = True
        asyncio.get_running_loop().create_task(self._server_close())
        return True

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        """Send the one Close frame and wait for the client's (the caller bounds the wait)."""
        transport = self.transport
        if self.closed or transport.is_closing():
            return False
        self.closed = True
        self._stop_timer()
        transport.write(close_frame(code, message))
        if not self.peer_closed:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        self._shut()
        return True

    # -- internals ----------------------------------------------------------------------

    async def _server_close(self) -> None:
        request_id_var.set(self.conn.request_id)  # this task's own context: its log lines
        if not self.closed:
            await self.conn.finish_close(self.close_timeout)
        self._shut()  # a no-op when already closing

    def _fail(self, code: int) -> None:
        """A protocol error: Close with its code, then TCP close; the log names that code."""
        self.peer_closed = True
        self.tail = None
        if not self.closed:  # else a Close went already: the log names that one (or 1006)
            self.closed, self.close_code = True, code
            self.transport.write(close_frame(code))
        self._stop_timer()
        self._shut()

    def _on_close_frame(self, payload: bytes) -> None:
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            if code not in ALLOWED_CLOSE_CODES and not 3000 <= code < 5000:
                raise FrameError(PROTOCOL_ERROR)
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                raise FrameError(INVALID_TEXT) from None
        elif payload:
            raise FrameError(PROTOCOL_ERROR)
        else:
            code = 1005  # RFC 6455 7.1.5: no status code was received
        self.peer_closed = True
        waiter = self.waiter
        if waiter is not None:  # our Close was sent first: this is the reply
            if self.conn.close_code is None:
                self.close_code = code
            if not waiter.done():
                waiter.set_result(None)
            return
        # The client closes: answer 1000 at once and close TCP (aiohttp's autoclose).
        self.close_code = code
        self.conn.closing = True
        if not self.closed:
            self.closed = True
            self.transport.write(close_frame(OK))
        self._stop_timer()
        self._shut()

    def _parse(self, data: bytes) -> int:
        """Handle every complete frame in ``data``; the offset of the first incomplete one."""
        pos, size = 0, len(data)
        while size - pos >= 2:
            b1, b2 = data[pos], data[pos + 1]
            opcode, fin, n = b1 & 0x0F, b1 & 0x80, b2 & 0x7F
            if b1 & 0x70:
                raise FrameError(PROTOCOL_ERROR)  # reserved bits: nothing was negotiated
            if opcode not in (0, 1, 2, 8, 9, 10):
                raise FrameError(PROTOCOL_ERROR)
            if opcode > 7 and (not fin or n > 125):
                raise FrameError(PROTOCOL_ERROR)
            hdr = 2
            if n == 126:
                if size - pos < 4:
                    break
                n, hdr = (data[pos + 2] << 8) | data[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, hdr = struct.unpack_from("!Q", data, pos + 2)[0], 10
                if n > MAX_PAYLOAD_LEN:
                    raise FrameError(TOO_BIG)
            if opcode < 8 and n >= self.max_size - self.msg_size:
                raise FrameError(TOO_BIG)  # before buffering any of it, as aiohttp did
            masked = b2 & 0x80
            start = pos + hdr + (4 if masked else 0)
            if size - start < n:
                break
            payload = data[start : start + n]
            if masked:
                mask = data[pos + hdr : pos + hdr + 4]
                if opcode >= 8 or opcode == 1 or (opcode == 0 and self.msg_op == 1):
                    payload = unmask(mask, payload)
            pos = start + n
            if opcode >= 8:
                self._control(opcode, payload)
                if self.peer_closed:
                    return size
            else:
                self._data(opcode, bool(fin), payload)
        return pos

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            self._on_close_frame(payload)
        # A pong is under ws.queue_max_bytes like every frame: a client that sends pings and
        # reads nothing is evicted 1008 as a slow consumer once its backlog passes the cap, and
        # is not read meanwhile (its flood waits in the kernel, costing no CPU) until the
        # backlog drains (resume_writing) - only then can its Close reply be read.
        elif opcode == 9 and not self.closed and not self.conn.send_control(pong_frame(payload)):
            self.held = True
            self.transport.pause_reading()

    def _data(self, opcode: int, fin: bool, payload: bytes) -> None:
        """Client messages mean nothing (spec §2.1): validated as aiohttp did, then dropped."""
        if opcode == 0:
            if not self.msg_op:
                raise FrameError(PROTOCOL_ERROR)  # continuation of nothing
            opcode = self.msg_op
        elif self.msg_op:
            raise FrameError(PROTOCOL_ERROR)  # a new message inside a fragmented one
        if opcode == 1:
            if self.text is None:
                self.text = _utf8()
            try:
                self.text.decode(payload, fin)
            except UnicodeDecodeError:
                self.text_bad = True
                self.text.reset()
        if not fin:
            self.msg_op = opcode
            self.msg_size += len(payload)
            return
        bad = self.text_bad
        self.msg_op = self.msg_size = 0
        self.text = None
        self.text_bad = False
        if opcode == 1 and bad:
            raise FrameError(INVALID_TEXT)

    def _beat(self) -> None:
        """The heartbeat: one timer per socket, re-armed from the time data last arrived."""
        self.timer = None
        heartbeat = self.heartbeat
        if self.closed or heartbeat is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.pinged:
            # Nothing came back, nor waits unread after a stall of ours (runtime/sockets.py):
            # drop it without a Close, as aiohttp did.
            if self.heard < self.pinged and not unread(self.transport):
                self.close_code = ABNORMAL
                self.closed = True
                self._shut(at_once=True)
                return
            self.pinged = 0.0
        due = self.heard + heartbeat
        if now < due - 0.002:  # libuv's millisecond timers may fire a hair early
            self.timer = loop.call_at(_on_grid(due, heartbeat), self._beat, context=_QUIET)
            return
        self.pinged = now
        self.transport.write(PING_FRAME)
        self.timer = loop.call_at(
            _on_grid(now + heartbeat / 2, heartbeat), self._beat, context=_QUIET
        )

    def _shut(self, at_once: bool = False) -> None:
        """A TCP close that cannot hang: ``close()`` first flushes the write buffer, which a
        peer that reads nothing never lets happen (the socket then stayed open, its frames
        dropped, for as long as the peer liked). Aborted after ``close_timeout``, or at once
        for a peer the heartbeat found dead. Aborts are resets (runtime/sockets.py): a peer that
        reads nothing would otherwise be sent the queued frames after the descriptor is gone."""
        if at_once:
            reset(self.transport, "ws_dead_peer")
            return
        self.transport.close()
        if not self.done:
            # Cancelled by connection_lost: a pending timer kept the socket's objects alive
            # for close_timeout seconds after the close.
            self._stop_timer()
            self.timer = asyncio.get_running_loop().call_later(self.close_timeout, self._abort)

    def resume_writing(self) -> None:
        """The transport's write buffer fell below its low-water mark (the cap is above the
        high-water one, so a held socket always gets this once it drains)."""
        if self.held:
            self.held = False
            self._resume_reading()

    def _resume_reading(self) -> None:
        if not self.done and not self.held and not self.transport.is_closing():
            self.transport.resume_reading()

    def _abort(self) -> None:
        if not self.done and stirred(self.transport):  # while this process stood still: again
            self.timer = asyncio.get_running_loop().call_later(self.close_timeout, self._abort)
        elif not self.done:
            reset(self.transport, "ws_close_timeout")

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
