"""General events end to end: publish route and producers' Redis format in, envelopes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from .conftest import LiveApp
from .helpers import account, assert_silent, recv_json

CHANNEL = "luna-sender-general-events"


def general(event: dict[str, Any], event_type: str = "t", account_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "event": event,
            "event_type": event_type,
            "account_id": account_id,
            "event_create_time": "2026-11-23T10:00:00+00:00",
            "event_end_time": "2026-11-23T10:00:01+00:00",
        }
    )


async def test_publish_route_envelope(memory_app: LiveApp) -> None:
    acc = account()
    async with memory_app.ws("/ws/general") as ws:
        async with memory_app.session.post(
            memory_app.url("/publish/general"),
            json={
                "event": {"count": 3, "zone": {"id": "z1"}},
                "event_type": "crowd",
                "account_id": acc,
            },
        ) as resp:
            assert resp.status == 204
        got = await recv_json(ws)
    assert list(got) == ["event", "event_type", "account_id", "event-create-time", "event-end-time"]
    assert got["event"] == {"count": 3, "zone": {"id": "z1"}}
    assert got["event_type"] == "crowd" and got["account_id"] == acc
    created = datetime.fromisoformat(got["event-create-time"])
    assert created.utcoffset() is not None
    assert got["event-end-time"] == got["event-create-time"]


async def test_redis_producer_format_and_type_account_filters(
    redis_app: LiveApp, redis_server
) -> None:
    a, b = account(), account()
    r = aioredis.from_url(redis_server.url)
    async with (
        redis_app.ws("/ws/general", params={"event_type": "crowd,line"}) as typed,
        redis_app.ws("/2/ws/general", params={"account_id": a}) as only_a,
        redis_app.ws("/ws/general") as everything,
    ):
        await r.publish(CHANNEL, general({"n": 1}, "other", b))
        await r.publish(CHANNEL, general({"n": 2}, "line", a))
        assert (await recv_json(typed))["event"] == {"n": 2}
        assert (await recv_json(only_a))["event"] == {"n": 2}
        assert [(await recv_json(everything))["event"]["n"] for _ in range(2)] == [1, 2]
        await assert_silent(typed)
        await assert_silent(only_a)
    await r.aclose()


async def test_two_processes_share_general_events(redis_server) -> None:
    import aiohttp

    from .helpers import Service

    one = Service("--redis-url", redis_server.url)
    two = Service("--redis-url", redis_server.url)
    try:
        async with aiohttp.ClientSession() as session:
            async with (
                session.ws_connect(one.ws_url + "/ws/general?event_type=x") as w1,
                session.ws_connect(two.ws_url + "/1/ws/general?event.k:integer=5") as w2,
            ):
                async with session.post(
                    two.url + "/1/publish/general", json={"event": {"k": 5}, "event_type": "x"}
                ) as resp:
                    assert resp.status == 204
                assert (await recv_json(w1))["event"] == {"k": 5}
                assert (await recv_json(w2))["event"] == {"k": 5}
    finally:
        assert one.terminate() == 0
        assert two.terminate() == 0


BASE_EVENT = {
    "source": "cam-1",
    "stream_id": "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a",
    "location": {
        "city": "Moscow",
        "area": "CAO",
        "district": "mitino",
        "street": "arbat",
        "house_number": "1/2",
        "geo_position": {"longitude": 36.616, "latitude": 55.752},
    },
}


@pytest.mark.parametrize(
    ("params", "matching", "other"),
    [
        ({"sources": "cam-1"}, {}, {"source": "cam-2"}),
        ({"sources": "null"}, {"source": None}, {}),
        (
            {"stream_ids": "8B8B5937-2E9C-4E8B-A7A7-5CAF86621B5A"},
            {},
            {"stream_id": "11111111-2e9c-4e8b-a7a7-5caf86621b5a"},
        ),
        (
            {"geo_position": "origin_longitude,36.61,origin_latitude,55.75"},
            {},
            {"location": {"geo_position": {"longitude": 36.7, "latitude": 55.752}}},
        ),
        (
            {
                "geo_position": "origin_longitude,36,origin_latitude,55,longitude_delta,1,latitude_delta,1"
            },
            {},
            {"location": {"geo_position": {"longitude": 38, "latitude": 55}}},
        ),
        ({"cities": "Moscow,Paris"}, {}, {"location": {"city": "Rome"}}),
        ({"areas": "CAO"}, {}, {"location": {"area": "SAO"}}),
        ({"districts": "mitino"}, {}, {"location": {}}),
        ({"streets": "arbat"}, {}, {"location": {"street": "tverskaya"}}),
        ({"house_numbers": "1/2"}, {}, {"location": {"house_number": "3"}}),
    ],
)
async def test_location_stream_source_filters(
    memory_app: LiveApp, params: dict[str, str], matching: dict[str, Any], other: dict[str, Any]
) -> None:
    good = {**BASE_EVENT, **matching, "id": "good"}
    bad = {**BASE_EVENT, **other, "id": "bad"}
    async with memory_app.ws("/ws/general", params=params) as ws:
        for event in (bad, good):
            async with memory_app.session.post(
                memory_app.url("/publish/general"), json={"event": event, "event_type": "t"}
            ) as resp:
                assert resp.status == 204
        assert (await recv_json(ws))["event"]["id"] == "good"
        await assert_silent(ws)


@pytest.mark.parametrize(
    ("body", "path", "status", "code"),
    [
        ({"event_type": "t"}, "event", 400, 12022),
        ({"event": {}}, "event_type", 400, 12022),
        ({"event": [], "event_type": "t"}, "event", 400, 12022),
        ({"event": {}, "event_type": 5}, "event_type", 400, 12022),
        ({"event": {}, "event_type": ""}, "event_type", 400, 12022),
        # Plain strings (contract Part 1 "Accounts"): only the type and the size are checked.
        ({"event": {}, "event_type": "t", "account_id": 5}, "account_id", 400, 12022),
        ({"event": {}, "event_type": "t", "account_id": "a" * 257}, "account_id", 400, 12022),
        ({"event": {}, "event_type": "t", "event_create_time": 1}, "event_create_time", 400, 12022),
        (
            {"event": {}, "event_type": "t", "event_end_time": "x" * 257},
            "event_end_time",
            400,
            12022,
        ),
        ({"event": {}, "event_type": "t", "extra": 1}, "extra", 400, 12022),
    ],
)
async def test_general_publish_validation(
    memory_app: LiveApp, body: dict[str, Any], path: str, status: int, code: int
) -> None:
    async with memory_app.session.post(memory_app.url("/publish/general"), json=body) as resp:
        assert resp.status == status
        err = await resp.json()
    assert err["error_code"] == code
    assert err["detail"].startswith(f"Failed to validate input json. Path: '{path}',  message: ")


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        (
            {"event": {}, "event_type": ""},
            "event_type",
            "ensure this value has at least 1 characters",
        ),
        (
            {"event": {}, "event_type": "t" * 129},
            "event_type",
            "ensure this value has at most 128 characters",
        ),
        (
            {"event": {}, "event_type": "t", "account_id": "a" * 257},
            "account_id",
            "ensure this value has at most 256 characters",
        ),
        ({"event": {}, "event_type": 5}, "event_type", "str type expected"),
        ({"event_type": "t"}, "event", "field required"),
    ],
)
async def test_general_publish_errors_use_the_originals_words(
    memory_app: LiveApp, body: dict[str, Any], path: str, message: str
) -> None:
    """docs/compatibility.md promises pydantic v1's wording; a field with both bounds said
    "1 to 128 characters", which no v1 message says (an outside pass)."""
    async with memory_app.session.post(memory_app.url("/publish/general"), json=body) as resp:
        assert resp.status == 400
        err = await resp.json()
    assert err["error_code"] == 12022
    assert err["detail"] == f"Failed to validate input json. Path: '{path}',  message: '{message}'"


async def test_general_publish_media_and_json_errors(memory_app: LiveApp) -> None:
    url = memory_app.url("/publish/general")
    async with memory_app.session.post(url, data="x", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415 and (await r.json())["error_code"] == 12024
    async with memory_app.session.post(
        url, data="{bad", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and (await r.json())["error_code"] == 12002
    async with memory_app.session.post(
        url, data="", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and (await r.json())["error_code"] == 12002
