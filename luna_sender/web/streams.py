"""The two websocket routes: face/body events (``/ws``) and general events (``/ws/general``).

Everything is validated before the upgrade (spec Part 2 §2.1): a bad header or filter answers a
plain HTTP LUNA error and no socket is opened. The subscription is live before the 101 is sent, so
an event published after the handshake completes is delivered.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any

from aiohttp import WSMsgType, web

from .. import errors
from ..errors import LunaError
from ..filters.base import CompiledFilter, FilterError, Limits, parse_uuid
from ..filters.events import compile_face
from ..filters.general import compile_general
from ..hub import Connection
from .context import ctx, request_id
from .middlewares import INVALID_REQUEST, record_request, route_label

log = logging.getLogger("luna_sender.ws")
ACCOUNT_HEADER = "Luna-Account-Id"


def limits_of(request: web.Request) -> Limits:
    lim = ctx(request).settings.limits
    return Limits(list_max_items=lim.list_filter_max_items, user_filters_max=lim.user_filters_max)


def account_header(request: web.Request) -> str:
    """The required ``Luna-Account-Id``: missing -> 403/29001, malformed -> 400/12012."""
    raw = request.headers.get(ACCOUNT_HEADER)
    if raw is None:
        raise LunaError(errors.NO_ACCOUNT)
    try:
        return parse_uuid(raw.strip())
    except ValueError:
        raise LunaError(errors.BAD_HEADER, ACCOUNT_HEADER) from None


def _compile(compiler: Any, request: web.Request) -> CompiledFilter:
    try:
        return compiler(request.query.items(), limits_of(request))
    except FilterError as exc:
        log.info("rejected websocket filter %s: %s", exc.param, exc.reason)
        raise LunaError(errors.BAD_QUERY, exc.param) from None


def _log_fields(info: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """The JSON log keys of a socket's open and close lines."""
    return {"connection_id": info["id"], "kind": info["kind"], "account_id": info["account_id"],
            "filters": info["filters"], "route": route_label(request)}


async def face_ws(request: web.Request) -> web.StreamResponse:
    account = account_header(request)
    compiled = _compile(compile_face, request)
    return await _serve(request, "face", compiled, account)


async def general_ws(request: web.Request) -> web.StreamResponse:
    compiled = _compile(compile_general, request)
    return await _serve(request, "general", compiled, None)


async def _serve(request: web.Request, kind: str, compiled: CompiledFilter,
                 account: str | None) -> web.StreamResponse:
    started = time.perf_counter()
    context = ctx(request)
    hub, ws_settings = context.hub, context.settings.ws
    if hub.shutting_down:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, "server is shutting down")
    if len(hub.connections) >= ws_settings.max_connections:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, ws_settings.max_connections)
    ws = web.WebSocketResponse(
        heartbeat=ws_settings.heartbeat,
        autoping=True,
        compress=False,  # frames are prebuilt once per event and shared by every socket
        max_msg_size=ws_settings.max_message_size,
        timeout=ws_settings.shutdown_timeout,
    )
    if not ws.can_prepare(request).ok:
        raise LunaError(INVALID_REQUEST, "websocket upgrade expected")
    transport = request.transport
    if transport is None:
        raise LunaError(INVALID_REQUEST, "connection already closed")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ws_settings.socket_send_buffer)
    conn = Connection(kind, ws, transport, compiled, account, request_id(request),
                      ws_settings.queue_max_bytes)
    conn.closing = True  # nothing may be written before the 101 response
    await hub.add(conn)
    info: dict[str, Any] = {"id": conn.id, "kind": kind, "account_id": account,
                            "filters": compiled.summary(), "request_id": conn.request_id}
    try:
        await ws.prepare(request)
        conn.closing = False
        record_request(request, 101, time.perf_counter() - started)
        log.info("websocket %s opened: kind=%s account=%s filters=%s", conn.id, kind,
                 account or "-", compiled.summary(), extra=_log_fields(info, request))
        context.plugins.connection_opened(info)
        async for msg in ws:
            # Client messages carry no meaning (spec §2.1); only control frames matter.
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        conn.closing = True
        await hub.remove(conn)
        duration = time.monotonic() - conn.opened_at
        code = ws.close_code
        reason = conn.close_reason or ""
        log.info("websocket %s closed: kind=%s filters=%s duration=%.3fs code=%s delivered=%d %s",
                 conn.id, kind, compiled.summary(), duration, code, conn.delivered, reason,
                 extra={**_log_fields(info, request), "close_code": code, "close_reason": reason,
                        "duration": round(duration, 3), "delivered": conn.delivered})
        context.plugins.connection_closed({**info, "duration": duration, "close_code": code,
                                           "delivered": conn.delivered})
    return ws
