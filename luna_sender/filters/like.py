"""SQL LIKE without a backtracking regex: ``%`` any run, ``_`` exactly one character.

A translated regex (``%`` -> ``.*``) backtracks: ``%a%a%a...%b`` against forty ``a`` took longer
than 30 s and froze the event loop for every socket. Here the pattern is split at ``%`` into
segments of fixed length (literal runs at fixed offsets, ``_`` in between). The first segment is
anchored at the start, the last at the end, and each middle one is placed at its leftmost
occurrence after the previous one — for ``%``-separated segments the leftmost placement never
loses a match, so no choice is ever revisited. Literal runs are found with ``str.find`` and
checked with ``str.startswith`` (C loops); a middle segment holding ``_`` is scanned with
shift-and (:meth:`Segment.find`), a few integer operations per character. Each character of the
value is looked at by at most one segment, so the worst case is linear in the value (times the
pattern's width in bits). Python-level steps still cost ~0.2 us each, so both are capped
(settings ``limits.like_*``): a value longer than the cap is not inspected and matches neither
``like`` nor ``nlike`` (measurements in docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass

ANY_RUN = "%"
ONE_CHAR = "_"


@dataclass(frozen=True, slots=True, eq=False)
class Segment:
    """A ``%``-free piece of the pattern: ``length`` characters, ``runs`` at fixed offsets.

    ``runs`` is ordered longest first (the longest run is the rarest candidate in practice and
    serves as the search anchor); ``_`` positions are the gaps between the runs. ``table`` and
    ``wild`` are the shift-and masks used to search a segment that holds a ``_``.
    """

    length: int
    runs: tuple[tuple[int, str], ...]
    table: dict[str, int]
    wild: int

    def at(self, value: str, start: int) -> bool:
        """The segment matches ``value`` at ``start``; the caller checked the length fits."""
        for offset, run in self.runs:  # noqa: SIM110 - a plain loop is the fast one here
            if not value.startswith(run, start + offset):
                return False
        return True

    def find(self, value: str, start: int, stop: int) -> int:
        """Leftmost ``i >= start`` where the segment matches and ends by ``stop``; -1 if none.

        A literal segment is one ``str.find``. With ``_`` in it, checking every candidate of the
        anchor run costs one call per run — ``a_a_..._b`` against ``aaa...`` makes that
        characters x runs — so the scan is shift-and instead: bit j of ``state`` says the last j+1
        characters match the segment's first j+1, a constant number of integer operations per
        character whatever the pattern. Whenever no partial match is alive it jumps with
        ``str.find`` to the next occurrence of the anchor run, so common values stay C-speed.
        """
        length = self.length
        last_start = stop - length
        if last_start < start:
            return -1
        if not self.runs:
            return start
        offset, anchor = self.runs[0]
        if len(anchor) == length:
            return value.find(anchor, start, stop)
        anchor_end = last_start + offset + len(anchor)
        table, wild, high = self.table, self.wild, 1 << (length - 1)
        state = 0
        index = start
        while index < stop:
            if not state:
                found = value.find(anchor, index + offset, anchor_end)
                if found < 0:
                    return -1
                index = found - offset
            state = ((state << 1) | 1) & table.get(value[index], wild)
            if state & high:
                return index - length + 1
            index += 1
        return -1


def _segment(text: str) -> Segment:
    runs: list[tuple[int, str]] = []
    offset = 0
    for piece in text.split(ONE_CHAR):
        if piece:
            runs.append((offset, piece))
        offset += len(piece) + 1
    runs.sort(key=lambda r: -len(r[1]))
    wild = sum(1 << j for j, char in enumerate(text) if char == ONE_CHAR)
    table = {
        char: wild | sum(1 << j for j, c in enumerate(text) if c == char)
        for char in set(text) - {ONE_CHAR}
    }
    return Segment(len(text), tuple(runs), table, wild)


class LikePattern:
    """A compiled LIKE pattern; ``canonical`` (repeated ``%`` collapsed) identifies it."""

    __slots__ = ("_exact", "_first", "_last", "_middle", "_min_len", "canonical", "scanning")

    def __init__(self, pattern: str) -> None:
        parts = pattern.split(ANY_RUN)
        self._exact = len(parts) == 1
        middle = [p for p in parts[1:-1] if p]
        self._first = _segment(parts[0])
        self._last = _segment(parts[-1]) if not self._exact else self._first
        self._middle = tuple(_segment(p) for p in middle)
        if self._exact:
            self.canonical = pattern
        else:
            self.canonical = ANY_RUN.join([parts[0], *middle, parts[-1]])
        # A middle piece holding ``_`` and a literal is searched by shift-and, a Python loop
        # per character (~0.6 us): the one shape whose cost matters (docs/reliability.md).
        self.scanning = any(s.wild and s.runs for s in self._middle)
        self._min_len = (
            self._first.length
            + sum(s.length for s in self._middle)
            + (0 if self._exact else self._last.length)
        )

    def __repr__(self) -> str:
        return f"LikePattern({self.canonical!r})"

    def match(self, value: str) -> bool:
        """Whole-value, case-sensitive match, character (code point) by character."""
        size = len(value)
        if size < self._min_len:
            return False
        first = self._first
        if self._exact:
            return size == first.length and first.at(value, 0)
        last = self._last
        end = size - last.length
        if not (first.at(value, 0) and last.at(value, end)):
            return False
        pos = first.length
        for segment in self._middle:
            found = segment.find(value, pos, end)
            if found < 0:
                return False
            pos = found + segment.length
        return True


def compile_like(pattern: str, max_chars: int, max_wildcards: int) -> LikePattern:
    """Check the caps, then compile; ValueError with a reason for the 12012 answer."""
    if len(pattern) > max_chars:
        raise ValueError(f"LIKE pattern longer than {max_chars} characters")
    wildcards = pattern.count(ANY_RUN) + pattern.count(ONE_CHAR)
    if wildcards > max_wildcards:
        raise ValueError(f"LIKE pattern has more than {max_wildcards} wildcards (% and _)")
    return LikePattern(pattern)
