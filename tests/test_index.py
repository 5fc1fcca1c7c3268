"""The equality index never loses a match: candidates + predicate == predicate over all groups."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from luna_sender.delivery.groups import face_index, general_index
from luna_sender.filters.base import Limits
from luna_sender.filters.events import compile_face
from luna_sender.filters.general import compile_general
from luna_sender.wire import FaceMessage, GeneralMessage

HANDLERS = [str(uuid.UUID(int=i)) for i in range(3)]
STREAMS = [str(uuid.UUID(int=100 + i)) for i in range(3)]
SOURCES = ["a", "b", "c"]

face_query = st.fixed_dictionaries(
    {},
    optional={
        "sources": st.lists(
            st.sampled_from([*SOURCES, "null"]), min_size=1, max_size=3, unique=True
        ),
        "stream_ids": st.lists(
            st.sampled_from([*STREAMS, "null"]), min_size=1, max_size=2, unique=True
        ),
        "handler_ids": st.lists(st.sampled_from(HANDLERS), min_size=1, max_size=2, unique=True),
        "age__gte": st.integers(0, 100),
    },
)
face_event = st.fixed_dictionaries(
    {},
    optional={
        "source": st.one_of(st.sampled_from([*SOURCES, "zz"]), st.none(), st.just(["list"])),
        "stream_id": st.one_of(st.sampled_from(STREAMS).map(str.upper), st.none()),
        "face_attributes": st.builds(
            lambda a: {"basic_attributes": {"age": a}}, st.integers(0, 100)
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    queries=st.lists(face_query, min_size=1, max_size=8),
    event=face_event,
    handler=st.sampled_from([*HANDLERS, "other", None]),
)
def test_face_index_is_lossless(
    queries: list[dict[str, Any]], event: dict[str, Any], handler: str | None
) -> None:
    index = face_index()
    filters = {}
    for key, query in enumerate(queries):
        compiled = compile_face(
            [(k, ",".join(v) if isinstance(v, list) else str(v)) for k, v in query.items()],
            Limits(),
        )
        filters[key] = compiled
        index.add(key, key, compiled.index)
    subject = (event, FaceMessage(handler, "r", [event], "t", "t"))
    expected = sorted(k for k, f in filters.items() if f.match(subject))
    candidates = list(index.candidates(subject))
    assert len(candidates) == len(set(candidates))
    assert sorted(k for k in candidates if filters[k].match(subject)) == expected
    for key in list(filters)[::2]:
        index.remove(key)
    remaining = sorted(k for k in index.candidates(subject) if filters[k].match(subject))
    assert remaining == [k for k in expected if k % 2]


@settings(max_examples=200, deadline=None)
@given(
    types=st.lists(
        st.one_of(st.none(), st.lists(st.sampled_from("xyz"), min_size=1, max_size=2, unique=True)),
        min_size=1,
        max_size=6,
    ),
    event_type=st.one_of(st.sampled_from("xyzw"), st.none(), st.integers()),
)
def test_general_index_is_lossless(types: list[list[str] | None], event_type: Any) -> None:
    index = general_index()
    filters = {}
    for key, t in enumerate(types):
        compiled = compile_general([("event_type", ",".join(t))] if t else [], Limits())
        filters[key] = compiled
        index.add(key, key, compiled.index)
    msg = GeneralMessage({}, event_type, None, None, None)
    expected = sorted(k for k, f in filters.items() if f.match(msg))
    assert sorted(k for k in index.candidates(msg) if filters[k].match(msg)) == expected
