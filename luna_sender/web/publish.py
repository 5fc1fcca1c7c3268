"""The publish routes: validate, then publish in exactly the producers' Redis format.

Publishing goes through the bus, never straight to local sockets, so every instance sharing the
bus (this one included) delivers the event the same way as one from luna-handlers. Validation
messages follow the original's pydantic-v1 wording ("field required", ...) under the 12022 code.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from luna_sender import errors, wire
from luna_sender.bus import BusError
from luna_sender.errors import LunaError
from luna_sender.web import access
from luna_sender.web.context import ctx, request_id
from luna_sender.web.streams import account_header

log = logging.getLogger("luna_sender.publish")
SHUTTING_DOWN = "the service is shutting down, the event was not published"
JSON_TYPES = ("application/json",)
EVENT_TYPE_MAX = 128
# Free-form strings the original passes through unchanged (account_id, the two times): only a
# size cap, so a hostile body cannot park megabytes in every subscriber's envelope.
PASS_THROUGH_MAX = 256


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
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise LunaError(errors.BODY_TOO_LARGE, f"Request body exceeds {limit} bytes") from None
    if not raw:
        raise LunaError(errors.NO_JSON)
    try:
        body = wire.loads_json(raw)
    except wire.BadJson as exc:
        if exc.path is None:
            raise LunaError(errors.NO_JSON) from None
        raise _fail(exc.path, str(exc)) from None
    if not isinstance(body, dict):
        raise LunaError(errors.BAD_JSON, "", "value is not a valid dict")
    return body


def _fail(path: str, message: str) -> LunaError:
    return LunaError(errors.BAD_JSON, path, message)


def _require_str(body: dict[str, Any], key: str, required: bool = True) -> str | None:
    if key not in body or (body[key] is None and not required):
        if required:
            raise _fail(key, "field required")
        return None
    value = body[key]
    if not isinstance(value, str):
        raise _fail(key, "str type expected")
    return value


def _plain_str(body: dict[str, Any], key: str, required: bool) -> str | None:
    """A string the original never parses (the client's doctest sends the literal "string")."""
    value = _require_str(body, key, required)
    if value is not None and len(value) > PASS_THROUGH_MAX:
        raise _fail(key, f"ensure this value has at most {PASS_THROUGH_MAX} characters")
    return value


def _no_extra(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise _fail(key, "extra fields not permitted")


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
        log.error(
            "publish to %s failed (%s): %s",
            channel,
            outcome,
            exc,
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
    account = access.token_account(request, principal) if principal else account_header(request)
    body = await read_json_object(request)
    _no_extra(body, {"events", "handler_id", "event_create_time", "event_end_time"})
    if "events" not in body:
        raise _fail("events", "field required")
    events = body["events"]
    if not isinstance(events, list):
        raise _fail("events", "value is not a valid list")
    if not events:
        raise _fail("events", "ensure this value has at least 1 items")
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise _fail(f"events.{i}", "value is not a valid dict")
    handler_id = _require_str(body, "handler_id")
    create_time = _plain_str(body, "event_create_time", True)
    end_time = _plain_str(body, "event_end_time", True)
    data = _encoded(
        "events", wire.encode_face, events, handler_id, request_id(request), create_time, end_time
    )
    return await _publish(request, ctx(request).hub.face_channel(account), data, "face")


async def publish_general(request: web.Request) -> web.Response:
    principal = access.admit(request, access.SCOPE_PUBLISH)
    body = await read_json_object(request)
    _no_extra(body, {"event", "event_type", "account_id", "event_create_time", "event_end_time"})
    if "event" not in body:
        raise _fail("event", "field required")
    if not isinstance(body["event"], dict):
        raise _fail("event", "value is not a valid dict")
    event_type = _require_str(body, "event_type")
    assert event_type is not None
    if not event_type or len(event_type) > EVENT_TYPE_MAX:
        raise _fail("event_type", f"ensure this value has 1 to {EVENT_TYPE_MAX} characters")
    account_id = _plain_str(body, "account_id", required=False)
    storage_time = ctx(request).settings.storage_time
    create_time = _plain_str(body, "event_create_time", False)
    if create_time is None:
        create_time = now_iso(storage_time)
    end_time = _plain_str(body, "event_end_time", False)
    if end_time is None:
        end_time = create_time
    access.own_general_account(principal, account_id)
    data = _encoded(
        "event", wire.encode_general, body["event"], event_type, account_id, create_time, end_time
    )
    return await _publish(request, ctx(request).hub.general_channel, data, "general")
