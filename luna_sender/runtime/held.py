"""The delivery path's metric updates, held in one object each and added to prometheus-client's
values when the metrics are folded (runtime/metrics.py ``Metrics.fold``: before every scrape, and
every second with ``--workers``).

Why held: at low event rates each bus message is a wake-up of its own and finds the caches cold,
so the cost of an update is the objects it touches. prometheus-client's ``inc``/``observe`` reach
a value through several (a closure, its cell, the value, a lock); here an update touches one.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


class HeldCount:
    """A counter child's increments, held here and added to the child by :meth:`fold`."""

    __slots__ = ("_value", "pending")

    def __init__(self, child: Any) -> None:
        self.pending: float = 0
        self._value = child._value  # prometheus-client's value (in memory, or a shared file)

    def inc(self, amount: float = 1) -> None:
        self.pending += amount

    def fold(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, 0
            self._value.inc(pending)


class HeldObserver:
    """A histogram child's ``observe`` as a bisection into counts held here (see
    :class:`HeldCount`), added to the child's buckets and sum by :meth:`fold`.

    prometheus-client's own walks its buckets in a Python loop after an observability check,
    then takes a lock per value: ~1.2 us, twice per delivered bus message; here that lock is
    taken once per bucket per fold. The same buckets are counted (the first whose bound is >=
    the amount); the sum is added once per fold, so its last bits may differ from a sum taken
    one amount at a time. Amounts are finite here (durations, clock differences).
    """

    __slots__ = ("_bounds", "_buckets", "_sum", "counts", "total")

    def __init__(self, child: Any) -> None:
        self._bounds = list(child._upper_bounds)
        self._buckets = child._buckets
        self._sum = child._sum
        self.counts = [0] * len(self._bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.total += amount
        self.counts[bisect_left(self._bounds, amount)] += 1

    def fold(self) -> None:
        counts = self.counts
        for i, count in enumerate(counts):
            if count:
                self._buckets[i].inc(count)
                counts[i] = 0
        if self.total:
            total, self.total = self.total, 0.0
            self._sum.inc(total)
