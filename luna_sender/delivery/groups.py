"""Equality indexes over filter groups, so matching costs O(candidates), not O(groups).

A filter that pins an equality field (``handler_ids``, ``stream_ids``, ``sources`` on ``/ws``;
``event_type`` on ``/ws/general``) puts its group into buckets keyed by the accepted values of the
most selective such field. For an event, the candidates are the buckets its own values select plus
the groups without any indexable filter; the full predicate still decides. A group sits in exactly
one index under distinct values, and an event has one value per field, so no group is returned
twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

G = TypeVar("G")

# Field name -> how to read the event's value for it from a subject.
Extractor = Callable[[Any], Any]


class GroupIndex(Generic[G]):
    def __init__(self, extractors: dict[str, Extractor]) -> None:
        # Order of ``extractors`` is the order of preference (most selective first).
        self._extractors = extractors
        self._buckets: dict[str, dict[Any, dict[int, G]]] = {name: {} for name in extractors}
        self._unindexed: dict[int, G] = {}
        self._placement: dict[int, tuple[str | None, frozenset[Any]]] = {}

    def __len__(self) -> int:
        return len(self._placement)

    def add(self, key: int, group: G, index: dict[str, frozenset[Any]]) -> None:
        for name in self._extractors:
            values = index.get(name)
            if values:
                for value in values:
                    self._buckets[name].setdefault(value, {})[key] = group
                self._placement[key] = (name, values)
                return
        self._unindexed[key] = group
        self._placement[key] = (None, frozenset())

    def remove(self, key: int) -> None:
        name, values = self._placement.pop(key, (None, frozenset()))
        if name is None:
            self._unindexed.pop(key, None)
            return
        buckets = self._buckets[name]
        for value in values:
            bucket = buckets.get(value)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del buckets[value]

    def candidates(self, subject: Any) -> Iterator[G]:
        yield from self._unindexed.values()
        for name, extract in self._extractors.items():
            buckets = self._buckets[name]
            if not buckets:
                continue
            value = extract(subject)
            try:
                bucket = buckets.get(value)
            except TypeError:  # an unhashable value in the event matches no bucket
                continue
            if bucket:
                yield from bucket.values()


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return _NO_MATCH


_NO_MATCH = object()


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else _scalar(value)


def face_index() -> GroupIndex[Any]:
    """Subjects are ``(event, FaceMessage)``; keys match events.py's ``FilterSpec.index``."""
    return GroupIndex(
        {
            "handler_id": lambda s: (
                _lower(s[1].handler_id) if s[1].handler_id is not None else _NO_MATCH
            ),
            "stream_id": lambda s: _lower(s[0].get("stream_id")),
            "source": lambda s: _scalar(s[0].get("source")),
        }
    )


def general_index() -> GroupIndex[Any]:
    """Subjects are GeneralMessage; ``event_type`` is the only indexed field."""
    return GroupIndex(
        {"event_type": lambda m: _scalar(m.event_type) if m.event_type is not None else _NO_MATCH}
    )
