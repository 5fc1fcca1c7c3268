"""Filter groups (the sockets sharing one compiled filter) and the equality indexes over them,
so matching costs O(candidates), not O(groups).

A filter that pins an equality field (``handler_ids``, ``stream_ids``, ``sources`` on ``/ws``;
``event_type`` on ``/ws/general``) puts its group into buckets keyed by the accepted values of the
most selective such field. For an event, the candidates are the buckets its own values select plus
the groups without any indexable filter; the full predicate still decides. A group sits in exactly
one index under distinct values, and an event has one value per field, so no group is returned
twice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from luna_sender import errors
from luna_sender.delivery.matching import reads_of
from luna_sender.filters.base import CompiledFilter
from luna_sender.wire import READS_ALL, READS_HEAD, READS_NOTHING

if TYPE_CHECKING:
    from luna_sender.config.sections import LimitSettings
    from luna_sender.delivery.connection import Connection

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


@dataclass(slots=True)
class Group:
    """Connections whose filters compiled to the same key: one predicate run serves them all.

    ``conns`` is a dict used as an ordered set: a fan-out writes its sockets in the order they
    joined (first subscribed, first written) and so walks the Connection objects, their
    transports and the kernel's sockets in the order they were allocated. A set walked them in
    hash order, all over memory: at W1's low rates (one event, 1,000 writes per wake-up) that
    cost 10-25 % more CPU per delivery, user and system time alike (docs/performance.md).
    """

    filter: CompiledFilter
    conns: dict[Connection, None] = field(default_factory=dict)

    def send(self, frame: bytes) -> int:
        sent = 0
        for conn in self.conns:
            if conn.send(frame):
                sent += 1
        return sent

    def send_batch(self, frames: list[bytes]) -> list[int]:
        """The frames of one loop turn, in order, as one write per socket; sockets per frame."""
        if len(frames) == 1:
            return [self.send(frames[0])]
        data = b"".join(frames)  # once per group: every socket gets the same bytes
        head, count = len(data) - len(frames[-1]), len(frames)
        whole = 0
        counts = [0] * count
        for conn in self.conns:
            done = conn.send_joined(data, head, count)
            if done:
                whole += 1
            elif done is None:  # near the cap: frame by frame, exactly as if not joined
                for i, frame in enumerate(frames):
                    counts[i] += conn.send(frame)
        return [whole + n for n in counts]


class Batch:
    """One loop turn's frames per group, in bus order, sent as one write per socket."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames: dict[int, tuple[Group, list[bytes]]] = {}

    def add(self, group: Group, frame: bytes) -> tuple[int, int]:
        """Queue ``frame`` for ``group``; where to find its count in :meth:`send`'s result."""
        entry = self.frames.get(id(group))
        if entry is None:
            entry = self.frames[id(group)] = (group, [])
        entry[1].append(frame)
        return id(group), len(entry[1]) - 1

    def send(self) -> dict[int, list[int]]:
        return {key: group.send_batch(frames) for key, (group, frames) in self.frames.items()}


class GroupSet:
    """The groups of one account (or of all general subscribers) with their equality index.

    ``reads`` is how far a face event must be decoded for these groups (the most any of their
    filters reads, :func:`matching.reads_of`): on the platform's load most sockets filter on
    the source or nothing, and the rest of an event is then never decoded, only forwarded.
    """

    __slots__ = ("_levels", "groups", "index", "reads")

    def __init__(self, index: GroupIndex[Group]) -> None:
        self.groups: dict[Hashable, Group] = {}
        self.index = index
        self.reads = READS_NOTHING
        self._levels = [0, 0, 0]  # groups per reads level

    def __bool__(self) -> bool:
        return bool(self.groups)

    def add(self, conn: Connection) -> None:
        group = self.groups.get(conn.filter.key)
        if group is None:
            group = self.groups[conn.filter.key] = Group(conn.filter)
            self.index.add(id(group), group, conn.filter.index)
            self._count(conn.filter, 1)
        group.conns[conn] = None

    def remove(self, conn: Connection) -> bool:
        """Remove ``conn``; True when that closed its group."""
        group = self.groups.get(conn.filter.key)
        if group is not None:
            group.conns.pop(conn, None)
            if not group.conns:
                del self.groups[conn.filter.key]
                self.index.remove(id(group))
                self._count(conn.filter, -1)
                return True
        return False

    def _count(self, compiled: CompiledFilter, step: int) -> None:
        levels = self._levels
        levels[reads_of(compiled)] += step
        self.reads = (
            READS_ALL if levels[READS_ALL] else READS_HEAD if levels[READS_HEAD] else READS_NOTHING
        )


class Budgets:
    """The service-wide budgets a new socket must fit, or 503 before its handshake: scanning
    LIKE filters summed over distinct groups (each group runs its own once per event; 29012)
    and :attr:`CompiledFilter.cost` over sockets (29013; a twin of a live filter keeps its own
    copy). docs/reliability.md, "LIKE budget" and "Filter memory"."""

    __slots__ = ("filter_bytes", "limits", "scanning_likes")

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits
        self.scanning_likes = self.filter_bytes = 0

    def admit(self, compiled: CompiledFilter, new_group: bool) -> None:
        likes = compiled.scanning_likes if new_group else 0
        if likes and self.scanning_likes + likes > self.limits.like_scanning_max:
            raise errors.LunaError(errors.TOO_MANY_LIKE_FILTERS, self.limits.like_scanning_max)
        if self.filter_bytes + compiled.cost > self.limits.filter_memory_max_bytes:
            raise errors.LunaError(errors.FILTER_MEMORY_FULL, self.limits.filter_memory_max_bytes)
        self.scanning_likes += likes
        self.filter_bytes += compiled.cost

    def release(self, compiled: CompiledFilter, group_closed: bool) -> None:
        self.filter_bytes -= compiled.cost
        if group_closed:
            self.scanning_likes -= compiled.scanning_likes
