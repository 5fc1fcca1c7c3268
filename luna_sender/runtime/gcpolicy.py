"""Keep long-lived connection state out of the cyclic collector's full passes.

Every websocket holds ~70 GC-tracked objects (tasks, coroutines, the request, parser, timers),
and a full (generation 2) collection walks all of them: ~65 ms at 1,000 sockets measured, so
seconds at the 20,000 a process accepts. CPython starts one whenever enough objects survived
into the old generation, i.e. at a moment nobody chose, and every event in flight waits for it:
a stall that shows up as the fan-out's latency tail (docs/performance.md).

Subscribers live for minutes or hours, so their objects are moved to the permanent generation
(``gc.freeze()``, O(1)) once they exist; collections then only walk what is young. Frozen
objects freed by reference counting are freed as usual; only reference *cycles* among frozen
objects wait. Those are reclaimed in one planned pass (``unfreeze`` + ``collect``) once enough
connections have closed since the last one, so memory stays bounded under churn and the pause
is paid after a reconnect wave, not during steady delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from luna_sender.config import GcSettings
from luna_sender.runtime.heap import HeapTrim
from luna_sender.runtime.metrics import Metrics

log = logging.getLogger("luna_sender.gc")
# Pauses kept between two flushes at most; more are dropped (counted as lost, never blocking).
PENDING_MAX = 10_000


class GcPolicy:
    def __init__(
        self,
        settings: GcSettings,
        metrics: Metrics,
        live: Callable[[], int],
        closed: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._live = live  # connections open now
        self._closed = closed  # connections closed since start (monotonic counter)
        self._task: asyncio.Task[None] | None = None
        self._started_at: float | None = None
        self._frozen_live = -1  # live connections at the last freeze
        self._closed_at_collect = 0  # closed counter at the last full pass
        self._pending: list[tuple[int, float]] = []  # pauses not yet in the histogram
        self._flusher: asyncio.Task[None] | None = None
        self.heap = HeapTrim()

    # --- pause accounting (all collections, frozen or not) ----------------------------------

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """Only record here: a collection can start inside any allocation, including one made
        while prometheus-client holds its value lock (multiprocess mode: one lock for every
        metric), so observing from this callback deadlocked a worker. :meth:`flush` moves the
        pauses into the histogram from ordinary code."""
        if phase == "start":
            self._started_at = time.perf_counter()
        elif self._started_at is not None:
            if len(self._pending) < PENDING_MAX:
                self._pending.append((info["generation"], time.perf_counter() - self._started_at))
            self._started_at = None

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for generation, seconds in pending:
            self.metrics.gc_pause[generation].observe(seconds)

    async def _flush_every_second(self) -> None:
        """Also the heap's look, on the same wake-up: a second timer would be a second
        (cold) wake-up every second on a quiet process."""
        while True:
            await asyncio.sleep(1.0)
            self.flush()
            try:
                self.heap.check(self._closed())
            except Exception:  # never let housekeeping kill the service
                log.exception("heap trim failed")

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self.metrics.before_render(self.flush)
        self._flusher = asyncio.create_task(self._flush_every_second(), name="gc-pause-flush")
        if self.settings.freeze_interval <= 0:
            return
        # What import and start-up built lives as long as the process: freeze it now.
        self._freeze()
        self._task = asyncio.create_task(self._run(), name="gc-policy")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            gc.unfreeze()  # whatever we froze becomes collectable again
            self.metrics.gc_frozen.set(gc.get_freeze_count())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.freeze_interval)
            try:
                self.tick()
            except Exception:  # never let housekeeping kill the service
                log.exception("gc policy step failed")

    def tick(self) -> None:
        live, closed = self._live(), self._closed()
        churn = closed - self._closed_at_collect
        if churn >= max(self.settings.min_churn, self.settings.churn_ratio * live):
            self.full_pass()
        elif live != self._frozen_live:
            self._freeze()

    def full_pass(self) -> None:
        """Reclaim cycles among frozen objects of closed connections, then freeze again."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        self._closed_at_collect = self._closed()
        self._freeze()
        self.metrics.gc_full_passes.inc()
        log.info(
            "gc full pass: %d unreachable objects in %.1f ms",
            found,
            1000 * (time.perf_counter() - started),
        )

    def _freeze(self) -> None:
        gc.freeze()
        self._frozen_live = self._live()
        self.metrics.gc_frozen.set(gc.get_freeze_count())
