"""When the heap trim runs (runtime/heap.py): on a step of resident size, and after many sockets
closed, which free memory that the resident size hardly shows (an outside pass kept 120 MB after
300 evictions: the 13 MB fall was under the step). The trims are real ``malloc_trim`` calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from luna_sender.runtime import heap


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(heap, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_closed_sockets_lead_to_a_trim_at_most_once_an_interval(clock: list[float]) -> None:
    trim = heap.HeapTrim(step=1 << 40)  # no step of resident size will ever do it
    if trim._trim is None:
        pytest.skip("no malloc_trim in this C library")
    trim.check(closed=0)
    clock[0] += heap.CHURN_INTERVAL
    trim.check(closed=heap.CHURN - 1)
    assert trim.trims == 0  # too few closed
    trim.check(closed=heap.CHURN)
    assert trim.trims == 1
    clock[0] += heap.CHURN_INTERVAL / 2
    trim.check(closed=3 * heap.CHURN)
    assert trim.trims == 1  # not again within the interval
    clock[0] += heap.CHURN_INTERVAL / 2
    trim.check(closed=3 * heap.CHURN)
    assert trim.trims == 2
    clock[0] += heap.CHURN_INTERVAL
    trim.check(closed=3 * heap.CHURN + 1)
    assert trim.trims == 2  # nothing closed since


def test_no_churn_trim_while_the_resident_size_rises(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    trim = heap.HeapTrim(step=1 << 40)
    if trim._trim is None:
        pytest.skip("no malloc_trim in this C library")
    sizes = iter([100 << 20, 150 << 20, 150 << 20, 150 << 20])
    monkeypatch.setattr(heap, "resident_bytes", lambda: next(sizes))
    trim._last = 50 << 20
    clock[0] += heap.CHURN_INTERVAL
    trim.check(closed=heap.CHURN)  # 100 MB, up from 50: a burst still under way
    trim.check(closed=heap.CHURN)  # 150 MB: still rising
    assert trim.trims == 0
    trim.check(closed=heap.CHURN)  # stopped rising: trimmed
    assert trim.trims == 1
