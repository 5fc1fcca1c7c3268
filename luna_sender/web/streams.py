"""The two websocket routes: face/body events (``/ws``) and general events (``/ws/general``).

Everything is validated before the upgrade (spec Part 2 §2.1): a bad header or filter answers a
plain HTTP LUNA error and no socket is opened. The subscription is live before the 101 is sent, so
an event published after the handshake completes is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSMsgType, web

from luna_sender import errors
from luna_sender.delivery.connection import Connection
from luna_sender.delivery.recovery import Seam
from luna_sender.errors import LunaError
from luna_sender.filters.base import CompiledFilter, FilterError, Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.runtime.fdlimit import CAPACITY
from luna_sender.web import access
from luna_sender.web.access import account_header
from luna_sender.web.context import METRICS_RECORDED, Context, ctx, request_id
from luna_sender.web.middlewares import REQUEST_ID_HEADER, record_request, route_label

log = logging.getLogger("luna_sender.ws")
# The recovery parameters (#18, docs/recovery.md): taken out before the filter compiler sees
# the query, which still rejects every other unknown parameter.
RECOVER_PARAM = "recover"
SINCE_PARAM = "since"
RECOVERY_PARAMS = frozenset({RECOVER_PARAM, SINCE_PARAM})
# As the user-defined filters read booleans (filters/userdef.py): true, false, 1, 0.
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# compile_face / compile_general: a socket's query and the service's limits -> its filter.
Compiler = Callable[[Iterable[tuple[str, str]], Limits], CompiledFilter]


async def _read_until_closed(ws: web.WebSocketResponse, conn: Connection) -> None:
    """Client messages carry no meaning (spec §2.1); only control frames matter.

    The hub ends this loop by cancelling it (eviction, shutdown): that cancel is swallowed
    here and the handler goes on to send the one Close frame; any other cancel propagates.
    """
    conn.reading = True
    try:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not conn.cancel_sent or task is None:
            raise
        task.uncancel()
    finally:
        conn.reading = False


def limits_of(request: web.Request) -> Limits:
    lim = ctx(request).settings.limits
    return Limits(
        list_max_items=lim.list_filter_max_items,
        user_filters_max=lim.user_filters_max,
        like_pattern_max_chars=lim.like_pattern_max_chars,
        like_wildcards_max=lim.like_wildcards_max,
        like_value_max_chars=lim.like_value_max_chars,
        like_filters_max=lim.like_filters_max,
    )


def compile_filter(
    compiler: Compiler, request: web.Request, query: list[tuple[str, str]]
) -> CompiledFilter:
    """Every route that opens (or pre-checks) a socket compiles through here, so a bad filter
    is one 400/12012 naming the parameter, with its reason in the log, wherever it was sent."""
    try:
        return compiler(query, limits_of(request))
    except FilterError as exc:
        log.info("rejected websocket filter %s: %s", exc.param, exc.reason)
        raise LunaError(errors.BAD_QUERY, exc.param) from None


def _log_fields(info: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """The JSON log keys of a socket's open and close lines."""
    return {
        "connection_id": info["id"],
        "kind": info["kind"],
        "account_id": info["account_id"],
        "filters": info["filters"],
        "route": route_label(request),
    }


class Recovery:
    """What a socket asked of recovery: ``recover=true`` and/or ``since=<offset>``."""

    __slots__ = ("recover", "since")

    def __init__(self, recover: bool, since: str | None) -> None:
        self.recover = recover or since is not None  # since implies recover
        self.since = since


def recovery_of(request: web.Request) -> Recovery:
    """``recover`` is a boolean (anything else: 400/12012 naming it, like a bad filter);
    ``since`` is any string — one the service does not recognise answers ``recovered: false``
    on the socket, never an error (the contract)."""
    query = request.query
    flags = set()
    for value in query.getall(RECOVER_PARAM, ()):
        flag = _BOOLEANS.get(value)
        if flag is None:
            log.info(
                "rejected websocket filter %s: not a boolean (true, false, 1, 0)", RECOVER_PARAM
            )
            raise LunaError(errors.BAD_QUERY, RECOVER_PARAM)
        flags.add(flag)
    if len(flags) > 1:  # recover=1&recover=0: which one was meant is unknowable, as for filters
        log.info("rejected websocket filter %s: conflicting values given", RECOVER_PARAM)
        raise LunaError(errors.BAD_QUERY, RECOVER_PARAM)
    recover = flags.pop() if flags else False
    sinces = set(query.getall(SINCE_PARAM, ()))
    # Two different offsets name no one place to resume from: unrecognised, so the socket is
    # told ``recovered: false`` (never an error, the contract) rather than the last one winning.
    since = sinces.pop() if len(sinces) == 1 else ("" if sinces else None)
    return Recovery(recover, since)


