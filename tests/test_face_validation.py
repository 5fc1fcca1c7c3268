"""Malformed /ws input: HTTP 400 with a LUNA 12012 error naming the parameter; no socket opened."""

from __future__ import annotations

import aiohttp
import pytest

from .conftest import LiveApp
from .helpers import account, face_event, recv_json

U = "8b8b5937-2e9c-4e8b-a7a7-5caf86621b5a"
G = "origin_longitude,36.6,origin_latitude,55.7"

BAD: list[tuple[str, str]] = [
    ("gender", "2"),
    ("gender", "-1"),
    ("gender", "male"),
    ("gender", "1,0"),
    ("gender", ""),
    ("age__gte", "-1"),
    ("age__gte", "101"),
    ("age__lt", "abc"),
    ("age__lt", "30.5"),
    ("age__gte", ""),
    ("apparent_age__gte", "101"),
    ("apparent_age__lt", "-5"),
    ("ethnic_groups", "5"),
    ("ethnic_groups", "0"),
    ("ethnic_groups", "1,x"),
    ("liveness", "3"),
    ("liveness", "-1"),
    ("deepfake", "2"),
    ("masks", "0"),
    ("masks", "4"),
    ("emotions", "0"),
    ("emotions", "8"),
    ("emotions", "1,,2"),
    ("apparent_gender", "3"),
    ("headwear_states", "3"),
    ("backpack_states", "yes"),
    ("sleeve_lengths", "medium"),
    ("upper_clothing_colors", "teal"),
    ("lower_garment_colors", "Black"),
    ("lower_garment_types", "jeans"),
    ("shoes_colors", "red"),
    ("headwear_colors", "blue"),
    ("shoes_apparent_colors", "pink"),
    ("stream_ids", "not-a-uuid"),
    ("stream_ids", f"{U},123"),
    ("stream_ids", U[:-1]),
    ("handler_ids", "null"),
    ("handler_ids", f"{U}x"),
    ("handler_ids", ""),
    ("object_similarity__gte", "1.5"),
    ("object_similarity__lt", "-0.1"),
    ("object_similarity__gte", "nan"),
    ("object_similarity__lt", "inf"),
    ("geo_position", "origin_longitude,36.6"),
    ("geo_position", "origin_latitude,55.7"),
    ("geo_position", "origin_longitude,181,origin_latitude,55.7"),
    ("geo_position", "origin_longitude,36.6,origin_latitude,91"),
    ("geo_position", f"{G},longitude_delta,0"),
    ("geo_position", f"{G},latitude_delta,91"),
    ("geo_position", f"{G},latitude_delta"),
    ("geo_position", f"{G},radius,1"),
    ("geo_position", "origin_longitude,x,origin_latitude,55.7"),
    ("geo_position", f"{G},origin_longitude,1"),
    ("geo_position", ""),
    ("tags", "a" * 37),
    ("tags", "ok,"),
    ("sources", "a,,b"),
    ("cities", ","),
    ("user_data", "x" * 129),
    ("gender_", "1"),
    ("age__gt", "3"),
    ("age", "3"),
    ("source", "cam"),
    ("stream_id", U),
    ("event_type", "x"),
    ("account_id", U),
    ("foo", "bar"),
    ("meta.", "1"),
    ("meta.a__between", "1"),
    ("meta.a:date", "1"),
    ("meta.a:integer", "x"),
    ("meta.a__gt:boolean", "true"),
    ("meta.a__like:integer", "1"),
    ("meta.a..b", "1"),
    ("meta.a:numeric", "nan"),
    ("meta.a b", "1"),
]


def test_table_is_large_enough() -> None:
    assert len(BAD) >= 60


async def _expect_400(app: LiveApp, path: str, params: list[tuple[str, str]], name: str) -> None:
    headers = {"Luna-Account-Id": account()}
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        async with app.session.ws_connect(app.url(path), params=params, headers=headers):
            pass
    assert info.value.status == 400
    async with app.session.get(app.url(path), params=params, headers=headers) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["error_code"] == 12012
    assert body["desc"] == "Bad/incomplete input data"
    assert body["detail"] == f"Bad query parameters '{name}'"


@pytest.mark.parametrize(("name", "value"), BAD)
async def test_bad_parameter(memory_app: LiveApp, name: str, value: str) -> None:
    await _expect_400(memory_app, "/ws", [(name, value)], name)


async def test_repeated_parameter_and_list_limit(live_app_factory) -> None:
    app = await live_app_factory(limits={"list_filter_max_items": 5, "user_filters_max": 2})
    await _expect_400(app, "/ws", [("sources", "a"), ("sources", "b")], "sources")
    await _expect_400(app, "/ws", [("sources", "a,b,c,d,e,f")], "sources")
    await _expect_400(app, "/2/ws", [("meta.a", "1"), ("meta.b", "1"), ("meta.c", "1")], "meta.c")
    await _expect_400(app, "/1/ws", [("gender", "5")], "gender")


async def test_service_keeps_serving_and_opens_no_socket(memory_app: LiveApp) -> None:
    from luna_sender.web.context import CTX

    for name, value in BAD[:20]:
        await _expect_400(memory_app, "/ws", [(name, value)], name)
    hub = memory_app.app[CTX].hub
    assert not hub.connections
    acc = account()
    async with memory_app.ws(account=acc, params={"gender": "1"}) as ws:
        async with memory_app.session.post(
            memory_app.url("/publish"),
            headers={"Luna-Account-Id": acc},
            json={
                "events": [face_event(face_attributes={"basic_attributes": {"gender": 1}})],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            },
        ) as resp:
            assert resp.status == 204
        assert (await recv_json(ws))["event"]["face_attributes"]["basic_attributes"]["gender"] == 1
