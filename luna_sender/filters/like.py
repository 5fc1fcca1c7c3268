"""SQL LIKE without a backtracking regex: ``%`` any run, ``_`` exactly one character.

A translated regex (``%`` -> ``.*``) backtracks: ``%a%a%a...%b`` against forty ``a`` took longer
than 30 s and froze the event loop for every socket. Here the pattern is split at ``%`` into
segments of fixed length (literal runs at fixed offsets, ``_`` in between). The first segment is
anchored at the start, the last at the end, and each middle one is placed at its leftmost
occurrence after the previous one — for ``%``-separated segments the leftmost placement never
loses a match, so no choice is ever revisited. Literal runs are found with ``str.find`` and
checked with ``str.startswith`` (C loops); the Python-level work is at most one candidate check
per character of the value, each costing at most one call per literal run of the segment: the
worst case is linear in pattern x value. Python-level steps still cost ~0.1-0.2 us each, so
both factors are capped (settings ``limits.like_*``): a value longer than the cap is not inspected
and matches neither ``like`` nor ``nlike`` (measurements in docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass

ANY_RUN = "%"
ONE_CHAR = "_"


@dataclass(frozen=True, slots=True)
class Segment:
    """A ``%``-free piece of the pattern: ``length`` characters, ``runs`` at fixed offsets.

    ``runs`` is ordered longest first (the longest run is the rarest candidate in practice and
    serves as the search anchor); ``_`` positions are the gaps between the runs.
    """

    length: int
    runs: tuple[tuple[int, str], ...]

    def at(self, value: str, start: int) -> bool:
        """The segment matches ``value`` at ``start``; the caller checked the length fits."""
        for offset, run in self.runs:  # noqa: SIM110 - a plain loop is the fast one here
            if not value.startswith(run, start + offset):
                return False
        return True

    def find(self, value: str, start: int, stop: int) -> int:
        """Leftmost ``i >= start`` where the segment matches and ends by ``stop``; -1 if none."""
        last_start = stop - self.length
        if last_start < start:
            return -1
        if not self.runs:
            return start
        offset, anchor = self.runs[0]
        rest = self.runs[1:]
        end = last_start + offset + len(anchor)
        pos = value.find(anchor, start + offset, end)
        while pos >= 0:
            i = pos - offset
            for off, run in rest:
                if not value.startswith(run, i + off):
                    break
            else:
                return i
            pos = value.find(anchor, pos + 1, end)
        return -1


def _segment(text: str) -> Segment:
    runs: list[tuple[int, str]] = []
    offset = 0
    for piece in text.split(ONE_CHAR):
        if piece:
            runs.append((offset, piece))
        offset += len(piece) + 1
    runs.sort(key=lambda r: -len(r[1]))
    return Segment(len(text), tuple(runs))


class LikePattern:
    """A compiled LIKE pattern; ``canonical`` (repeated ``%`` collapsed) identifies it."""

    __slots__ = ("_exact", "_first", "_last", "_middle", "_min_len", "canonical")

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
        self._min_len = self._first.length + sum(s.length for s in self._middle) + (
            0 if self._exact else self._last.length)

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
