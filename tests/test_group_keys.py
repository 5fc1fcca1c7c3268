"""Hub groups are keyed by what a filter selects, never by its spelling (issue 13 item 4).

One group runs one predicate for all its sockets, so two sockets may share a group only when
their filters are the same. The property test builds its own notion of "the same" from the
documented grammar (docs/filters.md) and checks key equality against it; the end-to-end test
replays the reported attack — a ``&`` and ``=`` smuggled inside a value — over real sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from luna_sender.filters.base import FilterError, Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import GENERAL_SPECS, compile_general

from .conftest import LiveApp
from .helpers import account, assert_silent, recv_json

LIMITS = Limits()

# --- a reference canonical form, from the documented grammar ---------------------------------

TABLE_NAMES = ["cities", "sources", "streets", "event_type"]
USER_NAMES = [
    "event.a",
    "event.a__eq",
    "event.a__eq:string",
    "event.a__ne",
    "event.a__neq",
    "event.a:integer",
    "event.a__in",
    "event.a__in:integer",
    "event.a__like",
    "event.a__nlike",
    "event.b",
    "event.a.b",
]
VALUES = [
    "x",
    "y",
    "x&cities=y",
    "x&event.b=y",
    "1",
    "01",
    "a,b",
    "b,a",
    "a,a",
    "%",
    "%%",
    "x%",
    "x%%",
    "none",
    "x,none",
    "=",
]


def _user_term(name: str, raw: str) -> Any:
    body = name[len("event.") :]
    body, _, type_ = body.partition(":")
    path, _, op = body.partition("__")
    op, type_ = {"ne": "neq", "": "eq"}.get(op, op), type_ or "string"
    cast = int if type_ == "integer" else str
    if op in ("in", "nin"):
        items = raw.split(",")
        value: Any = ("none" in items, frozenset(cast(i) for i in items if i != "none"))
    elif raw == "none" and op in ("eq", "neq"):
        value = None
    elif op in ("like", "nlike"):
        while "%%" in raw:
            raw = raw.replace("%%", "%")
        value = raw
    else:
        value = ("value", cast(raw))
    return (path, op, type_, value)


def reference(query: list[tuple[str, str]]) -> frozenset[Any]:
    """The set of AND-ed conditions a query stands for."""
    terms = set()
    for name, raw in query:
        if name.startswith("event."):
            terms.add(_user_term(name, raw))
        else:
            terms.add((name, GENERAL_SPECS[name].parse(raw, LIMITS)))
    return frozenset(terms)


def _compile(query: list[tuple[str, str]]) -> Any:
    try:
        return compile_general(query, LIMITS)
    except FilterError:
        return None


queries = st.lists(
    st.tuples(st.sampled_from(TABLE_NAMES + USER_NAMES), st.sampled_from(VALUES)),
    max_size=3,
    unique_by=lambda pair: pair[0],
)
SPELLINGS = [{"event.a", "event.a__eq", "event.a__eq:string"}, {"event.a__ne", "event.a__neq"}]
EQUIVALENT = [{"1", "01"}, {"a,b", "b,a", "a,b,a"}, {"%", "%%"}, {"x%", "x%%"}]


def _variant(group: list[set[str]], item: str, draw: st.DrawFn) -> str:
    for same in group:
        if item in same:
            return draw(st.sampled_from(sorted(same)))
    return item


@st.composite
def query_pairs(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Two queries that are often the same filter spelled differently, or a look-alike of it."""
    one = draw(queries)
    if draw(st.integers(0, 3)) == 0:
        return one, draw(queries)
    two = [(_variant(SPELLINGS, n, draw), _variant(EQUIVALENT, v, draw)) for n, v in one]
    if len(two) >= 2 and draw(st.booleans()):
        # Smuggle the second parameter into the first one's value: a different filter.
        (n1, v1), (n2, v2), *rest = two
        two = [(n1, f"{v1}&{n2}={v2}"), *rest]
    two = draw(st.permutations(two))
    return (two, one) if draw(st.booleans()) else (one, two)


