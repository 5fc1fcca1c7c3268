"""Give the system back what a burst of requests left free in the C heap.

Why: request heads, bodies and refused upgrades above pymalloc's 512 bytes come from glibc's
malloc, which keeps what is freed for reuse instead of returning it. 1,000 simultaneous upgrades
with 79 KB queries left 64-237 MB of RSS that never went away, though nothing held it any more:
to an orchestrator's memory limit that looks like a leak, and the next burst's legitimate
growth lands on top of it. ``malloc_trim(0)`` returns the free pages (measured: +64 MB -> +10 MB).

It runs from the once-a-second housekeeping only when the resident size has moved by
:data:`STEP_BYTES` since the last trim and stopped growing, so steady delivery pays one small
/proc read a second, and a service that grows or shrinks for real (sockets opening, closing)
trims at most once per step of change. A trim that returns a few hundred MB holds the process
for tens of milliseconds (25-55 ms measured for 200-460 MB), which is why it waits for a step.
Where the C library has no ``malloc_trim`` (musl), this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("luna_sender.gc")
STEP_BYTES = 32 * 1024 * 1024
# Sockets closed since the last trim that call for one though the resident size barely moved,
# at most once per CHURN_INTERVAL seconds: what closed sockets free stays in malloc's free lists
# and hardly lowers the resident size. An outside pass evicted 300 stalled sockets just after a
# trim; the 120 MB their frames had held came back as a 13 MB fall, under the step, and stayed.
CHURN = 100
CHURN_INTERVAL = 10.0
PAGE = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


class HeapTrim:
    def __init__(self, step: int = STEP_BYTES) -> None:
        self.step = step
        self._trim = _malloc_trim()
        self._mark = resident_bytes() if self._trim is not None else None
        self._last = self._mark or 0
        self.trims = 0
        self._closed_mark = 0  # sockets closed (since start) at the last trim
        self._trimmed_at = time.monotonic()

    def check(self, closed: int = 0) -> None:
        """Trim once the resident size stands :attr:`step` away from where the last trim left
        it, either way, and has stopped rising.

        Not while it rises: in the middle of a burst the memory is still in use (trimming there
        returned 56 of a burst's 140 MB, the rest stayed). And downwards too: sockets that were
        open during a trim and closed after it free memory that the fall of the resident size
        shows only in part (an outside pass: 332 MB kept with no socket open, of which a later
        trim returned 160). Or once :data:`CHURN` sockets have closed since the last trim."""
        if self._trim is None or self._mark is None:
            return
        rss = resident_bytes()
        if rss is None:
            return
        rising, self._last = rss > self._last, rss
        now = time.monotonic()
        churned = closed - self._closed_mark >= CHURN and now - self._trimmed_at >= CHURN_INTERVAL
        stepped = abs(rss - self._mark) >= self.step
        if (stepped or churned) and not rising:
            self._trim(0)
            self.trims += 1
            self._closed_mark, self._trimmed_at = closed, now
            after = resident_bytes() or rss
            self._mark = self._last = after
            # a churn trim that found nothing is routine on a busy service: not worth a line
            (log.info if stepped or rss - after >= 1e6 else log.debug)(
                "returned %.1f MB of freed heap to the system (resident %.1f MB)",
                (rss - after) / 1e6,
                after / 1e6,
            )
