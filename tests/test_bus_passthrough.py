"""A face event goes out as the producer wrote it, decoded only as far as the filters read.

The envelope splices the event's own bytes (spec Part 2: the Sender forwards the event, it does
not re-serialise it), so what luna-handlers wrote with ``ujson.dumps`` (escaped slashes, raw
UTF-8, six-digit floats) reaches the subscriber byte for byte. What no frame may carry still
never goes out: bytes that are not UTF-8, an event that is not an object, nesting past the
parser's bound. Messages go through a real redis-server and real websockets.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import orjson
import pytest

from luna_sender.delivery import matching
from luna_sender.delivery.groups import GroupSet, face_index
from luna_sender.filters.base import Limits
from luna_sender.filters.events import compile_face
from luna_sender.wire import READS_ALL, READS_HEAD, READS_NOTHING

from .conftest import LiveApp
from .helpers import RedisServer, account, assert_poison_skipped, face_event, face_message

HANDLER = "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
TAIL = (
    ',"handler_id":"' + HANDLER + '","event-create-time":"2026-11-23T10:00:00+00:00",'
    '"event-end-time":null,"Luna-Request-id":"r"}'
).encode()

# Events as a producer may write them, each unlike what orjson would write back.
EVENTS = [
    # ujson.dumps(..., ensure_ascii=False): escaped slashes, raw UTF-8
    '{"event_id":"e1","url":"\\/6\\/events\\/e1","source":"cam-1","user_data":"Москва"}',
    # a six-digit float, an exponent, a 100-bit integer, an escaped non-ASCII character
    '{"event_id":"e2","source":"cam-1","meta":{"ts":1700000000.000000,"n":1E5,'
    '"big":1267650600228229401496703205376,"s":"\\u00e9"}}',
    # stdlib json.dumps's spacing, and the face attributes a full-event filter reads
    '{"event_id": "e3", "source": "cam-1", "face_attributes": {"basic_attributes": {"age": 40}}}',
]


def _message(events: list[str]) -> bytes:
    return (
        '{"handler_id":"' + HANDLER + '","Luna-Request-Id":"r","events":[' + ",".join(events) + "],"
        '"event_create_time":"2026-11-23T10:00:00+00:00","event_end_time":null}'
    ).encode()


async def _frames(ws: Any, n: int) -> list[bytes]:
    return [(await ws.receive(timeout=10)).data.encode() for _ in range(n)]


async def test_face_events_are_forwarded_byte_for_byte(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """Where no filter of the account reads beyond the head (nothing, the source), the event's
    own bytes go out; where one reads the whole event (age), the account's events are decoded
    whole and serialised again, as 0.1 did: the same JSON in orjson's spelling."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    head, whole = account(), account()
    queries = {
        "all": (head, None),
        "source": (head, {"sources": "cam-1"}),
        "whole-all": (whole, None),
        "age": (whole, {"age__gte": "30"}),
    }
    sockets = {name: app.ws(account=a, params=q) for name, (a, q) in queries.items()}
    opened = {name: await cm.__aenter__() for name, cm in sockets.items()}
    try:
        for acc in (head, whole):
            redis_server.client().publish(f"luna-sender:{acc}", _message(EVENTS))
        got = {name: await _frames(ws, 1 if name == "age" else 3) for name, ws in opened.items()}
    finally:
        for cm in sockets.values():
            await cm.__aexit__(None, None, None)
    expected = [b'{"event":' + event.encode() + TAIL for event in EVENTS]
    assert got["all"] == expected
    assert got["source"] == expected
    assert orjson.loads(got["all"][1])["event"]["meta"]["s"] == "é"
    assert got["whole-all"] == [orjson.dumps(orjson.loads(frame)) for frame in expected]
    assert got["age"] == got["whole-all"][2:]  # age 40 >= 30


