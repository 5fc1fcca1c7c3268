"""The two websocket routes: face/body events (``/ws``) and general events (``/ws/general``).

Everything is validated before the upgrade (spec Part 2 §2.1): a bad header or filter answers a
plain HTTP LUNA error and no socket is opened. The subscription is live before the 101 is sent, so
an event published after the handshake completes is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_websocket import WS_KEY as WS_GUID

from luna_sender import errors
from luna_sender.delivery.connection import Connection
from luna_sender.delivery.recovery import Seam
from luna_sender.errors import LunaError
from luna_sender.filters.base import CompiledFilter, FilterError, Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.runtime.fdlimit import CAPACITY
from luna_sender.runtime.logs import request_id_var
from luna_sender.runtime.sockets import set_send_buffer
from luna_sender.web import access
from luna_sender.web.access import account_header
from luna_sender.web.context import METRICS_RECORDED, Context, ctx, request_id
from luna_sender.web.httpd import LunaRequestHandler
from luna_sender.web.middlewares import REQUEST_ID_HEADER, record_request, route_label
from luna_sender.web.turns import HANDSHAKES
from luna_sender.web.wsproto import SocketProtocol

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
    async with HANDSHAKES.turn(len(request.raw_path)):  # a burst must not hold deliveries back
        principal = access.admit_ws(request)
        account = access.token_account(request, principal) if principal else account_header(request)
        query = access.filter_query(request, RECOVERY_PARAMS)
        compiled = compile_filter(compile_face, request, query)
        recovery = recovery_of(request)
    return await serve_socket(request, "face", compiled, account, recovery)


async def general_ws(request: web.Request) -> web.StreamResponse:
    async with HANDSHAKES.turn(len(request.raw_path)):
        principal = access.admit_ws(request)
        query = access.general_query(request, principal, RECOVERY_PARAMS)
        compiled = compile_filter(compile_general, request, query)
        recovery = recovery_of(request)
        access.general_recovery(principal, recovery.recover)
    return await serve_socket(request, "general", compiled, None, recovery)


def _upgrade_head(request: web.Request, rid: str) -> bytes:
    """The 101 aiohttp would send (no subprotocol, no compression are ever negotiated)."""
    key = request.headers[hdrs.SEC_WEBSOCKET_KEY].encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        f"{REQUEST_ID_HEADER}: {rid}\r\n"
        "Upgrade: websocket\r\nConnection: upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
    ).encode()


# The Sec-WebSocket-Version values aiohttp's handshake takes: RFC 6455's, and drafts 7 and 8,
# whose framing is the same (docs/compatibility.md).
WS_VERSIONS = ("13", "8", "7")
_HANDSHAKE_HEADERS = (
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
)

# RFC 6455 §11.3.1 and §11.3.5: a request carries each of these once.
_ONCE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version")


def _nonce(key: str) -> bool:
    """RFC 6455 §4.1: a base64-encoded 16-byte value."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


def _not_an_upgrade(request: web.Request) -> LunaError:
    """A websocket upgrade in a version not spoken is RFC 6455's 426 naming the version that is
    (it was a 400 "websocket upgrade expected", which told a client nothing it could fix)."""
    version = request.headers.get(hdrs.SEC_WEBSOCKET_VERSION, "")
    upgrade = request.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"
    if upgrade and version and version.strip() not in WS_VERSIONS:
        detail = f"Sec-WebSocket-Version {version[:32]!r} is not supported, only 13"
        # RFC 9110 §15.5.22 and §7.8: the protocol to upgrade to, and the option naming it
        headers = {"Sec-WebSocket-Version": "13", "Upgrade": "websocket", "Connection": "Upgrade"}
        return LunaError(errors.INVALID_REQUEST, detail, status=426, headers=headers)
    return LunaError(errors.INVALID_REQUEST, "websocket upgrade expected")


