"""Hostile bodies and bus messages: every bad body is a LUNA 4xx, every bad bus message is poison,
and every frame the service sends parses with a strict RFC 8259 parser.

Publish bodies go through the real HTTP route; bus messages are put on a real redis-server by a
plain Redis client, as luna-handlers (or anyone else on Redis) would.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgpack
import pytest

from luna_sender.web import strictjson

from .conftest import LiveApp
from .helpers import (
    RedisServer,
    account,
    assert_poison_skipped,
    face_event,
    face_message,
)
from .helpers import strict_json as strict

TIMES = {"event_create_time": "2026-01-01T00:00:00Z", "event_end_time": "2026-01-01T00:00:01Z"}


def nested(depth: int) -> str:
    """An object value nested ``depth`` levels (the value itself counts as one)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def face_body(event_text: str) -> bytes:
    return (
        '{"events":[' + event_text + '],"handler_id":"h",'
        '"event_create_time":"2026-01-01T00:00:00Z",'
        '"event_end_time":"2026-01-01T00:00:01Z"}'
    ).encode()


def general_body(event_text: str) -> bytes:
    return ('{"event":' + event_text + ',"event_type":"t"}').encode()


ROUTES = {"/publish": face_body, "/publish/general": general_body}
# (event text, expected error code, expected path under the event, for face /publish)
BAD_EVENTS = {
    "deep-1000": (nested(1000), 12022, None),
    "deep-1100": (nested(1100), 12022, None),  # beyond what orjson even parses
    "lone-surrogate": ('{"name":"\\ud800"}', 12022, "name"),
    "lone-surrogate-key": ('{"\\udc00":1}', 12022, ""),
    "nan": ('{"x":[1,NaN]}', 12022, "x.1"),
    "infinity": ('{"x":Infinity}', 12022, "x"),
    "minus-infinity": ('{"x":-Infinity}', 12022, "x"),
    "overflowing-float": ('{"x":1e999}', 12022, "x"),
    # Integers beyond a double (309+ digits) were 12002 with no path, unlike 1e999.
    "overflowing-integer": ('{"x":[0,' + "9" * 309 + "]}", 12022, "x.1"),
    "overflowing-negative-integer": ('{"x":-' + "1" * 400 + "}", 12022, "x"),
    "integer-beyond-str-limit": ('{"x":' + "1" * 5000 + "}", 12022, "x"),
}


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [r.getMessage()[:200] for r in loud]


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_hostile_publish_bodies_answer_luna_4xx(
    memory_app: LiveApp, caplog: pytest.LogCaptureFixture, route: str, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    text, code, sub_path = BAD_EVENTS[case]
    acc = account()
    async with memory_app.ws(account=acc) as face, memory_app.ws("/ws/general") as general:
        async with memory_app.session.post(
            memory_app.url(route),
            data=ROUTES[route](text),
            headers={"Content-Type": "application/json", "Luna-Account-Id": acc},
        ) as resp:
            assert resp.status == 400, await resp.text()
            assert resp.headers["Content-Type"].startswith("application/json")
            assert resp.headers["Luna-Request-Id"]
            body = await resp.json()
        assert body["error_code"] == code
        assert set(body) == {"error_code", "desc", "detail", "link"}
        if sub_path is not None:
            prefix = "events.0" if route == "/publish" else "event"
            path = f"{prefix}.{sub_path}" if sub_path else prefix
            assert f"Path: '{path}'" in body["detail"], body["detail"]
        # Nothing went out.
        for ws in (face, general):
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.3)
    _no_errors(caplog)


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_msgpack_publish_bodies_are_4xx(memory_app: LiveApp, route: str) -> None:
    packed = msgpack.packb(
        {"events": [{"a": 1}], "event": {"a": 1}, "event_type": "t", "handler_id": "h", **TIMES}
    )
    headers = {"Luna-Account-Id": account()}
    for content_type, status, code in (
        ("application/json", 400, 12002),
        ("application/msgpack", 415, 12024),
    ):
        async with memory_app.session.post(
            memory_app.url(route), data=packed, headers={**headers, "Content-Type": content_type}
        ) as resp:
            assert resp.status == status
            assert (await resp.json())["error_code"] == code


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_deepest_sendable_body_is_delivered(memory_app: LiveApp, route: str) -> None:
    """254 levels in the body is the documented bound: accepted, delivered, strict JSON."""
    acc = account()
    path = "/ws" if route == "/publish" else "/ws/general"
    async with memory_app.ws(path, account=acc) as ws:
        # Face: body > events > event; general: body > event.
        depth = 254 - (2 if route == "/publish" else 1)
        async with memory_app.session.post(
            memory_app.url(route),
            data=ROUTES[route](nested(depth)),
            headers={"Content-Type": "application/json", "Luna-Account-Id": acc},
        ) as resp:
            assert resp.status == 204, await resp.text()
        msg = await ws.receive(timeout=5)
        assert strict(msg.data)["event"]["a"]["a"]["a"]
        async with memory_app.session.post(
            memory_app.url(route),
            data=ROUTES[route](nested(depth + 1)),
            headers={"Content-Type": "application/json", "Luna-Account-Id": acc},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error_code"] == 12022


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_big_integers_go_out_as_strict_json_numbers(memory_app: LiveApp, route: str) -> None:
    acc = account()
    path = "/ws" if route == "/publish" else "/ws/general"
    big = 2**64
    async with memory_app.ws(path, account=acc) as ws:
        text = f'{{"big":{big},"neg":-{big},"u64":{big - 1},"ok":1.5}}'
        async with memory_app.session.post(
            memory_app.url(route),
            data=ROUTES[route](text),
            headers={"Content-Type": "application/json", "Luna-Account-Id": acc},
        ) as resp:
            assert resp.status == 204
        msg = await ws.receive(timeout=5)
    event = strict(msg.data)["event"]
    # Beyond 64 bits: the nearest double (RFC 8259 section 6); 64-bit values stay exact.
    assert event == {"big": float(big), "neg": -float(big), "u64": big - 1, "ok": 1.5}


def _deep_msgpack(depth: int) -> bytes:
    """msgpack arrays nested ``depth`` levels, built by hand: msgpack's packer stops at 512."""
    return b"\x91" * (depth - 1) + b"\x90"


def _packed_face(deep: bytes) -> bytes:
    return b"\x81" + msgpack.packb("events") + b"\x91\x81" + msgpack.packb("deep") + deep


def _packed_general(deep: bytes) -> bytes:
    return (
        b"\x82"
        + msgpack.packb("event")
        + b"\x81"
        + msgpack.packb("deep")
        + deep
        + msgpack.packb("event_type")
        + msgpack.packb("t")
    )


def _face_poison() -> list[bytes]:
    base = face_message([face_event(ok="template")]).decode()
    return [
        face_body(nested(1000)),
        face_body(nested(1100)),
        base.replace('"template"', '"\\ud800"').encode(),
        base.replace('"template"', "NaN").encode(),
        base.replace('"template"', "-Infinity").encode(),
        _packed_face(_deep_msgpack(1000)),
        _packed_face(_deep_msgpack(3000)),
    ]


def _general_poison() -> list[bytes]:
    return [
        general_body(nested(1000)),
        general_body(nested(1100)),
        general_body('{"s":"\\udfff"}'),
        general_body('{"x":NaN}'),
        general_body('{"x":Infinity}'),
        _packed_general(_deep_msgpack(1000)),
        _packed_general(_deep_msgpack(3000)),
    ]


@pytest.mark.parametrize("kind", ["face", "general"])
async def test_hostile_bus_messages_are_poison(
    live_app_factory: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    poison = _face_poison() if kind == "face" else _general_poison()
    good = (
        (lambda i: face_message([face_event(ok=i)]))
        if kind == "face"
        else (lambda i: general_body(f'{{"ok":{i}}}'))
    )
    await assert_poison_skipped(app, redis_server, kind, poison, good, caplog)
    _no_errors(caplog)


@pytest.mark.parametrize("kind", ["face", "general"])
async def test_bus_values_are_made_strict(
    live_app_factory: Any, redis_server: RedisServer, kind: str
) -> None:
    """msgpack floats NaN/Infinity go out as null; JSON integers beyond 64 bits as doubles, but
    in a face event, which goes out as the producer wrote it."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    channel = f"luna-sender:{acc}" if kind == "face" else "luna-sender-general-events"
    values = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 2.5}
    if kind == "face":
        packed = msgpack.packb({"events": [values], "handler_id": "h"})
        text = face_message([{"big": 0}]).replace(b'"big":0', f'"big":{3**50}'.encode())
    else:
        packed = msgpack.packb({"event": values, "event_type": "t"})
        text = general_body(f'{{"big":{3**50}}}')
    admin = redis_server.client()
    async with app.ws("/ws" if kind == "face" else "/ws/general", account=acc) as ws:
        admin.publish(channel, packed)
        first = strict((await ws.receive(timeout=10)).data)["event"]
        admin.publish(channel, text)
        second = strict((await ws.receive(timeout=10)).data)["event"]
    assert first == {"nan": None, "inf": None, "ninf": None, "ok": 2.5}
    # A JSON face event is forwarded as written (docs/compatibility.md): its digits stay.
    assert second == {"big": 3**50 if kind == "face" else float(3**50)}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_large_non_strict_body_is_12002(memory_app: LiveApp, route: str) -> None:
    """Above strictjson.EXPLAIN_MAX_BYTES the refused body is not parsed a second time: 12002."""
    text = '{"pad":"' + "x" * (strictjson.EXPLAIN_MAX_BYTES + 1) + '","x":NaN}'
    async with memory_app.session.post(
        memory_app.url(route),
        data=ROUTES[route](text),
        headers={"Content-Type": "application/json", "Luna-Account-Id": account()},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error_code"] == 12002
