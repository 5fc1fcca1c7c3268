"""Request id, LUNA error bodies and request metrics for every route.

No aiohttp HTML error page ever reaches a client: routing errors, method errors, oversized bodies
and unexpected exceptions are all rendered as ``{"error_code", "desc", "detail", "link"}``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from luna_sender import errors
from luna_sender.errors import LunaError
from luna_sender.runtime.logs import clip, mask_query, request_id_var
from luna_sender.web.access import ACCOUNT_HEADER
from luna_sender.web.context import CTX, METRICS_RECORDED, REQUEST_ID

log = logging.getLogger("luna_sender.web")
access_log = logging.getLogger("luna_sender.access")

REQUEST_ID_HEADER = "Luna-Request-Id"
REQUEST_ID_RE = re.compile(
    r"^[0-9]{10},[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_request_id() -> str:
    return f"{int(time.time())},{uuid.uuid4()}"


def route_label(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = resource.canonical if resource is not None else None
    if not canonical or getattr(info, "http_exception", None) is not None:
        canonical = "unknown"
    return f"{request.method}:{canonical}"


def _from_http_exception(exc: web.HTTPException) -> LunaError:
    if isinstance(exc, web.HTTPNotFound):
        return LunaError(errors.NOT_FOUND)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return LunaError(errors.METHOD_NOT_ALLOWED)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return LunaError(errors.BODY_TOO_LARGE, "Request body is too large")
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return LunaError(errors.UNSUPPORTED_MEDIA)
    if exc.status >= 500:
        return LunaError(errors.INTERNAL)
    return LunaError(errors.INVALID_REQUEST, exc.reason, status=exc.status)


# What the request log and ``request_count`` record for a request whose client left first.
CLIENT_CLOSED = 499
# Set by :func:`screened` on a request whose line named an HTTP version other than 1.0 or 1.1 (the
# parser takes 0.9 and 2.0): the version it named, as text.
UNSPOKEN_VERSION: web.RequestKey[str] = web.RequestKey("luna_unspoken_http_version", str)
# Set by :func:`screened` on a request whose ``Expect`` is not 100-continue: its value.
UNMET_EXPECTATION: web.RequestKey[str] = web.RequestKey("luna_unmet_expectation", str)
# Set by :func:`screened` while an HTTP/1.1 request's ``Expect: 100-continue`` is unanswered.
AWAITS_CONTINUE: web.RequestKey[bool] = web.RequestKey("luna_awaits_continue", bool)
SPOKEN = frozenset({HttpVersion10, HttpVersion11})


def screened(request: web.BaseRequest) -> web.BaseRequest:
    """The request as the application may see it; what it may not see is refused by the
    middleware, which alone writes LUNA errors with a ``Luna-Request-Id``.

    - ``Expect`` other than 100-continue: aiohttp answered 417 in plain text before any
      middleware ran (an outside pass). The header is taken off and the value kept.
    - An HTTP version other than 1.0 or 1.1: aiohttp's parser takes "HTTP/2.0" and "HTTP/0.9"
      and its answer echoed them ("HTTP/2.0 200 OK" in HTTP/1.1 framing); answered 505, in 1.1.
    """
    given: object = request.headers  # a plain dict on aiohttp's stand-in for a malformed head
    expects = given.getall(hdrs.EXPECT, ()) if isinstance(given, CIMultiDictProxy) else ()
    if expects:  # taken off: aiohttp's handler would read the first header, and answer 100 itself
        headers = CIMultiDict(request.headers)
        del headers[hdrs.EXPECT]
        request = request.clone(headers=headers)
        # One list (RFC 9110 §5.3): "100-continue, 100-continue" is met, and empty members count
        # for nothing; aiohttp refused both in plain text.
        members = {m.strip().lower() for value in expects for m in value.split(",")} - {""}
        if members - {"100-continue"}:
            request[UNMET_EXPECTATION] = ", ".join(expects)
        elif members and request.version == HttpVersion11:  # 1.0: ignored (§10.1.1)
            request[AWAITS_CONTINUE] = True
    version = request._version
    if not isinstance(given, CIMultiDictProxy):  # aiohttp's stand-in is "GET / HTTP/1.0"
        version = HttpVersion11  # the 400 is ours, and this service speaks HTTP/1.1
        request._version = version
        request._cache.pop("version", None)
    if version not in SPOKEN:
        request[UNSPOKEN_VERSION] = f"{version.major}.{version.minor}"
        request._version = HttpVersion11
        request._cache.pop("version", None)  # a reified property: read again
    return request


async def send_continue(request: web.Request) -> None:
    """``100 Continue`` once the route has decided to read the body: aiohttp sent it before any
    check ran, so a client held its body back only to be told 413 or 403 after sending it."""
    if request.get(AWAITS_CONTINUE):
        request[AWAITS_CONTINUE] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def luna_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER)
    bad_request_id = given is not None and not REQUEST_ID_RE.fullmatch(given)
    request_id = given if given is not None and not bad_request_id else new_request_id()
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    error_code: int | None = None
    detail = ""
    try:
        try:
            # RFC 9112 §3.2: a request target has no fragment. yarl would cut the query at a
            # raw '#', dropping what a front door appended (``&account_id=...``): refuse it on
            # every route, before the route is looked at.
            if "#" in request.raw_path:
                raise LunaError(errors.INVALID_REQUEST, "'#' in the request target")
            if UNSPOKEN_VERSION in request:  # RFC 9110 §15.6.6
                unspoken = f"HTTP/{request[UNSPOKEN_VERSION]} is not supported, only HTTP/1.x"
                raise LunaError(errors.INVALID_REQUEST, unspoken, status=505)
            unrouted = request.match_info.http_exception is not None  # 404/405 come first
            if UNMET_EXPECTATION in request and not unrouted:  # RFC 9110 §10.1.1
                unmet = f"Expect: {request[UNMET_EXPECTATION][:64]!r} (only 100-continue)"
                raise LunaError(errors.INVALID_REQUEST, unmet, status=417)
            # Routing errors (404/405) come first: the route does not exist for any header.
            if bad_request_id and not unrouted:
                raise LunaError(errors.BAD_HEADER, REQUEST_ID_HEADER)
            response = await handler(request)
        except LunaError as exc:
            response = errors.error_response(exc)
            error_code, detail = exc.kind.code, exc.detail
            if exc.kind is errors.TOO_MANY_CONNECTIONS or exc.status in (417, 505):
                # a refused upgrade must not keep its descriptor; a client speaking another
                # protocol would not understand a kept-alive HTTP/1.1 connection, and one
                # refused its expectation may still send the body it held back
                response.force_close()
        except web.HTTPException as exc:
            if exc.status < 400:  # a redirect: answered by aiohttp, counted here
                exc.headers[REQUEST_ID_HEADER] = request_id
                record_request(request, exc.status, time.perf_counter() - started)
                raise
            err = _from_http_exception(exc)
            response = errors.error_response(err)
            if isinstance(exc, web.HTTPMethodNotAllowed):
                response.headers["Allow"] = exc.headers.get("Allow", "")
            error_code, detail = err.kind.code, err.detail
        except Exception as exc:
            if isinstance(exc, ConnectionResetError) and _client_gone(request):
                # The client left mid-request (a body cut short): no answer can reach it and
                # it is no server fault, so no 5xx is counted (nginx's 499) nor ERROR logged.
                log.debug("client left mid-request: %s %s", request.method, clip(request.path))
                response = web.Response(status=CLIENT_CLOSED)
            else:
                log.exception("unhandled error on %s %s", request.method, clip(request.path))
                err = LunaError(errors.INTERNAL)
                response = errors.error_response(err)
                error_code, detail = err.kind.code, err.detail
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
            if request.get(AWAITS_CONTINUE) and not request.content.is_eof():
                response.force_close()  # the body held back may come still: not a next request
        if not request.get(METRICS_RECORDED):
            record_request(request, response.status, time.perf_counter() - started, error_code)
        if error_code is not None:
            _log_failure(request, response.status, error_code, detail)
        context = request.app.get(CTX)
        if context is not None and context.settings.log_access:
            _log_access(request, response.status, time.perf_counter() - started)
        return response
    finally:
        request_id_var.reset(token)


def _fields(request: web.Request, status: int) -> dict[str, object]:
    # The raw (still percent-encoded) path: what the client sent, and always one line.
    fields: dict[str, object] = {
        "route": route_label(request),
        "method": request.method,
        "path": clip(request.rel_url.raw_path),
        "status": status,
    }
    account = request.headers.get(ACCOUNT_HEADER)
    if account is not None:
        fields["account_id"] = account[:64]
    return fields


def _log_failure(request: web.Request, status: int, error_code: int, detail: str) -> None:
    """One INFO line per refused request (404s, bad input, 29001, 29006): reason + request id."""
    fields = _fields(request, status)
    log.info(
        "request failed: %s %s -> %d error_code=%d: %s",
        request.method,
        fields["path"],
        status,
        error_code,
        detail,
        extra={**fields, "error_code": error_code, "detail": detail},
    )


def _log_access(request: web.Request, status: int, duration: float) -> None:
    fields = _fields(request, status)
    remote = request.remote or "-"
    # Path and query as sent, but a ``?token=`` credential masked (docs/security.md).
    access_log.info(
        "%s %s %s %d %.1fms",
        remote,
        request.method,
        clip(mask_query(request.raw_path)),
        status,
        duration * 1000,
        extra={**fields, "remote": remote, "duration_ms": round(duration * 1000, 3)},
    )


def record_request(
    request: web.Request, status: int, duration: float, error_code: int | None = None
) -> None:
    """Count a finished request (websockets call this at upgrade time, with status 101)."""
    request[METRICS_RECORDED] = True
    context = request.app.get(CTX)
    if context is None:
        return
    label = route_label(request)
    if context.settings.metrics.enabled:
        context.metrics.observe_request(label, status, duration, error_code)
    context.plugins.request_finished(label, status, duration, error_code)
