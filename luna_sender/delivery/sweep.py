"""The hub's housekeeping, once per second at most: stalled sockets, channels whose recording
linger ended, and the history gauge.

Apart from the fan-out so that nothing on the delivery path waits for it, and so that a sweep
that fails for one socket (or a Redis that hangs the gauge) leaves the next sweep running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from luna_sender.delivery.connection import CLOSE_POLICY, STALLED_REASON
from luna_sender.runtime.sockets import reset, sendable

if TYPE_CHECKING:
    from luna_sender.delivery.hub import Hub

log = logging.getLogger("luna_sender.hub")
HISTORY_GAUGE_INTERVAL = 5.0


class Sweep:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._gauge: asyncio.Task[None] | None = None

    async def run(self) -> None:
        hub = self.hub
        interval = min(1.0, hub.settings.ws.stall_timeout / 4)
        timeout = hub.settings.ws.stall_timeout
        next_size = 0.0
        try:
            while True:
                await asyncio.sleep(interval)
                now = time.monotonic()
                if now >= next_size:  # the history gauge: a Redis round trip only while recording
                    next_size = now + HISTORY_GAUGE_INTERVAL
                    if self._gauge is None or self._gauge.done():  # off the sweep: Redis may hang
                        self._gauge = asyncio.create_task(
                            self._history_gauge(), name="history-gauge"
                        )
                prefix = len(hub.face_channel(""))
                for channel in hub.recorder.expired():
                    if channel != hub.general_channel and not hub.held(channel[prefix:]):
                        await hub.bus.unsubscribe(channel)
                try:
                    self._evict_stalled(now, timeout)
                except Exception:  # the sweep must outlive any one socket's trouble
                    log.exception("stall sweep failed")
        finally:
            if self._gauge is not None:
                self._gauge.cancel()

    def _evict_stalled(self, now: float, timeout: float) -> None:
        """Apart from run, whose frame sleeps: a loop variable there kept the last socket it
        swept, closed since, and its filter alive until another socket was swept."""
        hub = self.hub
        for conn in list(hub.connections):
            # Nothing unsent and no stall watched (most sockets, every second): no call at all
            if conn.stall_since is None and not conn.transport.get_write_buffer_size():
                continue
            if not conn.stalled(now, timeout):
                continue
            if sendable(conn.transport):  # it read while this process stood still
                conn.stall_since = now
                continue
            if not conn.closing:
                hub.evict(conn, CLOSE_POLICY, STALLED_REASON)
            elif conn.close_code is None and conn.transport.is_closing():
                # Closing, and still taking nothing: a client that half-closed while it had
                # stopped reading was held until the heartbeat (an outside pass: 50 such
                # sockets, 25 MB of kernel memory), out of this sweep's reach.
                reset(conn.transport, "ws_stalled")

    async def _history_gauge(self) -> None:
        if (size := await self.hub.recorder.size()) is not None:
            self.hub.metrics.history_size.set(size)
