"""The in-process bus: the single-node default, no Redis needed.

Delivery is scheduled with ``call_soon`` rather than made inside ``publish`` so a publishing
request never runs the fan-out on its own stack and ordering matches a real broker's.
"""

from __future__ import annotations

import asyncio

from luna_sender.bus.base import BusError, MessageHandler


class MemoryBus:
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._handler: MessageHandler | None = None
        self._channels: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, on_message: MessageHandler) -> None:
        self._handler = on_message
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._handler = None

    async def publish(self, channel: str, data: bytes) -> None:
        if self._handler is None or self._loop is None:
            raise BusError("bus is not running", "not running")
        if channel in self._channels:
            self._loop.call_soon(self._handler, channel, data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def flush(self, timeout: float) -> None:
        # Deliveries are call_soon callbacks: two loop turns run all scheduled before now.
        for _ in range(2):
            await asyncio.sleep(0)

    async def check(self) -> None:
        if self._handler is None:
            raise BusError("bus is not running", "not running")

    @property
    def connected(self) -> bool:
        return self._handler is not None