async def serve_socket(
    request: web.Request,
    kind: str,
    compiled: CompiledFilter,
    account: str | None,
    recovery: Recovery | None = None,
) -> web.StreamResponse:
    """Open one subscriber socket whose account and filter are already decided.

    The routes (``/ws``, ``/ws/general``, the viewer's ``/viewer/ws``) differ only in how they
    reach ``account`` and ``compiled``; from here on a socket is a socket. Once the 101 is
    written the transport belongs to a :class:`SocketProtocol` and this request is over: the
    socket holds no task, no Request, no aiohttp reader while it idles (web/wsproto.py).
    """
    started = time.perf_counter()
    context = ctx(request)
    hub, ws_settings = context.hub, context.settings.ws
    if hub.shutting_down:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, "server is shutting down")
    capacity = request.app[CAPACITY]  # max_connections, or fewer if file descriptors say so
    if len(hub.connections) >= capacity:
        raise LunaError(errors.TOO_MANY_CONNECTIONS, capacity)
    for name in _HANDSHAKE_HEADERS:
        given = request.headers.getall(name, ())
        if not all(value.isascii() for value in given):  # aiohttp's refusal was a 500
            raise LunaError(errors.INVALID_REQUEST, f"{name} is not ASCII")
        # aiohttp read the first copy only, and a comma list ("K, K") as one value
        if name in _ONCE and (len(given) > 1 or any("," in value for value in given)):
            raise LunaError(errors.INVALID_REQUEST, f"{name} is given more than once")
    key = request.headers.get(hdrs.SEC_WEBSOCKET_KEY)
    if key is not None and not _nonce(key):  # aiohttp's check let through "K" or "K==="
        raise LunaError(errors.INVALID_REQUEST, "Sec-WebSocket-Key is not 16 bytes in base64")
    if not web.WebSocketResponse(compress=False).can_prepare(request).ok:
        raise _not_an_upgrade(request)
    handler = request.protocol
    transport = request.transport
    if transport is None or not isinstance(handler, LunaRequestHandler):
        raise LunaError(errors.INVALID_REQUEST, "connection already closed")
    set_send_buffer(transport, ws_settings.socket_send_buffer)
    rid = request_id(request)
    proto = SocketProtocol(
        transport, ws_settings.max_message_size, ws_settings.heartbeat, ws_settings.shutdown_timeout
    )
    conn = Connection(kind, proto, transport, compiled, account, rid, ws_settings.queue_max_bytes)
    proto.conn = conn
    conn.closing = True  # nothing may be written before the 101 response
    if recovery is not None and recovery.recover:
        conn.recover = True
        if recovery.since is not None:
            conn.seam = Seam(recovery.since)
    try:
        await hub.add(conn)
        # The rest is per-socket work too: the sockets of a burst that waited for the same
        # subscription all resume together, and each takes its turn (web/turns.py).
        turn = await HANDSHAKES.take(len(request.raw_path))
    except BaseException:
        conn.release()  # conn <-> proto: not left to the cyclic collector
        raise
    if transport.is_closing():
        # The client left mid-handshake: its business, not a server error.
        log.debug("websocket %s: client disconnected during the handshake", conn.id)
        request[METRICS_RECORDED] = True
        try:
            await hub.remove(conn)
        finally:
            conn.release()
            HANDSHAKES.spent(turn)  # the removal is handshake work of this slice too
        return web.Response(status=400)  # never sent: the transport is gone
    tail = handler.detach(proto)
    conn.handler = proto
    conn.reading = True
    transport.write(_upgrade_head(request, rid))
    conn.closing = conn.close_code is not None  # a close asked for meanwhile: no events
    record_request(request, 101, time.perf_counter() - started)
    route = _ROUTES.setdefault(route_label(request), route_label(request))
    ended = _Ender(context, route)
    log.info(
        "websocket %s opened: kind=%s account=%s filters=%s",
        conn.id,
        kind,
        account or "-",
        compiled.summary(),
        extra=_log_fields(conn, route),
    )
    context.plugins.connection_opened(_info(conn))
    proto.start(tail)
    HANDSHAKES.spent(turn)
    try:
        if conn.seam is not None and not proto.done:
            await hub.resume(conn)
    finally:
        if conn.close_code is not None and not conn.cancel_sent:
            proto.cancel()  # a close requested before the 101 was written
        if proto.done:
            ended(proto)  # gone during the recovery: end it here, after the replay
        else:
            proto.on_end = ended
    # The request is over; its response is never written (the transport is the socket's).
    return web.Response(status=101)


# Route labels, shared by every socket of a route rather than one string per socket.
_ROUTES: dict[str, str] = {}


def _info(conn: Connection) -> dict[str, Any]:
    """The plugins' description of a socket (built when needed, not kept per socket)."""
    return {
        "id": conn.id,
        "kind": conn.kind,
        "account_id": conn.account,
        "filters": conn.filter.summary(),
        "request_id": conn.request_id,
    }


def _log_fields(conn: Connection, route: str) -> dict[str, Any]:
    """The JSON log keys of a socket's open and close lines."""
    return {
        "connection_id": conn.id,
        "kind": conn.kind,
        "account_id": conn.account,
        "filters": conn.filter.summary(),
        "route": route,
    }


class _Ender:
    """What a socket's end does (hub, close log, plugins); one per socket, small."""

    __slots__ = ("context", "route")

    def __init__(self, context: Context, route: str) -> None:
        self.context = context
        self.route = route

    def __call__(self, proto: SocketProtocol) -> None:
        task = asyncio.get_running_loop().create_task(self.end(proto))
        _ENDING.add(task)
        task.add_done_callback(_ENDING.discard)

    async def end(self, proto: SocketProtocol) -> None:
        conn = proto.conn
        request_id_var.set(conn.request_id)  # this task's own context: the close line's id
        conn.closing = True
        try:
            await self.context.hub.remove(conn)
            _log_closed(self.context, conn, proto.close_code, self.route)
        finally:
            # Freed by reference counting once this task ends, not by a cyclic pass (the GC
            # policy runs one only after gc.min_churn closes): see Connection.release.
            conn.release()


# Tasks ending sockets: held so none is collected half-way.
_ENDING: set[asyncio.Task[None]] = set()


def _log_closed(context: Context, conn: Connection, proto_code: int | None, route: str) -> None:
    duration = time.monotonic() - conn.opened_at
    # The code the socket was closed with: the server's own Close (1001 at shutdown, 1008 on
    # eviction, 1002/1007/1009 for a frame the protocol forbids: wsproto's) when the server
    # closed it; otherwise the client's code, and 1006 only for a connection that dropped.
    code = conn.close_code if conn.close_code is not None else proto_code
    reason = conn.close_reason or ""
    fields = _log_fields(conn, route)
    log.info(
        "websocket %s closed: kind=%s filters=%s duration=%.3fs code=%s delivered=%d %s",
        conn.id,
        conn.kind,
        fields["filters"],
        duration,
        code,
        conn.delivered,
        reason,
        extra={
            **fields,
            "close_code": code,
            "close_reason": reason,
            "duration": round(duration, 3),
            "delivered": conn.delivered,
        },
    )
    context.plugins.connection_closed(
        {**_info(conn), "duration": duration, "close_code": code, "delivered": conn.delivered}
    )
