"""Filters as data: a query parameter becomes a compiled predicate once, at connect time.

A filter is a :class:`FilterSpec` — its name, a parser from the raw query value (which also checks
the value domain), the event fields it reads, and a match rule. The hub never knows which filters
exist: it groups connections by :attr:`CompiledFilter.key` and calls :meth:`CompiledFilter.match`
once per group and event, so adding a filter is one entry in a spec table.

Because one group runs one predicate for all its sockets, the key must be injective: equal keys
only for filters that select the same events. It is therefore built from the parsed, typed values
(a frozenset of one hashable term per filter), never from the query text — re-joined
``name=value`` strings let ``?a=x%26b%3Dy`` and ``?a=x&b=y`` share a group.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MISSING: Any = object()
NULL_LITERAL = "null"
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


# What percent-decoding a query puts for bytes that are not UTF-8 (``sources=%FF``): such a
# value was compiled as the replacement character, where such a name was refused (outside pass).
UNDECODABLE = "\ufffd"


class FilterError(ValueError):
    """A query parameter is malformed; ``param`` names it in the 12012 error."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    list_max_items: int = 1000
    user_filters_max: int = 64
    like_pattern_max_chars: int = 256
    like_wildcards_max: int = 16
    like_value_max_chars: int = 1024
    like_filters_max: int = 8


def get_path(obj: Any, path: tuple[str, ...]) -> Any:
    """Walk nested dicts; ``MISSING`` when any step is absent or not an object."""
    for part in path:
        if not isinstance(obj, dict):
            return MISSING
        obj = obj.get(part, MISSING)
        if obj is MISSING:
            return MISSING
    return obj


# --- value parsers: raw string -> python value, ValueError with a human reason on failure ---


def split_list(raw: str, limits: Limits) -> list[str]:
    items = raw.split(",")
    if len(items) > limits.list_max_items:
        raise ValueError(f"more than {limits.list_max_items} items")
    if any(item == "" for item in items):
        raise ValueError("empty list item")
    return items