@settings(max_examples=1000, deadline=None)
@given(pair=query_pairs())
def test_keys_are_equal_exactly_when_the_filters_are(
    pair: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> None:
    one, two = pair
    first, second = _compile(one), _compile(two)
    if first is None or second is None:
        return
    assert (first.key == second.key) == (reference(one) == reference(two)), (one, two)


@given(query=queries, data=st.data())
def test_parameter_order_does_not_split_a_group(
    query: list[tuple[str, str]], data: st.DataObject
) -> None:
    compiled = _compile(query)
    if compiled is None:
        return
    shuffled = data.draw(st.permutations(query))
    assert compile_general(shuffled, LIMITS).key == compiled.key
    hash(compiled.key)


def test_face_keys_cover_meta_filters_and_aliases() -> None:
    def key(query: list[tuple[str, str]]) -> Any:
        return compile_face(query, LIMITS).key

    assert key([("meta.a", "1&meta.b=2")]) != key([("meta.a", "1"), ("meta.b", "2")])
    assert key([("meta.n:integer", "7")]) != key([("meta.n", "7")])
    assert key([("meta.n:integer", "07")]) == key([("meta.n__eq:integer", "7")])
    assert key([("headwear_apparent_colors", "black")]) == key([("headwear_colors", "black")])
    assert key([("gender", "1")]) != key([("gender", "0")])


# --- the attack over real sockets -------------------------------------------------------------


async def _general(app: LiveApp, query: str) -> Any:
    return await app.session.ws_connect(URL(app.url("/ws/general") + "?" + query, encoded=True))


def _events() -> Iterator[dict[str, Any]]:
    yield {"id": "smuggled", "location": {"city": "x&sources=y"}}
    yield {"id": "both", "location": {"city": "x"}, "source": "y"}
    yield {"id": "user-smuggled", "a": "1&event.b=2"}
    yield {"id": "user-both", "a": "1", "b": "2"}


async def test_smuggled_separator_gets_its_own_group(memory_app: LiveApp) -> None:
    # query -> the events its socket must receive; each '%26...%3D' query holds '&' and '='
    # inside one value, its neighbour is the same text as two parameters.
    want = {
        "cities=x%26sources%3Dy": ["smuggled"],
        "cities=x&sources=y": ["both"],
        "event.a=1%26event.b%3D2": ["user-smuggled"],
        "event.a=1&event.b=2": ["user-both"],
    }
    for first in (list(want), list(reversed(want))):  # whichever connects first keeps its own
        sockets = {query: await _general(memory_app, query) for query in first}
        barrier = await memory_app.session.ws_connect(
            memory_app.url("/ws/general"), params={"event_type": "end"}
        )
        for event in [*_events(), {"id": "end"}]:
            body = {"event": event, "event_type": "end" if event["id"] == "end" else "t"}
            async with memory_app.session.post(
                memory_app.url("/publish/general"), json=body
            ) as resp:
                assert resp.status == 204
        assert (await recv_json(barrier))["event"]["id"] == "end"
        for query, ws in sockets.items():
            got = [(await recv_json(ws))["event"]["id"] for _ in want[query]]
            assert got == want[query], query
            await assert_silent(ws, 0.2)
        for ws in [*sockets.values(), barrier]:
            await ws.close()


async def test_smuggled_separator_on_face_route(memory_app: LiveApp) -> None:
    acc = account()
    headers = {"Luna-Account-Id": acc}
    base = memory_app.url("/ws") + "?"
    smuggled = await memory_app.session.ws_connect(
        URL(base + "meta.a=1%26meta.b%3D2", encoded=True), headers=headers
    )
    split = await memory_app.session.ws_connect(
        URL(base + "meta.a=1&meta.b=2", encoded=True), headers=headers
    )
    body = {
        "events": [{"n": 1, "meta": {"a": "1&meta.b=2"}}, {"n": 2, "meta": {"a": "1", "b": "2"}}],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with memory_app.session.post(
        memory_app.url("/publish"), json=body, headers=headers
    ) as resp:
        assert resp.status == 204
    assert (await recv_json(smuggled))["event"]["n"] == 1
    assert (await recv_json(split))["event"]["n"] == 2
    for ws in (smuggled, split):
        await assert_silent(ws, 0.3)
        await ws.close()
