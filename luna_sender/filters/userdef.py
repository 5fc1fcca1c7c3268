"""User-defined filters: ``<prefix>.<path>[__<op>][:<type>]=<value>`` (spec Part 1, §3.3).

The parameter *name* is the grammar: a dot path into the event, an optional operator (default
``eq``) and an optional type (default ``string``). Everything is parsed and validated at connect
time into one tight closure, so per-event work is a dict walk and one comparison.

Semantics (documented in docs/filters.md): a missing path never matches, whatever the operator; a
field value of another type than the filter's never matches (``neq``/``nin`` included); JSON null
matches only ``none`` (``eq``/``in``), and is excluded by ``neq none``/``nin`` lists holding none.
A string longer than ``limits.like_value_max_chars`` is not inspected by LIKE and matches neither
``like`` nor ``nlike`` (the matcher's cost grows with the value; see :mod:`.like`).

Each filter also yields a key term ``(prefix, path, op, type, canonical value)`` so that sockets
share a hub group only when their filters are the same after parsing (``ne`` = ``neq``, ``01`` =
``1`` as an integer, ``%%`` = ``%``), whatever the parameter spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

from luna_sender.filters.base import (
    MISSING,
    DynamicFilter,
    FilterError,
    Limits,
    get_path,
    parse_float,
    parse_int,
    split_list,
)
from luna_sender.filters.like import LikePattern, compile_like

OPERATORS = ("eq", "neq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "like", "nlike")
TYPES = ("string", "integer", "numeric", "boolean")
NONE_LITERAL = "none"
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_DEPTH = 16
_ORDERING = {"gt", "gte", "lt", "lte"}
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}

Predicate = Callable[[Any], bool]
NULL_TERM = ("null",)  # the key value of ``eq``/``neq none``: no string is a tuple


def _is_type(value: Any, type_: str) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if type_ == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float))  # numeric


def _parse_value(raw: str, type_: str) -> Any:
    if type_ == "string":
        return raw
    if type_ == "integer":
        return parse_int(raw)
    if type_ == "numeric":
        return parse_float(raw)
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"'{raw}' is not a boolean (true, false, 1, 0)")


def parse_name(prefix: str, name: str) -> tuple[tuple[str, ...], str, str]:
    """Split ``prefix.a.b__op:type`` into (path, op, type); ValueError with a reason."""
    body = name[len(prefix) + 1 :]
    type_ = "string"
    if ":" in body:
        body, type_ = body.rsplit(":", 1)
        if type_ not in TYPES:
            raise ValueError(f"unknown type '{type_}' (one of {', '.join(TYPES)})")
    op = "eq"
    if "__" in body:
        body, op = body.rsplit("__", 1)
        if op not in OPERATORS:
            raise ValueError(f"unknown operator '{op}' (one of {', '.join(OPERATORS)})")
    if op == "ne":
        op = "neq"
    if not body:
        raise ValueError("empty field path")
    path = tuple(body.split("."))
    if len(path) > MAX_DEPTH:
        raise ValueError(f"field path deeper than {MAX_DEPTH}")
    for segment in path:
        if not SEGMENT_RE.fullmatch(segment):
            raise ValueError(f"bad path segment '{segment}'")
    if op in _ORDERING and type_ == "boolean":
        raise ValueError(f"operator '{op}' does not apply to booleans")
    if op in ("like", "nlike") and type_ != "string":
        raise ValueError(f"operator '{op}' applies to strings only")
    return path, op, type_


def _build(
    path: tuple[str, ...], op: str, type_: str, raw: str, limits: Limits
) -> tuple[Hashable, Predicate]:
    """The filter's canonical value (for the key) and its predicate."""
    if op in ("in", "nin"):
        items = split_list(raw, limits)
        want_null = NONE_LITERAL in items
        values = frozenset(_parse_value(i, type_) for i in items if i != NONE_LITERAL)
        member = op == "in"

        def in_list(obj: Any) -> bool:
            value = get_path(obj, path)
            if value is MISSING:
                return False
            if value is None:
                return want_null if member else False
            if not _is_type(value, type_):
                return False
            return (value in values) == member

        return (want_null, values), in_list
    if raw == NONE_LITERAL and op in ("eq", "neq"):
        is_eq = op == "eq"

        def null_check(obj: Any) -> bool:
            value = get_path(obj, path)
            if value is MISSING:
                return False
            return (value is None) == is_eq

        return NULL_TERM, null_check
    if op in ("like", "nlike"):
        pattern = compile_like(raw, limits.like_pattern_max_chars, limits.like_wildcards_max)
        matches = pattern.match
        positive = op == "like"
        max_chars = limits.like_value_max_chars

        def like(obj: Any) -> bool:
            value = get_path(obj, path)
            if not isinstance(value, str) or len(value) > max_chars:
                return False
            return matches(value) == positive

        # The value cap is part of the filter's meaning: two sockets share only under one cap.
        return (pattern.canonical, max_chars), like
    target = _parse_value(raw, type_)
    compare: Callable[[Any], bool] = {
        "eq": lambda v: v == target,
        "neq": lambda v: v != target,
        "gt": lambda v: v > target,
        "gte": lambda v: v >= target,
        "lt": lambda v: v < target,
        "lte": lambda v: v <= target,
    }[op]

    def scalar(obj: Any) -> bool:
        value = get_path(obj, path)
        if value is MISSING or value is None or not _is_type(value, type_):
            return False
        return compare(value)

    return target, scalar


def compile_user_filter(prefix: str, name: str, raw: str, limits: Limits) -> DynamicFilter | None:
    """The filter over the object ``prefix`` names, or None when ``name`` is not ours.

    Its identity is ``(prefix, path, op, type)`` after parsing (``ne`` = ``neq``, no operator =
    ``eq``, no type = ``string``), so two spellings of one filter are refused as a repeat.
    """
    if not name.startswith(prefix + "."):
        return None
    try:
        path, op, type_ = parse_name(prefix, name)
        value, predicate = _build(path, op, type_, raw, limits)
    except ValueError as exc:
        raise FilterError(name, str(exc)) from None
    identity = (prefix, path, op, type_)
    like = op in ("like", "nlike")
    scanning = like and LikePattern(raw).scanning  # the caps were checked in _build
    return DynamicFilter(identity, (*identity, value), predicate, like, scanning)
