"""Match rules: how a filter's parsed value is compared with the field it reads.

A rule is built once per table entry from the entry's field path and the table's root (the
object inside the subject that paths start at), so the path a filter documents is the path it
reads. The rules are strict about types because event JSON is not: a boolean is never a number,
a container never equals a scalar, and a missing field matches only where a rule says so.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeGuard

from luna_sender.filters.base import MISSING, get_path
from luna_sender.filters.common import GeoBox

Path = tuple[str, ...]
Root = Callable[[Any], Any]
Match = Callable[[Any, Any], bool]
Rule = Callable[[Path, Root], Match]


def hashable(value: Any) -> bool:
    """Hashable JSON: safe to look up in a set (a list or dict value would raise)."""
    return isinstance(value, (str, int, float, bool)) or value is None


def is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_of(lowercase: bool) -> Rule:
    def rule(path: Path, root: Root) -> Match:
        """The scalar at ``path`` is in the accepted set. A missing or null field matches only a
        ``null`` item (None in the set); booleans and containers never match."""

        def match(allowed: frozenset[Any], subject: Any) -> bool:
            value = get_path(root(subject), path)
            if value is MISSING or value is None:
                return None in allowed
            if lowercase and isinstance(value, str):
                value = value.lower()
            return (
                isinstance(value, (str, int, float))
                and not isinstance(value, bool)
                and value in allowed
            )

        return match

    return rule


one_of = _one_of(lowercase=False)
# For uuids: the parser lowercases the accepted ones, events may carry either case.
one_of_lowercase = _one_of(lowercase=True)


def any_of(path: Path, root: Root) -> Match:
    """A list field shares at least one value with the set, or a scalar field is in it."""

    def match(allowed: frozenset[Any], subject: Any) -> bool:
        value = get_path(root(subject), path)
        if isinstance(value, list):
            return any(hashable(v) and v in allowed for v in value)
        return hashable(value) and value is not None and value in allowed

    return match


def _bound(holds: Callable[[Any, Any], bool]) -> Rule:
    def rule(path: Path, root: Root) -> Match:
        """The number at ``path`` stands in ``holds`` to the bound; a non-number never does."""

        def match(bound: float, subject: Any) -> bool:
            value = get_path(root(subject), path)
            return is_number(value) and holds(value, bound)

        return match

    return rule


at_least = _bound(operator.ge)
below = _bound(operator.lt)


def all_of(path: Path, root: Root) -> Match:
    """The list at ``path`` holds every wanted string (tags: each one narrows the selection)."""

    def match(wanted: frozenset[str], subject: Any) -> bool:
        value = get_path(root(subject), path)
        if not isinstance(value, list):
            return False
        return wanted.issubset(v for v in value if isinstance(v, str))

    return match


def contains(path: Path, root: Root) -> Match:
    """The string at ``path`` contains the needle, case-sensitive."""

    def match(needle: str, subject: Any) -> bool:
        value = get_path(root(subject), path)
        return isinstance(value, str) and needle in value

    return match


def inside(path: Path, root: Root) -> Match:
    """The ``{longitude, latitude}`` object at ``path`` lies inside the box (edges included)."""

    def match(box: GeoBox, subject: Any) -> bool:
        pos = get_path(root(subject), path)
        if not isinstance(pos, dict):
            return False
        lon, lat = pos.get("longitude"), pos.get("latitude")
        if not (is_number(lon) and is_number(lat)):
            return False
        return box.lon_min <= lon <= box.lon_max and box.lat_min <= lat <= box.lat_max

    return match
