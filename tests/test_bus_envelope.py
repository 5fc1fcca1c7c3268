"""Bus messages are brought to what a frame says before any filter judges them.

Found by an outside tester: msgpack NaN/Infinity were filtered on their original value but sent
as null (``event.n__lt:numeric=0`` received ``{"n": null}``); envelope fields of the wrong type
(``event_type: 5``, ``account_id: ["x"]``, ``handler_id: {}``) were delivered as-is; a msgpack
map with the keys ``1`` and ``"1"`` produced a frame with a duplicate key. Messages go through a
real redis-server, as luna-handlers would put them there.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import msgpack
import orjson
import pytest

from .conftest import LiveApp
from .helpers import (
    RedisServer,
    account,
    assert_poison_skipped,
    face_event,
    face_message,
)
from .helpers import strict_json as strict

GENERAL = "luna-sender-general-events"


def _general(event: dict[str, Any], **envelope: Any) -> bytes:
    return orjson.dumps({"event": event, "event_type": "t", **envelope})


async def _ids(ws: Any, until: str) -> list[Any]:
    got = []
    while True:
        frame = strict((await ws.receive(timeout=10)).data)
        got.append(frame)
        if frame["event"].get("id") == until:
            return got


async def test_msgpack_non_finite_floats_are_null_for_filters_too(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    admin = redis_server.client()
    params = {
        "lt": {"event.n__lt:numeric": "0"},
        "nin": {"event.n__nin:numeric": "5"},
        "gt": {"event.n__gt:numeric": "0"},
        "null": {"event.n": "none"},
    }
    sockets = {name: app.ws("/ws/general", params=p) for name, p in params.items()}
    opened = {name: await cm.__aenter__() for name, cm in sockets.items()}
    try:
        for n, value in enumerate((-math.inf, math.inf, math.nan)):
            admin.publish(
                GENERAL, msgpack.packb({"event": {"id": f"x{n}", "n": value}, "event_type": "t"})
            )
        admin.publish(GENERAL, _general({"id": "end", "n": None}))
        admin.publish(GENERAL, _general({"id": "end", "n": -1}))
        admin.publish(GENERAL, _general({"id": "end", "n": 1}))
        got = {name: await _ids(ws, "end") for name, ws in opened.items()}
    finally:
        for cm in sockets.values():
            await cm.__aexit__(None, None, None)
    # What a subscriber receives is null, and null never passes lt/gt/nin (docs/filters.md).
    assert [f["event"]["n"] for f in got["lt"]] == [-1]
    assert [f["event"]["n"] for f in got["gt"]] == [1]
    assert [f["event"]["n"] for f in got["nin"]] == [-1]
    assert [(f["event"]["id"], f["event"]["n"]) for f in got["null"]] == [
        ("x0", None),
        ("x1", None),
        ("x2", None),
        ("end", None),
    ]


def _face_poison() -> list[bytes]:
    def face(**envelope: Any) -> bytes:
        msg = orjson.loads(face_message([face_event(id="poison")]))
        msg.update(envelope)
        return orjson.dumps(msg)

    return [
        face(handler_id=5),
        face(handler_id={"a": 1}),
        face(**{"Luna-Request-Id": {"a": 1}}),
        face(event_create_time=1.5),
        face(event_end_time=["t"]),
        face(handler_id=True),
        msgpack.packb({"events": [{1: "int", "1": "str"}], "handler_id": "h"}),
        msgpack.packb({"events": [{"id": "poison", "raw": b"\x00"}], "handler_id": "h"}),
    ]


def _general_poison() -> list[bytes]:
    return [
        _general({"id": "poison"}, event_type=5),
        orjson.dumps({"event": {"id": "poison"}, "event_type": ["t"]}),
        _general({"id": "poison"}, account_id=["x"]),
        _general({"id": "poison"}, account_id=7),
        _general({"id": "poison"}, event_create_time={"a": 1}),
        _general({"id": "poison"}, event_end_time=False),
        msgpack.packb({"event": {1: "int", "1": "str"}, "event_type": "t"}),
    ]


@pytest.mark.parametrize("kind", ["face", "general"])
async def test_wrongly_typed_envelopes_are_poison(
    live_app_factory: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    poison = _face_poison() if kind == "face" else _general_poison()
    good = (
        (lambda i: face_message([face_event(ok=i)]))
        if kind == "face"
        else (lambda i: _general({"ok": i}))
    )
    await assert_poison_skipped(app, redis_server, kind, poison, good, caplog)


async def test_missing_and_null_optional_fields_are_tolerated(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """The producers' format: strings, account_id string or null, missing optional keys."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    admin = redis_server.client()
    async with app.ws(account=acc) as face, app.ws("/ws/general") as general:
        admin.publish(f"luna-sender:{acc}", orjson.dumps({"events": [{"id": "bare"}]}))
        admin.publish(GENERAL, orjson.dumps({"event": {"id": "bare"}, "account_id": None}))
        admin.publish(
            GENERAL,
            msgpack.packb({"event": {"id": "packed"}, "event_type": "t", "account_id": "a"}),
        )
        frame = strict((await face.receive(timeout=10)).data)
        assert frame == {
            "event": {"id": "bare"},
            "handler_id": None,
            "event-create-time": None,
            "event-end-time": None,
            "Luna-Request-id": None,
        }
        frame = strict((await general.receive(timeout=10)).data)
        assert frame == {
            "event": {"id": "bare"},
            "event_type": None,
            "account_id": None,
            "event-create-time": None,
            "event-end-time": None,
        }
        frame = strict((await general.receive(timeout=10)).data)
        assert frame["event"] == {"id": "packed"} and frame["account_id"] == "a"
