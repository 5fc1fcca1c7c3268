"""Plugins used by the tests: a broken one and a slow one (loaded by dotted path)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from luna_sender.plugins.host import BusEvent


class Broken:
    async def start(self, context: Any) -> None:
        raise RuntimeError("cannot start")


class SlowSettings(BaseModel):
    delay: float = 2.0


class Slow:
    """Every hook sleeps: proves hooks run off the delivery path."""

    Settings = SlowSettings
    seen: list[BusEvent] = []
    started = asyncio.Event

    def __init__(self, settings: SlowSettings) -> None:
        self.delay = settings.delay

    async def event_received(self, event: BusEvent) -> None:
        Slow.seen.append(event)
        await asyncio.sleep(self.delay)

    async def request_finished(self, *args: Any) -> None:
        await asyncio.sleep(self.delay)


class HangStop:
    """An async stop() that never returns: the shutdown must cut it."""

    async def stop(self) -> None:
        await asyncio.sleep(3600)


class HangStopToo(HangStop):
    pass


class Raising:
    """A hook that fails on every notification."""

    def event_received(self, event: BusEvent) -> None:
        raise ValueError("broken hook")


class Stubborn:
    """An async stop() that catches its cancellation and goes on: only the stop's deadline
    (the watchdog in runtime.lifecycle) ends the process."""

    async def stop(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
