"""User-defined general-event filters over real sockets: every operator x type, and properties.

The property test compares the service with a deliberately naive reference evaluation written
here from the documented semantics (docs/filters.md), not from the implementation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import Service, recv_json

# (param name, value, matching event, non-matching event) — one row per operator x type.
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("event.s", "abc", {"s": "abc"}, {"s": "abd"}),
    ("event.s__eq:string", "abc", {"s": "abc"}, {"s": 1}),
    ("event.s__neq:string", "abc", {"s": "x"}, {"s": "abc"}),
    ("event.s__gt:string", "b", {"s": "c"}, {"s": "a"}),
    ("event.s__gte:string", "b", {"s": "b"}, {"s": "a"}),
    ("event.s__lt:string", "b", {"s": "a"}, {"s": "c"}),
    ("event.s__lte:string", "b", {"s": "b"}, {"s": "c"}),
    ("event.s__in:string", "x,y", {"s": "y"}, {"s": "z"}),
    ("event.s__nin:string", "x,y", {"s": "z"}, {"s": "x"}),
    ("event.s__like:string", "ab%d_", {"s": "abXXde"}, {"s": "abXXd"}),
    ("event.s__nlike:string", "ab%", {"s": "xab"}, {"s": "abc"}),
    ("event.i:integer", "5", {"i": 5}, {"i": 6}),
    ("event.i__eq:integer", "5", {"i": 5}, {"i": "5"}),
    ("event.i__neq:integer", "5", {"i": 4}, {"i": 5}),
    ("event.i__gt:integer", "5", {"i": 6}, {"i": 5}),
    ("event.i__gte:integer", "5", {"i": 5}, {"i": 4}),
    ("event.i__lt:integer", "5", {"i": 4}, {"i": 5}),
    ("event.i__lte:integer", "5", {"i": 5}, {"i": 6}),
    ("event.i__in:integer", "1,5", {"i": 5}, {"i": 2}),
    ("event.i__nin:integer", "1,5", {"i": 2}, {"i": 1}),
    ("event.x:numeric", "36.6", {"x": 36.6}, {"x": 36.7}),
    ("event.x__neq:numeric", "36.6", {"x": 1}, {"x": 36.6}),
    ("event.x__gt:numeric", "36.6", {"x": 37}, {"x": 36.6}),
    ("event.x__gte:numeric", "36.6", {"x": 36.6}, {"x": 36.5}),
    ("event.x__lt:numeric", "36.6", {"x": 36.5}, {"x": 36.6}),
    ("event.x__lte:numeric", "36.6", {"x": 36.6}, {"x": 40}),
    ("event.x__in:numeric", "1.5,2", {"x": 2}, {"x": 3}),
    ("event.x__nin:numeric", "1.5,2", {"x": 3}, {"x": 1.5}),
    ("event.b:boolean", "true", {"b": True}, {"b": False}),
    ("event.b__neq:boolean", "true", {"b": False}, {"b": True}),
    ("event.b__in:boolean", "false", {"b": False}, {"b": True}),
    ("event.b__nin:boolean", "false", {"b": True}, {"b": False}),
    ("event.b__eq:boolean", "1", {"b": True}, {"b": 1}),
    # nested paths, null, absent fields
    ("event.a.b.c:integer", "1", {"a": {"b": {"c": 1}}}, {"a": {"b": {}}}),
    ("event.a.b__in", "v,none", {"a": {"b": None}}, {"a": {}}),
    ("event.a.b__nin", "v,none", {"a": {"b": "w"}}, {"a": {"b": None}}),
    ("event.n", "none", {"n": None}, {"n": "none-ish"}),
    ("event.n__neq", "none", {"n": "x"}, {"n": None}),
    ("event.m__neq", "x", {"m": "y"}, {}),
]


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = Service()
    yield svc
    svc.close()


async def _publish(session: aiohttp.ClientSession, svc: Service, event: dict[str, Any]) -> None:
    async with session.post(
        svc.url + "/publish/general", json={"event": event, "event_type": "t"}
    ) as resp:
        assert resp.status == 204, await resp.text()


async def _deliveries(
    svc: Service, query: dict[str, str], events: list[dict[str, Any]]
) -> list[int]:
    """Ids of the events a filtered socket receives; an unfiltered socket marks completion."""
    async with aiohttp.ClientSession() as session:
        async with (
            session.ws_connect(svc.ws_url + "/ws/general", params=query) as filtered,
            session.ws_connect(svc.ws_url + "/ws/general") as everything,
        ):
            for i, event in enumerate(events):
                await _publish(session, svc, {**event, "_id": i})
            for _ in events:
                await recv_json(everything)
            got: list[int] = []
            while True:
                try:
                    msg = await asyncio.wait_for(filtered.receive(), 0.15)
                except TimeoutError:
                    return got
                got.append(orjson.loads(msg.data)["event"]["_id"])


@pytest.mark.parametrize(("name", "value", "good", "bad"), CASES)
def test_operator_type_pairs(
    service: Service, name: str, value: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    got = asyncio.run(_deliveries(service, {name: value}, [bad, good]))
    assert got == [1]


# --- property: the service agrees with a naive reference --------------------------------

FIELDS = {"i": "integer", "x": "numeric", "s": "string", "b": "boolean"}
OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "in", "nin", "like", "nlike"]

scalar = st.one_of(
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 1)),
    st.sampled_from(["a", "b", "ab", "ba", ""]),
    st.booleans(),
    st.none(),
)
events_st = st.lists(
    st.fixed_dictionaries({}, optional={k: scalar for k in ("i", "x", "s", "b")}),
    min_size=1,
    max_size=6,
)


@st.composite
def filters_st(draw: st.DrawFn) -> tuple[str, str, str, str, list[Any]]:
    field = draw(st.sampled_from([*FIELDS, "missing"]))
    type_ = draw(st.sampled_from(list(FIELDS.values())))
    ops = [o for o in OPS if not (type_ == "boolean" and o in ("gt", "gte", "lt", "lte"))]
    if type_ != "string":
        ops = [o for o in ops if o not in ("like", "nlike")]
    op = draw(st.sampled_from(ops))
    value_st = {
        "integer": st.integers(-3, 3).map(str),
        "numeric": st.sampled_from(["-1.5", "0", "1", "2.5"]),
        "string": st.sampled_from(["a", "b", "ab", "%", "a%", "_", "_b"]),
        "boolean": st.sampled_from(["true", "false"]),
    }[type_]
    if op in ("in", "nin"):
        items = draw(st.lists(st.one_of(value_st, st.just("none")), min_size=1, max_size=3))
        raw = ",".join(items)
    else:
        items = [draw(st.one_of(value_st, st.just("none")) if op in ("eq", "neq") else value_st)]
        raw = items[0]
    return field, op, type_, raw, items


def _typed(value: Any, type_: str) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if type_ == "integer" else isinstance(value, (int, float))


def _cast(raw: str, type_: str) -> Any:
    return {"integer": int, "numeric": float, "string": str, "boolean": lambda r: r == "true"}[
        type_
    ](raw)


def reference(
    event: dict[str, Any], field: str, op: str, type_: str, raw: str, items: list[str]
) -> bool:
    if field not in event:
        return False
    value = event[field]
    if op in ("in", "nin"):
        if value is None:
            return op == "in" and "none" in items
        if not _typed(value, type_):
            return False
        hit = value in [_cast(i, type_) for i in items if i != "none"]
        return hit if op == "in" else not hit
    if raw == "none" and op in ("eq", "neq"):
        return (value is None) == (op == "eq")
    if value is None or not _typed(value, type_):
        return False
    if op in ("like", "nlike"):
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in raw)
        hit = re.fullmatch(pattern, value, re.DOTALL) is not None
        return hit if op == "like" else not hit
    target = _cast(raw, type_)
    return {
        "eq": value == target,
        "neq": value != target,
        "gt": value > target,
        "gte": value >= target,
        "lt": value < target,
        "lte": value <= target,
    }[op]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(events=events_st, flt=filters_st())
def test_service_agrees_with_reference(
    service: Service, events: list[dict[str, Any]], flt: tuple[str, str, str, str, list[Any]]
) -> None:
    field, op, type_, raw, items = flt
    name = f"event.{field}__{op}:{type_}"
    expected = [i for i, e in enumerate(events) if reference(e, field, op, type_, raw, items)]
    assert asyncio.run(_deliveries(service, {name: raw}, events)) == expected


async def _handshake_status(svc: Service, name: str, value: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(svc.ws_url + "/ws/general", params={name: value}):
                return 101, None
        except aiohttp.WSServerHandshakeError as exc:
            async with session.get(svc.url + "/ws/general", params={name: value}) as resp:
                return exc.status, await resp.json()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.text(min_size=0, max_size=30), value=st.text(max_size=20))
def test_malformed_filters_never_500(service: Service, name: str, value: str) -> None:
    status, body = asyncio.run(_handshake_status(service, "event." + name, value))
    assert status in (101, 400)
    if status == 400:
        assert body["error_code"] == 12012