async def test_msgpack_face_events_are_still_written_as_json(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """A msgpack message has no JSON bytes to forward: its events are serialised."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    body = {"handler_id": "h", "events": [{"source": "cam-1", "n": 1.5}]}
    async with app.ws(account=acc, params={"sources": "cam-1"}) as ws:
        redis_server.client().publish(f"luna-sender:{acc}", msgpack.packb(body))
        frame = (await ws.receive(timeout=10)).data.encode()
    assert frame.startswith(b'{"event":{"source":"cam-1","n":1.5},"handler_id":"h"')


def _unsendable() -> list[bytes]:
    good = orjson.dumps(face_event(id="poison")).decode()

    def odd(inner: bytes) -> bytes:  # bytes a str cannot hold, put in place of a string's
        return _message([good[:-1] + ',"s":"@@"}']).replace(b"@@", inner)

    return [
        odd(b"\xff"),  # not UTF-8
        odd(b"\xed\xa0\x80"),  # a surrogate, UTF-8-encoded
        odd(b"\\ud800"),  # a lone surrogate escape
        _message(["1"]),  # an event that is not an object
        _message(['"text"']),
        _message([good, "[]"]),
        _message([good[:-1] + ',"deep":' + "[" * 1100 + "]" * 1100 + "}"]),
        _message([good + ","]),  # a trailing comma
        _message([good[:-1] + ',"n":NaN}']),
    ]


@pytest.mark.parametrize("query", [None, {"sources": "cam-1"}, {"age__gte": "0"}])
async def test_what_no_frame_may_carry_is_still_poison(
    live_app_factory: Any,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    query: dict[str, str] | None,
) -> None:
    """Whatever the socket's filter reads (nothing, the head, the whole event), such a message
    is skipped and counted, never sent."""
    caplog.set_level(logging.DEBUG)
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)

    def good(i: int) -> bytes:
        attributes = {"basic_attributes": {"age": 9}}
        return face_message([face_event(ok=i, source="cam-1", face_attributes=attributes)])

    await assert_poison_skipped(
        app, redis_server, "face", _unsendable(), good, caplog, params=query
    )


def _reads(query: list[tuple[str, str]]) -> int:
    return matching.reads_of(compile_face(query, Limits()))


def test_each_filter_says_how_much_of_the_event_it_reads() -> None:
    assert _reads([]) == READS_NOTHING
    assert _reads([("handler_ids", HANDLER)]) == READS_NOTHING  # the message's field
    for name, value in [
        ("sources", "cam-1"),
        ("stream_ids", HANDLER),
        ("tags", "a"),
        ("user_data", "x"),
        ("cities", "Moscow"),
        (
            "geo_position",
            "origin_longitude,37.6,origin_latitude,55.75,longitude_delta,0.2,latitude_delta,0.1",
        ),
    ]:
        assert _reads([(name, value)]) == READS_HEAD, name
    for name, value in [
        ("age__gte", "30"),
        ("matching_candidates_labels", "x"),
        ("object_similarity__gte", "0.5"),
        ("liveness", "1"),
        ("meta.a", "1"),
    ]:
        assert _reads([(name, value)]) == READS_ALL, name
    assert _reads([("sources", "cam-1"), ("age__gte", "30")]) == READS_ALL


class _Conn:
    def __init__(self, query: list[tuple[str, str]]) -> None:
        self.filter = compile_face(query, Limits())


def test_an_account_reads_as_far_as_its_most_reading_group() -> None:
    groups = GroupSet(face_index())
    everything, source, age = _Conn([]), _Conn([("sources", "c")]), _Conn([("age__gte", "3")])
    groups.add(everything)  # type: ignore[arg-type]
    assert groups.reads == READS_NOTHING
    groups.add(source)  # type: ignore[arg-type]
    assert groups.reads == READS_HEAD
    groups.add(age)  # type: ignore[arg-type]
    twin = _Conn([("age__gte", "3")])
    groups.add(twin)  # type: ignore[arg-type]
    groups.remove(age)  # type: ignore[arg-type]
    assert groups.reads == READS_ALL  # its twin still reads the whole event
    groups.remove(twin)  # type: ignore[arg-type]
    assert groups.reads == READS_HEAD
    groups.remove(source)  # type: ignore[arg-type]
    assert groups.reads == READS_NOTHING


def _nested(event_id: str, depth: int) -> bytes:
    return _message(['{"event_id":"' + event_id + '","d":' + "[" * depth + "]" * depth + "}"])


async def _ids_until_last(ws: Any) -> list[str]:
    got = []
    while not got or got[-1] != "last":
        frame = orjson.loads((await ws.receive(timeout=10)).data)
        if "event" in frame:
            got.append(frame["event"]["event_id"])
    return got


async def test_a_deep_event_reaches_live_recovering_and_replaying_sockets_alike(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """An outside pass: events nested ~980 levels reached the plain sockets and were silently
    missing from a recovering socket and from its replay (``recovered: true``): msgspec's bound
    follows the stack depth where it runs, and the recorder and a replay read the message again
    elsewhere. A recorded channel's reads all take orjson's fixed bounds (0.1's: 254 levels for
    the envelope), so the three agree; an unrecorded channel's plain sockets get the event as
    written."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    acc, unrecorded = account(), account()
    admin = redis_server.client()
    depths = [100, 250, 251, 252, 253, 254, 500, *range(960, 1000, 2)]
    async with (
        app.ws(account=acc) as plain,
        app.ws(account=acc, params={"recover": "1"}) as rec,
        app.ws(account=unrecorded) as alone,
    ):
        admin.publish(f"luna-sender:{acc}", _message(['{"event_id":"first"}']))
        first = orjson.loads((await rec.receive(timeout=10)).data)["offset"]
        await plain.receive(timeout=10)
        for name in (acc, unrecorded):
            for depth in depths:
                admin.publish(f"luna-sender:{name}", _nested(f"d{depth}", depth))
            admin.publish(f"luna-sender:{name}", _nested("last", 1))
        live = await _ids_until_last(plain)
        assert await _ids_until_last(rec) == live
        alone_ids = await _ids_until_last(alone)  # as written, up to msgspec's bound (~990)
        assert alone_ids[:7] == [f"d{d}" for d in depths[:7]] and alone_ids[-1] == "last"
    assert live == ["d100", "d250", "d251", "d252", "last"]  # 0.1's bound
    async with app.ws(account=acc, params={"since": first}) as again:
        assert await _ids_until_last(again) == live


async def test_a_deep_key_no_frame_carries_does_not_stop_the_events(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """An outside pass: an envelope key nested past msgspec's bound (~990, which moves with the
    stack) made the message poison on the forwarded path, where 0.1 (orjson: 1,024) delivered
    its events, the key never being sent. Past that bound the message takes 0.1's path."""
    app: LiveApp = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    deep = "[" * 1010 + "]" * 1010
    body = '{"handler_id":"h","events":[{"event_id":"x"}],"zz":' + deep + "}"
    async with app.ws(account=acc) as ws:
        redis_server.client().publish(f"luna-sender:{acc}", body.encode())
        frame = orjson.loads((await ws.receive(timeout=10)).data)
    assert frame["event"] == {"event_id": "x"} and "zz" not in frame


def test_a_head_nested_to_the_bound_is_poison_not_a_crash() -> None:
    """msgspec's nesting bound moves with the stack, and the head is decoded further up than
    the strict pass ran: a head field nested near the bound must be poison (the hub skips the
    message), never a RecursionError out of the fan-out's loop turn."""
    from luna_sender import wire

    def message(depth: int) -> bytes:
        return _message(['{"event_id":"x","location":' + "[" * depth + "]" * depth + "}"])

    def passes(depth: int) -> bool:
        try:
            return wire.decode_face(message(depth), READS_HEAD).raw
        except wire.PoisonMessage:  # past msgspec's bound: orjson's path, which refuses it
            return False

    low, high = 1, 3000  # the deepest head the strict pass keeps as bytes, here
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if passes(mid) else (low, mid - 1)
    msg = wire.decode_face(message(low), READS_HEAD)
    assert msg.raw and low > 500

    def further_up(frames: int) -> Any:
        return further_up(frames - 1) if frames else msg.subjects(READS_HEAD)

    with pytest.raises(wire.PoisonMessage):
        further_up(300)