async def face_ws(request: web.Request) -> web.StreamResponse:
    principal = access.admit_ws(request)
    account = access.token_account(request, principal) if principal else account_header(request)
    query = access.filter_query(request, RECOVERY_PARAMS)
    compiled = compile_filter(compile_face, request, query)
    return await serve_socket(request, "face", compiled, account, recovery_of(request))


async def general_ws(request: web.Request) -> web.StreamResponse:
    principal = access.admit_ws(request)
    query = access.general_query(request, principal, RECOVERY_PARAMS)
    compiled = compile_filter(compile_general, request, query)
    return await serve_socket(request, "general", compiled, None, recovery_of(request))


async def serve_socket(
    request: web.Request,
    kind: str,
    compiled: CompiledFilter,
    account: str | None,
    recovery: Recovery | None = None,
) -> web.StreamResponse:
    """Open and hold one subscriber socket whose account and filter are already decided.

    The routes (``/ws``, ``/ws/general``, the viewer's ``/viewer/ws``) differ only in how they
    reach ``account`` and ``compiled``; from here on a socket is a socket.
    """
    started = time.perf_counter()
    context = ctx(request)
    hub, ws_settings = context.hub, context.settings.ws
    if hub.shutting_down:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, "server is shutting down")
    capacity = request.app[CAPACITY]  # max_connections, or fewer if file descriptors say so
    if len(hub.connections) >= capacity:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, capacity)
    ws = web.WebSocketResponse(
        heartbeat=ws_settings.heartbeat,
        autoping=True,
        compress=False,  # frames are prebuilt once per event and shared by every socket
        max_msg_size=ws_settings.max_message_size,
        timeout=ws_settings.shutdown_timeout,
    )
    # The middleware stamps responses after the handler returns; the 101 is sent inside it.
    ws.headers[REQUEST_ID_HEADER] = request_id(request)
    if not ws.can_prepare(request).ok:
        raise LunaError(errors.INVALID_REQUEST, "websocket upgrade expected")
    transport = request.transport
    if transport is None:
        raise LunaError(errors.INVALID_REQUEST, "connection already closed")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ws_settings.socket_send_buffer)
    conn = Connection(
        kind, ws, transport, compiled, account, request_id(request), ws_settings.queue_max_bytes
    )
    conn.closing = True  # nothing may be written before the 101 response
    conn.handler = asyncio.current_task()
    if recovery is not None and recovery.recover:
        conn.recover = True
        if recovery.since is not None:
            conn.seam = Seam(recovery.since)
    await hub.add(conn)
    info: dict[str, Any] = {
        "id": conn.id,
        "kind": kind,
        "account_id": account,
        "filters": compiled.summary(),
        "request_id": conn.request_id,
    }
    opened = False
    try:
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The client left mid-handshake: its business, not a server error.
            log.debug("websocket %s: client disconnected during the handshake", conn.id)
            request[METRICS_RECORDED] = True
            # Never sent (the transport is gone); aiohttp treats that write quietly, whereas
            # a half-prepared ``ws`` would raise from its write_eof.
            return web.Response(status=400)
        conn.closing = False
        opened = True
        record_request(request, 101, time.perf_counter() - started)
        log.info(
            "websocket %s opened: kind=%s account=%s filters=%s",
            conn.id,
            kind,
            account or "-",
            compiled.summary(),
            extra=_log_fields(info, request),
        )
        context.plugins.connection_opened(info)
        if conn.seam is not None:
            await hub.resume(conn)
        if conn.close_code is None:
            await _read_until_closed(ws, conn)
        if conn.close_code is not None:
            await conn.finish_close(ws_settings.shutdown_timeout)
    finally:
        conn.closing = True
        await hub.remove(conn)
        if opened:
            _log_closed(context, conn, info, request)
    return ws


def _log_closed(
    context: Context, conn: Connection, info: dict[str, Any], request: web.Request
) -> None:
    duration = time.monotonic() - conn.opened_at
    # The code the socket was closed with: the server's own Close (1001 at shutdown, 1008 on
    # eviction ...) when the server closed it — aiohttp's ``close_code`` would then hold the
    # client's reply, or 1006 when the reply never came; otherwise the client's code, and 1006
    # only for a connection that really dropped.
    code = conn.close_code if conn.close_code is not None else conn.ws.close_code
    reason = conn.close_reason or ""
    log.info(
        "websocket %s closed: kind=%s filters=%s duration=%.3fs code=%s delivered=%d %s",
        conn.id,
        conn.kind,
        info["filters"],
        duration,
        code,
        conn.delivered,
        reason,
        extra={
            **_log_fields(info, request),
            "close_code": code,
            "close_reason": reason,
            "duration": round(duration, 3),
            "delivered": conn.delivered,
        },
    )
    context.plugins.connection_closed(
        {**info, "duration": duration, "close_code": code, "delivered": conn.delivered}
    )
