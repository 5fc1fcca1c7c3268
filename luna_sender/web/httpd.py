"""HTTP parser limits sized from the filter limits, and LUNA error bodies for parser errors.

aiohttp parses the request line and headers before any middleware runs; a request it refuses
(line too long, too many headers, malformed) is answered by ``RequestHandler.handle_error`` with a
text/plain page and an ERROR traceback in the log. :func:`install` makes the app's server build
request handlers whose ``handle_error`` answers those with the usual LUNA JSON body and a
``Luna-Request-Id`` instead, and logs one INFO line. It applies wherever the app is served
(``web.run_app`` in the CLI, ``TestServer`` in the tests): both go through the app's
``_make_handler``, which also receives the parser limits through ``handler_args``.

After a websocket upgrade the same handler lets go of the connection (:meth:`detach`): the
socket is read by web/wsproto.py and the request, its parser and its tasks are freed (#19, W7).

Slow clients (slowloris): a connection that has not sent a complete request head
``limits.http_head_timeout`` seconds after it opened, or after its previous response, is closed
without an answer; a body still incomplete ``limits.http_body_timeout`` seconds after its
request's head is answered 408 and its connection closed. Without them an idle or trickling
connection held its descriptor for an hour (aiohttp's own keep-alive default). A client reading
none of its answers for ``limits.http_send_timeout`` s has its connection reset (stalls.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any, cast

from aiohttp import ClientConnectionResetError, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from luna_sender import errors
from luna_sender.config import Settings
from luna_sender.errors import LunaError
from luna_sender.filters.general import EVENT_TYPE_MAX
from luna_sender.runtime import fdlimit, metrics
from luna_sender.runtime.sockets import set_send_buffer, unread
from luna_sender.web.middlewares import REQUEST_ID_HEADER, new_request_id, screened
from luna_sender.web.stalls import SendDeadline
from luna_sender.web.turns import HANDSHAKES, SMALL_BYTES

log = logging.getLogger("luna_sender.web")

# The longest bounded item a list filter takes is a general event type (128 characters); an
# item is followed by a comma sent as "%2C" (3 bytes). The rest of the request line (method,
# path, other filters, "HTTP/1.1") gets aiohttp's own default line size.
LIST_ITEM_BYTES = EVENT_TYPE_MAX + 3
BASE_LINE_BYTES = 8190
# The handler arguments that carry limits.http_body_timeout and http_send_timeout
# (LunaRequestHandler's own, which aiohttp's RequestHandler would refuse: handler_args only
# work with install()).
BODY_TIMEOUT_ARG = "luna_body_timeout"
SEND_TIMEOUT_ARG = "luna_send_timeout"
SEND_BUFFER_ARG = "luna_send_buffer"


def request_line_max(settings: Settings) -> int:
    """Room for ``list_filter_max_items`` of the longest item type, plus a default line."""
    return settings.limits.list_filter_max_items * LIST_ITEM_BYTES + BASE_LINE_BYTES


def handler_args(settings: Settings) -> dict[str, Any]:
    return {
        "max_line_size": request_line_max(settings),
        "max_field_size": settings.limits.http_header_max_bytes,
        "max_headers": settings.limits.http_headers_max,
        # aiohttp's keep-alive timer is armed when the connection opens and again when a
        # response ends, and closes the connection if no complete request head has arrived by
        # then: it is the head deadline (its default, 3630 s, let slowloris hold every fd).
        "keepalive_timeout": settings.limits.http_head_timeout,
        BODY_TIMEOUT_ARG: settings.limits.http_body_timeout,
        # An unread body's rest is drained no longer than its deadline (aiohttp's 10 s outlived it)
        "lingering_time": min(10.0, settings.limits.http_body_timeout),
        SEND_TIMEOUT_ARG: settings.limits.http_send_timeout,
        SEND_BUFFER_ARG: settings.limits.http_send_buffer,
    }


class LunaRequestHandler(RequestHandler):
    """aiohttp's connection handler with parser errors answered as LUNA errors, a deadline
    on request bodies, and parsing that takes turns with delivery."""

    __slots__ = (
        "_answers_left",
        "_body_timeout",
        "_body_timer",
        "_held",
        "_in_hand",
        "_release_handle",
        "_send_buffer",
        "_send_deadline",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        luna_body_timeout: float = 0.0,
        luna_send_timeout: float = 0.0,
        luna_send_buffer: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._body_timeout = luna_body_timeout
        self._body_timer: asyncio.TimerHandle | None = None  # one request at a time
        self._send_deadline = SendDeadline(self._loop, luna_send_timeout)
        self._send_buffer = luna_send_buffer
        self._held: list[bytes] | None = None
        self._release_handle: asyncio.TimerHandle | None = None
        # Parsed requests not yet answered, and once the client has ended its sending side,
        # how many of them are still to be answered (see eof_received): aiohttp keeps no such
        # count (a request it has taken off its queue but not started is invisible to it).
        self._in_hand: deque[tuple[Any, StreamReader]] = deque()
        self._answers_left: int | None = None

    # --- parsing in turns (web/turns.py) -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parsed now if this slice of handshake work has budget left; else held, reading
        paused, until a later slice: 600 upgrades with 110 KB heads arriving together took
        0.4 s of parsing in one loop turn, and every delivery waited behind it."""
        if self._held is not None:  # waiting for a turn: what follows waits behind it
            self._held.append(data)
            return
        # A small chunk costs microseconds: a health probe or a small request is never held
        # behind a burst (an outside pass saw /healthcheck wait 1.7-3.1 s when all were).
        if len(data) >= SMALL_BYTES and HANDSHAKES.exhausted():
            self._hold([data])
            return
        started = time.perf_counter()
        queued = len(self._messages)
        try:
            super().data_received(data)
        finally:
            HANDSHAKES.spent(started)
        if len(self._messages) > queued:
            self._in_hand.extend(islice(self._messages, queued, None))

    def _hold(self, held: list[bytes]) -> None:
        if self._held is None and self.transport is not None:
            self.transport.pause_reading()
        self._held = held
        self._release_handle = self._loop.call_later(HANDSHAKES.wait(), self._release)

    def _release(self) -> None:
        self._release_handle = None
        held = self._held
        if held is None or self.transport is None:
            return
        if HANDSHAKES.exhausted():  # others took this slice: the next one
            self._release_handle = self._loop.call_later(HANDSHAKES.wait(), self._release)
            return
        self._held = None
        self.transport.resume_reading()  # before parsing: aiohttp may pause it again
        self.data_received(b"".join(held))

    def _process_keepalive(self) -> None:
        """The head deadline does not run out on bytes that arrived and wait for their turn:
        an outside pass saw heads sent in full closed unanswered at the deadline of a burst.
        Checked again one slice later; bytes that are then parsed and still no complete head
        (a slow client) meet the deadline as before. So are bytes that arrived while this
        process stood still and are not read yet (runtime/sockets.py ``unread``)."""
        if self._held is not None or (
            self.transport is not None
            and self._loop.time() >= self._next_keepalive_close_time
            and unread(self.transport)
        ):
            self._keepalive_handle = self._loop.call_later(
                HANDSHAKES.window, self._process_keepalive
            )
            return
        super()._process_keepalive()

    def _drop_held(self) -> bytes:
        held, self._held = self._held, None
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None
        return b"".join(held) if held else b""

    # --- the send deadline ---------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.transport is not None:
            self._send_deadline.paused(self.transport)  # web/stalls.py

    def resume_writing(self) -> None:
        self._send_deadline.resumed()
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._send_deadline.resumed()
        self._drop_held()
        self._in_hand.clear()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        """A client that sent its requests and then shut its sending side
        (``shutdown(SHUT_WR)``) still reads the answers: the connection stays open until the
        requests it sent whole are answered, in order, then closes. Before, the transport
        closed at once: a publish was carried out and its client got no answer, so a client
        that retried published twice.

        Whole means parsed with its body complete, and not an upgrade; answering stops at the
        first request that is not (a body cut by the end of input never completes, and an
        upgraded socket that can send nothing more could not answer a heartbeat). With none,
        the connection closes at once as before.

        Bytes waiting for a parsing turn (web/turns.py) are never behind the end of input:
        reading is paused while they wait, so the end is read only after they are parsed and
        their requests are in hand. The guard below is for a transport that reports the end
        while paused anyway; the bytes then never become a request."""
        if self._held is not None:
            return None
        whole = 0
        for message, payload in self._in_hand:
            if getattr(message, "upgrade", False) or not payload.is_eof():
                break
            whole += 1
        if whole == 0:
            return None
        self._answers_left = whole
        return True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        fdlimit.check()  # a burst of connections may be past the descriptors (rate-limited)
        set_send_buffer(transport, self._send_buffer)  # web/stalls.py
        # Paused (the send deadline armed) by any byte the kernel did not take: at the default
        # 64 KiB mark, a single answer's unsent tail never paused, and a client that read none
        # of it held its descriptor for as long as it liked (an outside pass, 150 s).
        cast(asyncio.WriteTransport, transport).set_write_buffer_limits(high=0)
        # aiohttp before aio-libs/aiohttp#13681 (3.14.5 has it) arms its keep-alive timer only
        # after a first response: arm the head deadline from the connection's opening here too.
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            close_time = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        request = screened(request)  # an unmet Expect, another HTTP version: LUNA errors
        payload = request.content
        if self._body_timeout > 0 and not payload.is_eof():
            self._body_timer = self._loop.call_later(
                self._body_timeout, self._body_expired, payload
            )
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if self._in_hand:
                self._in_hand.popleft()
            if self._answers_left is not None:
                self._answers_left -= 1
                if self._answers_left <= 0:  # the last whole request is answered
                    self.close()

    def _body_expired(self, payload: StreamReader) -> None:
        """The body is late: its reader raises 408 (a LUNA error through the middleware), the
        rest of it is not read and the connection closes once the answer is sent."""
        self._body_timer = None
        if payload.is_eof():
            return
        if self.transport is not None and unread(self.transport):  # arrived while we stood still
            self._body_timer = self._loop.call_later(HANDSHAKES.window, self._body_expired, payload)
            return
        late = f"request body not received within {self._body_timeout:g} s"
        log.debug("%s, closing the connection", late)  # the middleware logs the 408
        payload.set_exception(web.HTTPRequestTimeout(reason=late))
        payload.feed_eof()  # no lingering read of the rest: the exception is raised first
        self.close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # A body aiohttp could not decode (its Content-Encoding lied) is answered 400 by the
        # route; reading the rest of it afterwards fails the same way: no server error.
        if isinstance(kw.get("exc_info"), web.RequestPayloadError):
            log.debug("rest of an undecodable request body not read: %s", kw["exc_info"])
            return
        # A client gone before its answer (e.g. the "100 Continue" to an ``Expect`` head it
        # half-closed after) is the client's doing, not an ERROR with a traceback. Only
        # aiohttp's own write to a closing transport: any other reset (a bus connection's,
        # say) still reaches the log as an error.
        if isinstance(kw.get("exc_info"), ClientConnectionResetError):
            log.debug("client gone before its answer: %s", kw["exc_info"])
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if (
            not isinstance(exc, HttpProcessingError)
            or not 400 <= status < 500
            or request.writer.output_size > 0
        ):
            return super().handle_error(request, status, exc, message)
        err = self._luna_error(exc)
        metrics.REFUSED[err.status, err.kind.code] += 1  # no route, no app: Metrics.fold
        log.info("refused HTTP request from %s: %s", request.remote, err.detail)
        response = errors.error_response(err)
        response.headers[REQUEST_ID_HEADER] = new_request_id()
        response.force_close()  # the parser's state is unknown: never reuse the connection
        return response

    def take_tail(self) -> bytes:
        """What the client sent behind an upgrade request (aiohttp keeps it for the reader it
        would set up): the caller's to parse from now on."""
        tail, self._message_tail = self._message_tail, b""
        return tail

    def detach(self, protocol: asyncio.Protocol) -> bytes:
        """Hand this connection's transport to ``protocol`` after a websocket upgrade.

        The request then finishes as if the client had gone: its response cannot be written
        (no transport), the server forgets this handler once its task ends, and the handler,
        its parser, the Request and its task are freed while the socket lives on in
        ``protocol`` (web/wsproto.py). Returns what arrived behind the upgrade request.
        """
        transport = self.transport
        assert transport is not None
        held = self._held is not None
        tail = self.take_tail() + self._drop_held()  # bytes still waiting for a turn come after
        transport.set_write_buffer_limits()  # the loop's own marks, as websockets always had
        transport.set_protocol(protocol)
        if self._buffer_paused or self._reading_paused or held:
            self._buffer_paused = self._reading_paused = False
            transport.resume_reading()
        self.transport = None
        # The parser points back at this handler: without this cycle the handler is freed by
        # reference counting once its task ends, not left to (frozen) garbage collection.
        self._parser = None
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        self._send_deadline.resumed()  # the socket's own stall check takes over
        if self._manager is not None:
            self._manager.connection_lost(self, None)
        return tail

    def _luna_error(self, exc: HttpProcessingError) -> LunaError:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else "?"
            if limit == self.max_line_size and limit != self.max_field_size:
                return LunaError(
                    errors.BAD_QUERY, f"request line longer than {limit} bytes", status=414
                )
            return LunaError(
                errors.INVALID_REQUEST, f"header longer than {limit} bytes", status=431
            )
        if "Too many headers" in str(exc):
            return LunaError(
                errors.INVALID_REQUEST, f"more than {self.max_headers} headers", status=431
            )
        return LunaError(errors.INVALID_REQUEST, f"malformed request ({type(exc).__name__})")


class LunaServer(web.Server):
    def __call__(self) -> RequestHandler:
        return LunaRequestHandler(self, loop=self._loop, **self._kwargs)


def install(app: web.Application) -> None:
    """Serve ``app`` with :class:`LunaRequestHandler` (call once, before the app is run)."""
    original = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        server = original(**kwargs)
        return LunaServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )

    app._make_handler = make_handler  # type: ignore[method-assign]
