"""The general-event filters of ``/ws/general`` (spec Part 2 §3).

The subject a predicate sees is the :class:`~luna_sender.wire.GeneralMessage`. Location, stream
and source filters read the general event's own fields inside ``event`` (spec §3.1 assumption);
user-defined ``event.<path>`` filters read the ``event`` object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from luna_sender.filters.base import (
    CompiledFilter,
    DynamicFilter,
    FilterSpec,
    Limits,
    compile_filters,
    parse_uuid,
    split_list,
)
from luna_sender.filters.common import field_in, geo_match, parse_geo, str_list_parser
from luna_sender.filters.userdef import compile_user_filter
from luna_sender.wire import GeneralMessage

EVENT_TYPE_MAX = 128


def _event_root(msg: GeneralMessage) -> dict[str, Any]:
    return msg.event


def _event_field_in(
    path: tuple[str, ...], lowercase: bool = False
) -> Callable[[Any, GeneralMessage], bool]:
    return field_in(path, _event_root, lowercase)


def _event_types(raw: str, limits: Limits) -> frozenset[str]:
    items = split_list(raw, limits)
    for item in items:
        if len(item) > EVENT_TYPE_MAX:
            raise ValueError(f"event type longer than {EVENT_TYPE_MAX} characters")
    return frozenset(items)


def _uuids(raw: str, limits: Limits) -> frozenset[Any]:
    return frozenset(None if i == "null" else parse_uuid(i) for i in split_list(raw, limits))


def _type_match(allowed: frozenset[str], msg: GeneralMessage) -> bool:
    return isinstance(msg.event_type, str) and msg.event_type in allowed


ACCOUNT_ID_MAX = 256  # the publish route's cap on account_id (web/publish.py)


def _account(raw: str, _limits: Limits) -> str:
    """Any non-empty string, kept as given: the contract matches it exactly, case included,
    so one account's subscriber can never be widened onto a look-alike id."""
    if not raw:
        raise ValueError("empty account_id")
    if len(raw) > ACCOUNT_ID_MAX:
        raise ValueError(f"account_id longer than {ACCOUNT_ID_MAX} characters")
    return raw


def _account_match(account: str, msg: GeneralMessage) -> bool:
    return msg.account_id == account


def _geo(box: Any, msg: GeneralMessage) -> bool:
    return geo_match(box, msg.event)


def _loc(name: str, field: str) -> FilterSpec:
    return FilterSpec(
        name,
        str_list_parser(allow_null=True),
        _event_field_in(("location", field)),
        (f"event.location.{field}",),
        "one of (null: missing)",
    )


GENERAL_FILTERS: tuple[FilterSpec, ...] = (
    FilterSpec(
        "event_type",
        _event_types,
        _type_match,
        ("event_type",),
        "one of the types",
        index="event_type",
    ),
    FilterSpec(
        "account_id",
        _account,
        _account_match,
        ("account_id",),
        "events of this account only",
        index=None,
    ),
    FilterSpec(
        "stream_ids",
        _uuids,
        _event_field_in(("stream_id",), lowercase=True),
        ("event.stream_id",),
        "one of (null: missing)",
    ),
    FilterSpec(
        "sources",
        str_list_parser(allow_null=True),
        _event_field_in(("source",)),
        ("event.source",),
        "one of (null: missing)",
    ),
    FilterSpec(
        "geo_position", parse_geo, _geo, ("event.location.geo_position",), "inside origin +- delta"
    ),
    _loc("cities", "city"),
    _loc("areas", "area"),
    _loc("districts", "district"),
    _loc("streets", "street"),
    _loc("house_numbers", "house_number"),
)
GENERAL_SPECS: dict[str, FilterSpec] = {spec.name: spec for spec in GENERAL_FILTERS}


def _event_filter(name: str, raw: str, limits: Limits) -> DynamicFilter | None:
    compiled = compile_user_filter("event", name, raw, limits)
    if compiled is None:
        return None
    predicate = compiled.predicate

    def match(msg: GeneralMessage) -> bool:
        return predicate(msg.event)

    return dataclasses.replace(compiled, predicate=match)


def compile_general(query: Iterable[tuple[str, str]], limits: Limits) -> CompiledFilter:
    """Compile the query of one ``/ws/general`` connection; FilterError names the parameter."""
    return compile_filters(
        GENERAL_SPECS, query, limits, dynamic=_event_filter, dynamic_count_param="event.*"
    )
