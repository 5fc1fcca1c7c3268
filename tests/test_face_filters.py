"""Every /ws filter over a real socket and a real redis-server: one positive, one negative case.

Each row publishes ONE producer message holding the non-matching event first and the matching
event second; the subscriber must receive exactly the matching one (then nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from .conftest import LiveApp
from .helpers import account, assert_silent, face_event, face_message, recv_json

H1 = "11111111-1111-4111-8111-111111111111"
H2 = "22222222-2222-4222-8222-222222222222"
S1 = "33333333-3333-4333-8333-333333333333"


def nested(path: str, value: Any) -> dict[str, Any]:
    """``nested("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``."""
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


FACE = "face_attributes.basic_attributes"
AGG = "aggregate_estimations.face.attributes"
BODY = "aggregate_estimations.body.attributes"


def body(path: str, good: Any, bad: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return nested(f"{BODY}.{path}", good), nested(f"{BODY}.{path}", bad)


def matches(*pairs: tuple[str, float]) -> dict[str, Any]:
    return {
        "matches": [{"label": label, "candidates": [{"similarity": sim}]} for label, sim in pairs]
    }


GEO = {"location": {"geo_position": {"longitude": 36.616, "latitude": 55.752}}}
FAR = {"location": {"geo_position": {"longitude": 36.7, "latitude": 55.752}}}

# (params, matching event fields, non-matching event fields, handler ids (good, bad))
ROWS: list[tuple[dict[str, str], dict[str, Any], dict[str, Any]]] = [
    ({"sources": "cam-1,cam-2"}, {"source": "cam-2"}, {"source": "cam-3"}),
    ({"sources": "null"}, {"source": None}, {"source": "cam-1"}),
    ({"stream_ids": S1}, {"stream_id": S1.upper()}, {"stream_id": H1}),
    ({"stream_ids": f"{S1},null"}, {"stream_id": None}, {"stream_id": H2}),
    (
        {"matching_candidates_labels": "vip,staff"},
        matches(("x", 0.1), ("staff", 0.2)),
        matches(("x", 0.9)),
    ),
    ({"object_similarity__gte": "0.8"}, matches(("a", 0.3), ("b", 0.8)), matches(("a", 0.79))),
    ({"object_similarity__lt": "0.5"}, matches(("a", 0.49)), matches(("a", 0.1), ("b", 0.5))),
    ({"age__gte": "30"}, nested(f"{FACE}.age", 30), nested(f"{FACE}.age", 29)),
    ({"age__lt": "30"}, nested(f"{FACE}.age", 29.5), nested(f"{FACE}.age", 30)),
    ({"age__gte": "20", "age__lt": "40"}, nested(f"{FACE}.age", 25), nested(f"{FACE}.age", 45)),
    ({"gender": "1"}, nested(f"{FACE}.gender", 1), nested(f"{FACE}.gender", 0)),
    ({"gender": "0"}, nested(f"{FACE}.gender", 0), {}),
    (
        {"ethnic_groups": "3,4"},
        nested(f"{FACE}.ethnicities.predominant_ethnicity", "asian"),
        nested(f"{FACE}.ethnicities.predominant_ethnicity", "indian"),
    ),
    (
        {"liveness": "0,2"},
        nested(f"{AGG}.liveness.prediction", "spoof"),
        nested(f"{AGG}.liveness.prediction", "real"),
    ),
    (
        {"deepfake": "1"},
        nested(f"{AGG}.deepfake.prediction", "real"),
        nested(f"{AGG}.deepfake.prediction", "fake"),
    ),
    (
        {"masks": "2"},
        nested(f"{AGG}.mask.predominant_mask", "medical_mask"),
        nested(f"{AGG}.mask.predominant_mask", "missing"),
    ),
    (
        {"emotions": "4,7"},
        nested(f"{AGG}.emotions.predominant_emotion", "surprise"),
        nested(f"{AGG}.emotions.predominant_emotion", "anger"),
    ),
    ({"tags": "a,b"}, {"tags": ["c", "b", "a"]}, {"tags": ["a", "c"]}),
    ({"user_data": "cd"}, {"user_data": "abcde"}, {"user_data": "aBCDe"}),
    ({"geo_position": "origin_longitude,36.61,origin_latitude,55.75"}, GEO, FAR),
    (
        {
            "geo_position": "origin_longitude,36,origin_latitude,55,longitude_delta,1,"
            "latitude_delta,1"
        },
        GEO,
        nested("location.geo_position", {"longitude": 38, "latitude": 55}),
    ),
    ({"cities": "Moscow,Paris"}, nested("location.city", "Paris"), nested("location.city", "Rome")),
    ({"areas": "CAO"}, nested("location.area", "CAO"), nested("location.area", "SAO")),
    ({"districts": "mitino"}, nested("location.district", "mitino"), {"location": {}}),
    ({"streets": "arbat"}, nested("location.street", "arbat"), nested("location.street", "x")),
    (
        {"house_numbers": "1/2str3"},
        nested("location.house_number", "1/2str3"),
        nested("location.house_number", "1"),
    ),
    ({"apparent_gender": "0,2"}, *body("basic_attributes.apparent_gender", 2, 1)),
    ({"apparent_age__gte": "18"}, *body("basic_attributes.apparent_age", 18, 17)),
    ({"apparent_age__lt": "18"}, *body("basic_attributes.apparent_age", 17, 18)),
    ({"headwear_states": "1"}, *body("upper_body.headwear.state", 1, 0)),
    ({"backpack_states": "0,1"}, *body("accessories.backpack.state", 0, 2)),
    ({"sleeve_lengths": "long"}, *body("upper_body.sleeve.length", "long", "short")),
    (
        {"upper_clothing_colors": "red,blue"},
        *body("upper_body.upper_clothing.colors", ["white", "blue"], ["white"]),
    ),
    (
        {"lower_garment_colors": "khaki"},
        *body("lower_body.lower_garment.colors", ["khaki"], ["beige"]),
    ),
    ({"lower_garment_types": "skirt"}, *body("lower_body.lower_garment.type", "skirt", "shorts")),
    ({"shoes_colors": "white"}, *body("lower_body.shoes.apparent_color", "white", "black")),
    (
        {"shoes_apparent_colors": "white"},
        *body("lower_body.shoes.apparent_color", "white", "other"),
    ),
    (
        {"headwear_colors": "black,other"},
        *body("upper_body.headwear.apparent_color", "other", "white"),
    ),
    (
        {"headwear_apparent_colors": "undefined"},
        *body("upper_body.headwear.apparent_color", "undefined", "black"),
    ),
    (
        {"meta.camera.floor__gte:integer": "3"},
        {"meta": {"camera": {"floor": 3}}},
        {"meta": {"camera": {"floor": 2}}},
    ),
    ({"meta.zone__in": "a,none"}, {"meta": {"zone": None}}, {"meta": {}}),
    # Several filters are AND-ed.
    (
        {"sources": "cam-1", "gender": "1"},
        {"source": "cam-1", **nested(f"{FACE}.gender", 1)},
        {"source": "cam-1", **nested(f"{FACE}.gender", 0)},
    ),
]


@pytest.fixture
async def producer(redis_server):
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.mark.parametrize(
    ("params", "good", "bad"),
    ROWS,
    ids=["&".join(f"{k}={v}" for k, v in r[0].items())[:60] for r in ROWS],
)
async def test_filter_selects_exactly_the_matching_event(
    redis_app: LiveApp,
    producer: aioredis.Redis,
    params: dict[str, str],
    good: dict[str, Any],
    bad: dict[str, Any],
) -> None:
    acc = account()
    async with redis_app.ws(account=acc, params=params) as ws:
        events = [
            face_event(**{"source": "default", **bad, "mark": "bad"}),
            face_event(**{"source": "default", **good, "mark": "good"}),
        ]
        await producer.publish(f"luna-sender:{acc}", face_message(events))
        assert (await recv_json(ws))["event"]["mark"] == "good"
        await assert_silent(ws, 0.2)


@pytest.mark.parametrize(("param", "good_handler", "bad_handler"), [(f"{H1},{H2}", H2, S1)])
async def test_handler_ids(
    redis_app: LiveApp, producer: aioredis.Redis, param: str, good_handler: str, bad_handler: str
) -> None:
    acc = account()
    async with redis_app.ws(account=acc, params={"handler_ids": param.upper()}) as ws:
        await producer.publish(
            f"luna-sender:{acc}", face_message([face_event(mark="bad")], handler_id=bad_handler)
        )
        await producer.publish(
            f"luna-sender:{acc}", face_message([face_event(mark="good")], handler_id=good_handler)
        )
        got = await recv_json(ws)
        assert got["event"]["mark"] == "good" and got["handler_id"] == good_handler
        await assert_silent(ws, 0.2)


async def test_missing_field_never_matches_a_value_filter(
    redis_app: LiveApp, producer: aioredis.Redis
) -> None:
    acc = account()
    params = {"age__gte": "0", "cities": "x", "liveness": "1", "upper_clothing_colors": "red"}
    async with (
        redis_app.ws(account=acc, params=params) as ws,
        redis_app.ws(account=acc) as everything,
    ):
        await producer.publish(f"luna-sender:{acc}", face_message([face_event()]))
        await recv_json(everything)
        await assert_silent(ws, 0.2)
