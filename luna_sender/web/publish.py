"""The publish routes: validate, then publish in exactly the producers' Redis format.

Publishing goes through the bus, never straight to local sockets, so every instance sharing the
bus (this one included) delivers the event the same way as one from luna-handlers. The bodies'
pydantic models (web/docs/bodies.py) are the documents' schemas too; their errors are reported
in the original's pydantic-v1 wording ("field required", ...) under the 12022 code.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from luna_sender import errors, wire
from luna_sender.bus import BusError
from luna_sender.errors import LunaError
from luna_sender.runtime.logs import Throttle
from luna_sender.web import access, strictjson
from luna_sender.web.context import ctx, request_id
from luna_sender.web.docs.bodies import PublishEvents, PublishGeneral, first_error
from luna_sender.web.middlewares import send_continue

log = logging.getLogger("luna_sender.publish")
SHUTTING_DOWN = "the service is shutting down, the event was not published"
JSON_TYPES = ("application/json",)
Body = TypeVar("Body", bound=BaseModel)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Read a JSON object body: 12024 for a non-JSON media type, 12002 for no/invalid JSON.

    A body that parses leniently but is not strict JSON (NaN/Infinity, a lone surrogate, deeper
    than a frame can nest) is 12022 with the path of the offending value: it could never be
    sent as a frame a strict client parses.
    """
    if request.content_type not in JSON_TYPES:
        raise LunaError(errors.UNSUPPORTED_MEDIA)
    limit = ctx(request).settings.limits.publish_body_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise LunaError(errors.BODY_TOO_LARGE, f"Request body exceeds {limit} bytes")
    await send_continue(request)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise LunaError(errors.BODY_TOO_LARGE, f"Request body exceeds {limit} bytes") from None
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not
        raise LunaError(errors.INVALID_REQUEST, str(exc.__cause__ or exc)) from None
    if not raw:
        raise LunaError(errors.NO_JSON)
    try:
        body = strictjson.loads_json(raw)
    except strictjson.BadJson as exc:
        if exc.path is None:
            raise LunaError(errors.NO_JSON) from None
        raise _fail(exc.path, str(exc)) from None
    if not isinstance(body, dict):
        raise LunaError(errors.BAD_JSON, "", "value is not a valid dict")
    return body


def _fail(path: str, message: str) -> LunaError:
    return LunaError(errors.BAD_JSON, path, message)


def _validate(model: type[Body], body: dict[str, Any]) -> Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _fail(*first_error(model, exc)) from None


def _encoded(field: str, encode: Any, *args: Any) -> bytes:
    """Encode the bus message; orjson parses deeper than it writes, so too deep is 12022 here."""
    try:
        return encode(*args)  # type: ignore[no-any-return]
    except wire.PoisonMessage:
        raise _fail(field, f"nesting deeper than {wire.MAX_DEPTH} levels") from None


def now_iso(storage_time: str) -> str:
    now = datetime.now(UTC)
    if storage_time == "LOCAL":
        now = now.astimezone()
    return now.isoformat()


# One ERROR line a second at most: through a 22 s Cluster failover at ~1,000 publishes a second
# an outside pass counted 24,000 lines (the request's own INFO line still names each one).
_FAILURES = {"unknown": Throttle(1.0), "not published": Throttle(1.0)}  # one line each


_PENDING: set[str] = set()


def _report_held(outcome: str) -> None:
    """The count held back is told one interval later even if no failure follows (the last
    second of an outage went unreported: an outside pass, 9 of 50)."""
    if outcome in _PENDING:
        return
    _PENDING.add(outcome)

    def report() -> None:
        _PENDING.discard(outcome)
        held = _FAILURES[outcome].flush()
        if held:
            log.error("%d more publishes failed (%s) since the last such line", held, outcome)

    asyncio.get_running_loop().call_later(_FAILURES[outcome].interval, report)


async def _publish(request: web.Request, channel: str, data: bytes, kind: str) -> web.Response:
    context = ctx(request)
    if context.hub.shutting_down:
        # Shutdown flushes the publishes already in flight, then closes every socket: one
        # accepted now could miss them, so it is refused (not published) instead.
        raise LunaError(errors.BUS_UNAVAILABLE, SHUTTING_DOWN)
    try:
        await context.bus.publish(channel, data)
    except BusError as exc:
        outcome = "unknown" if exc.published is None else "not published"
        held = _FAILURES[outcome].due()  # each is still answered, counted and logged at INFO
        if held is None:
            _report_held(outcome)
            raise LunaError(errors.BUS_UNAVAILABLE, exc.public) from None
        log.error(
            "publish to %s failed (%s): %s%s",
            channel,
            outcome,
            exc,
            f" ({held} more failed since the last such line)" if held else "",
            extra={
                "channel": channel,
                "kind": kind,
                "publish_outcome": outcome,
                "error_code": errors.BUS_UNAVAILABLE.code,
            },
        )
        raise LunaError(errors.BUS_UNAVAILABLE, exc.public) from None
    context.metrics.publish(kind)
    return web.Response(status=204)


async def publish_events(request: web.Request) -> web.Response:
    principal = access.admit(request, access.SCOPE_PUBLISH)
    account = (
        access.token_account(request, principal) if principal else access.account_header(request)
    )
    body = _validate(PublishEvents, await read_json_object(request))
    data = _encoded(
        "events",
        wire.encode_face,
        body.events,
        body.handler_id,
        request_id(request),
        body.event_create_time,
        body.event_end_time,
    )
    return await _publish(request, ctx(request).hub.face_channel(account), data, "face")


async def publish_general(request: web.Request) -> web.Response:
    principal = access.admit(request, access.SCOPE_PUBLISH)
    body = _validate(PublishGeneral, await read_json_object(request))
    create_time = body.event_create_time
    if create_time is None:  # "" is a time as given, passed through like any other string
        create_time = now_iso(ctx(request).settings.storage_time)
    end_time = create_time if body.event_end_time is None else body.event_end_time
    access.own_general_account(principal, body.account_id)
    data = _encoded(
        "event",
        wire.encode_general,
        body.event,
        body.event_type,
        body.account_id,
        create_time,
        end_time,
    )
    return await _publish(request, ctx(request).hub.general_channel, data, "general")
