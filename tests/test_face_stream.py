"""The face/body event stream end to end: producers' Redis format in, envelopes out."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import redis.asyncio as aioredis

from .conftest import LiveApp
from .helpers import Service, account, assert_silent, face_event, face_message, recv_json


async def test_redis_message_reaches_subscriber_with_envelope(
    redis_app: LiveApp, redis_server
) -> None:
    acc = account()
    r = aioredis.from_url(redis_server.url)
    async with redis_app.ws(account=acc) as ws:
        events = [face_event(source="a"), face_event(source="b")]
        await r.publish(f"luna-sender:{acc}", face_message(events, handler_id="h-1"))
        first, second = await recv_json(ws), await recv_json(ws)
    await r.aclose()
    assert list(first) == [
        "event",
        "handler_id",
        "event-create-time",
        "event-end-time",
        "Luna-Request-id",
    ]
    assert first["event"] == events[0] and second["event"] == events[1]
    assert first["handler_id"] == "h-1"
    assert first["Luna-Request-id"] == "1536751345,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
    assert first["event-create-time"] == "2026-11-23T10:00:00.000000+00:00"


async def test_msgpack_body_accepted(redis_app: LiveApp, redis_server) -> None:
    import msgpack

    acc = account()
    r = aioredis.from_url(redis_server.url)
    async with redis_app.ws(account=acc) as ws:
        event = face_event(source="mp")
        body = msgpack.packb(orjson.loads(face_message([event])))
        await r.publish(f"luna-sender:{acc}", body)
        assert (await recv_json(ws))["event"] == event
    await r.aclose()


async def test_accounts_are_isolated(redis_app: LiveApp, redis_server) -> None:
    a, b = account(), account()
    r = aioredis.from_url(redis_server.url)
    async with redis_app.ws(account=a) as ws_a, redis_app.ws(account=b) as ws_b:
        await r.publish(f"luna-sender:{a}", face_message([face_event(user_data="for-a")]))
        await r.publish(f"luna-sender:{b}", face_message([face_event(user_data="for-b")]))
        assert (await recv_json(ws_a))["event"]["user_data"] == "for-a"
        assert (await recv_json(ws_b))["event"]["user_data"] == "for-b"
        await assert_silent(ws_a)
        await assert_silent(ws_b)
    await r.aclose()


async def test_missing_and_bad_account_header(memory_app: LiveApp) -> None:
    async with memory_app.session.get(memory_app.url("/ws")) as resp:
        assert resp.status == 403
        assert (await resp.json())["error_code"] == 29001
    async with memory_app.session.get(
        memory_app.url("/ws"), headers={"Luna-Account-Id": "nope"}
    ) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error_code"] == 12012 and "Luna-Account-Id" in body["detail"]


async def test_versioned_routes_are_the_same_endpoint(memory_app: LiveApp) -> None:
    acc = account()
    async with (
        memory_app.ws("/1/ws", account=acc) as ws1,
        memory_app.ws("/2/ws", account=acc) as ws2,
        memory_app.ws("/ws", account=acc) as ws0,
    ):
        async with memory_app.session.post(
            memory_app.url("/2/publish"),
            headers={"Luna-Account-Id": acc},
            json={
                "events": [{"k": 1}],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            },
        ) as resp:
            assert resp.status == 204
        for ws in (ws0, ws1, ws2):
            assert (await recv_json(ws))["event"] == {"k": 1}


async def test_publish_route_across_two_processes(redis_server) -> None:
    acc = account()
    one = Service("--redis-url", redis_server.url)
    two = Service("--redis-url", redis_server.url)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            headers = {"Luna-Account-Id": acc}
            async with (
                session.ws_connect(one.ws_url + "/ws?sources=cam-7", headers=headers) as w1,
                session.ws_connect(two.ws_url + "/2/ws?sources=cam-7", headers=headers) as w2,
                session.ws_connect(two.ws_url + "/ws?sources=other", headers=headers) as w3,
            ):
                body = {
                    "events": [face_event(source="cam-7")],
                    "handler_id": "h",
                    "event_create_time": "2026-01-01T00:00:00Z",
                    "event_end_time": "2026-01-01T00:00:01Z",
                }
                rid = "1700000000,8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
                async with session.post(
                    one.url + "/publish", json=body, headers={**headers, "Luna-Request-Id": rid}
                ) as resp:
                    assert resp.status == 204, await resp.text()
                for ws in (w1, w2):
                    got = await recv_json(ws)
                    assert got["event"]["source"] == "cam-7"
                    assert got["Luna-Request-id"] == rid
                    assert got["handler_id"] == "h"
                await assert_silent(w3)
    finally:
        assert one.terminate() == 0
        assert two.terminate() == 0


async def test_thousand_subscribers_mixed_filters(memory_app: LiveApp) -> None:
    acc = account()
    sources = [f"cam-{i}" for i in range(10)]
    sockets = []
    try:
        for i in range(1000):
            params = {"sources": sources[i % 10]} if i % 2 else {}
            sockets.append((i, await memory_app.ws(account=acc, params=params)))
        events = [face_event(source=s) for s in sources]
        async with memory_app.session.post(
            memory_app.url("/publish"),
            headers={"Luna-Account-Id": acc},
            json={
                "events": events,
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            },
        ) as resp:
            assert resp.status == 204

        async def check(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            if i % 2:
                got = await recv_json(ws, 20)
                assert got["event"]["source"] == sources[i % 10]
            else:
                got = [(await recv_json(ws, 20))["event"]["source"] for _ in sources]
                assert got == sources

        await asyncio.gather(*(check(i, ws) for i, ws in sockets))
    finally:
        await asyncio.gather(*(ws.close() for _, ws in sockets))