# ASCII only and nothing around: ``\d``, ``int()`` and ``float()`` also take Arabic-Indic or
# fullwidth digits, ``1_000``, ``+1`` and surrounding spaces, which the filter grammar does not.
INT_RE = re.compile(r"-?[0-9]{1,18}")
NUMBER_RE = re.compile(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_int(raw: str, lo: int | None = None, hi: int | None = None) -> int:
    if not INT_RE.fullmatch(raw):
        raise ValueError(f"'{raw}' is not an integer")
    value = int(raw)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{value} is out of range [{lo}..{hi}]")
    return value


def parse_float(raw: str, lo: float | None = None, hi: float | None = None) -> float:
    if not NUMBER_RE.fullmatch(raw):
        raise ValueError(f"'{raw}' is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"'{raw}' is not a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{value} is out of range [{lo}..{hi}]")
    return value


def parse_uuid(raw: str) -> str:
    if not UUID_RE.fullmatch(raw):
        raise ValueError(f"'{raw}' is not a uuid")
    return str(uuid.UUID(raw))


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One query filter. ``parse`` validates and normalises; ``match(value, subject)`` decides."""

    name: str
    parse: Callable[[str, Limits], Any]
    match: Callable[[Any, Any], bool]
    fields: tuple[str, ...] = ()
    description: str = ""
    # Name of an equality index the hub may use ("handler_id", "source", ...), with the set of
    # accepted values as the filter's parsed value. None: no index, evaluate the predicate.
    index: str | None = None
    # The top-level event keys the rule reads (a face event is decoded only that far); None:
    # it may read anything.
    event_keys: frozenset[str] | None = None


# Characters of a socket's filters a log line shows (CompiledFilter.summary).
SUMMARY_MAX = 512
# CompiledFilter.cost, an upper estimate of a compiled filter's memory (tracemalloc, this
# machine): ~0.4-0.6 KB for no filter, ~1.1 KB per parameter (~2.7 KB for like/nlike); per list
# item its str or number and its frozenset slots, up to ~150 bytes besides the text (a short
# string just after its set grew); the value's text twice (the query's and the parsed copies)
# and the name's three times (an outside pass measured ~2x), at 4 bytes a character unless
# ASCII; and per like/nlike pattern character up to ~160 bytes of shift-and table (one entry per
# distinct character). Items are counted as commas + 1, duplicates included, so an estimate errs
# high: 1.02-3x for lists, up to ~15x for long like patterns of few distinct characters
# (tests/test_filter_memory.py).
FILTER_BYTES = 1024
PARAM_BYTES = 3072
ITEM_BYTES = 160
LIKE_CHAR_BYTES = 192
# The hub's equality index (delivery/groups.py) puts a group under each value of one indexed
# field: a bucket dict and its slot per distinct value, ~230 bytes measured (an outside pass saw
# ~260 in RSS). Charged for the largest indexed list, an upper bound of the one indexed.
INDEX_ITEM_BYTES = 320


def _cost(name: str, raw: str, like: bool) -> int:
    width = 1 if raw.isascii() and name.isascii() else 4
    text = width * (3 * len(name) + 2 * len(raw))  # a name is also split into a path, and keyed
    return (
        PARAM_BYTES + ITEM_BYTES * (raw.count(",") + 1) + text + like * LIKE_CHAR_BYTES * len(raw)
    )


@dataclass(slots=True)
class CompiledFilter:
    """All filters of one connection, AND-ed.

    ``key`` is a frozenset of one term per filter — ``(name, parsed value)`` for a table filter,
    ``(prefix, path, op, type, parsed value)`` for a user-defined one — and each term determines
    its predicate, so equal keys select the same events. A set suits because the filters are
    AND-ed: order does not matter (a filter given twice is refused in compile_filters).
    """

    key: frozenset[Hashable]
    predicates: tuple[Callable[[Any], bool], ...]
    params: dict[str, str] = field(default_factory=dict)
    index: dict[str, frozenset[Any]] = field(default_factory=dict)
    # like/nlike filters whose matcher scans in Python (see like.LikePattern.scanning): the hub
    # caps their sum over distinct groups, the one per-event cost no per-socket cap bounds.
    scanning_likes: int = 0
    # What the socket's filter holds in memory, estimated from above (FILTER_BYTES): the hub
    # caps the sum over live sockets (limits.filter_memory_max_bytes), since one socket's query
    # may compile to megabytes and every socket keeps its own.
    cost: int = 0
    # The top-level event keys the predicates read, None when one of them may read anything:
    # the hub decodes a face event only as far as its candidates read (matching.reads_of).
    event_keys: frozenset[str] | None = frozenset()

    def match(self, subject: Any) -> bool:
        # A plain loop: this runs per distinct filter per event, and all(genexpr) is slower.
        for predicate in self.predicates:  # noqa: SIM110
            if not predicate(subject):
                return False
        return True

    def summary(self) -> str:
        """The filters as a log line shows them, cut at :data:`SUMMARY_MAX` characters: a query
        may be 139 KB and every socket's opening and closing is logged (an outside tester's
        churn of such sockets wrote 24 MB/s of log, twice what it sent)."""
        text = "&".join(f"{k}={v}" for k, v in sorted(self.params.items())) or "<all>"
        if len(text) <= SUMMARY_MAX:
            return text
        return f"{text[:SUMMARY_MAX]}...(+{len(text) - SUMMARY_MAX} characters)"


@dataclass(frozen=True, slots=True)
class DynamicFilter:
    """A compiled grammar parameter: ``identity`` is the filter without its value (two
    parameters with one identity are the same filter given twice), ``term`` its key term."""

    identity: Hashable
    term: Hashable
    predicate: Callable[[Any], bool]
    like: bool = False  # a like/nlike filter (limits.like_filters_max per connection)
    scanning: bool = False  # one whose matcher scans in Python (a service-wide cap)
    event_keys: frozenset[str] | None = None  # as FilterSpec.event_keys


# Returns the compiled filter for parameters it owns, None for others.
DynamicCompiler = Callable[[str, str, Limits], DynamicFilter | None]


def compile_filters(
    specs: Mapping[str, FilterSpec],
    query: Iterable[tuple[str, str]],
    limits: Limits,
    dynamic: DynamicCompiler | None = None,
    dynamic_count_param: str = "event.*",
    ignore: frozenset[str] = frozenset(),
) -> CompiledFilter:
    """Validate every query parameter and build the connection's predicate.

    ``dynamic`` compiles parameters whose names are a grammar rather than a fixed list (the
    user-defined ``event.*`` / ``meta.*`` filters); it returns None for names it does not own.
    Unknown and repeated parameters are errors: a typo must never silently widen a subscription.
    """
    seen: dict[str, str] = {}
    # Canonical filter -> the parameter that gave it: ``event.x`` and ``event.x__eq``, or an
    # alias and its name, are one filter; given twice it is 12012 like a repeated name.
    filters: dict[Hashable, str] = {}
    terms: set[Hashable] = set()
    predicates: list[Callable[[Any], bool]] = []
    index: dict[str, frozenset[Any]] = {}
    dynamic_count = like_count = scanning = 0
    cost = FILTER_BYTES
    keys: set[str] | None = set()
    for name, raw in query:
        if name in ignore:
            continue
        if name in seen:
            raise FilterError(name, "parameter is given more than once")
        if UNDECODABLE in raw:  # the query's percent-decoding put it for bytes not UTF-8
            raise FilterError(name, "value is not UTF-8")
        seen[name] = raw
        spec = specs.get(name)
        if spec is not None:
            _once(filters, ("spec", spec.name), name)
            try:
                value = spec.parse(raw, limits)
            except ValueError as exc:
                raise FilterError(name, str(exc)) from None
            predicates.append(_bind(spec.match, value))
            cost += _cost(name, raw, False)
            # spec.name, not the query name: an alias compiles to the same filter.
            terms.add((spec.name, value))
            if spec.index is not None:
                index[spec.index] = frozenset(value)
            keys = _union(keys, spec.event_keys)
            continue
        compiled = dynamic(name, raw, limits) if dynamic is not None else None
        if compiled is None:
            raise FilterError(name, "unknown parameter")
        _once(filters, compiled.identity, name)
        dynamic_count += 1
        if dynamic_count > limits.user_filters_max:
            raise FilterError(
                name,
                f"more than {limits.user_filters_max} user-defined filters ({dynamic_count_param})",
            )
        like_count += compiled.like
        if like_count > limits.like_filters_max:
            raise FilterError(name, f"more than {limits.like_filters_max} like/nlike filters")
        scanning += compiled.scanning
        cost += _cost(name, raw, compiled.like)
        terms.add(compiled.term)
        predicates.append(compiled.predicate)
        keys = _union(keys, compiled.event_keys)
    return CompiledFilter(
        key=frozenset(terms),
        predicates=tuple(predicates),
        params=seen,
        index=index,
        scanning_likes=scanning,
        cost=cost + INDEX_ITEM_BYTES * max(map(len, index.values()), default=0),
        event_keys=None if keys is None else frozenset(keys),
    )


def _union(keys: set[str] | None, more: frozenset[str] | None) -> set[str] | None:
    return None if keys is None or more is None else keys | more


def _once(filters: dict[Hashable, str], identity: Hashable, name: str) -> None:
    first = filters.setdefault(identity, name)
    if first != name:
        raise FilterError(name, f"the same filter as '{first}' is given twice")


def _bind(match: Callable[[Any, Any], bool], value: Any) -> Callable[[Any], bool]:
    def predicate(subject: Any) -> bool:
        return match(value, subject)

    return predicate
