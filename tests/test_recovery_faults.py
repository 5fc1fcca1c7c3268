"""Recovery when the history misbehaves (#18): slow, failing or frozen histories never stall
live delivery, never deliver twice, and answer reconnects with ``recovered: false``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import account, assert_silent, recv_json
from .test_recovery_e2e import channel, publish, tags_until


async def test_history_down_live_goes_on_without_offset(memory_app: LiveApp) -> None:
    """A history that fails never stalls live delivery, and since answers recovered false."""

    class Broken:
        def append_nowait(self, channel: str, data: bytes) -> Any:
            raise ConnectionError("history down")

        async def since(self, channel: str, offset: Any) -> Any:
            raise AssertionError("not asked while the breaker is open")

        async def size(self) -> int:
            return 0

        async def close(self) -> None:
            return None

    hub = memory_app.app[CTX].hub
    hub.recorder.history = Broken()  # type: ignore[assignment]
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "1")
        got = await recv_json(ws)
        assert got["event"]["user_data"] == "1" and "offset" not in got
    async with memory_app.ws(account=acc, params={"since": "abc.1-1"}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
        await publish(memory_app, acc, "2")
        assert (await recv_json(ws))["event"]["user_data"] == "2"


async def test_seam_with_a_slow_history_drops_what_the_replay_covered(memory_app: LiveApp) -> None:
    """Offsets that answer after the replay was read (a slow Redis): the live copies of the
    replayed events reach the seam after it went live, and are still dropped."""
    from luna_sender.bus.history import MemoryHistory, Offset

    class Slow(MemoryHistory):
        def append_nowait(self, channel: str, data: bytes) -> asyncio.Future[Offset]:
            offset = self._append(channel, data)  # recorded now, answered later
            done: asyncio.Future[Offset] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.15, done.set_result, offset)
            return done

        async def since(self, channel: str, offset: Offset) -> Any:
            await asyncio.sleep(0.02)
            return await super().since(channel, offset)

    memory_app.app[CTX].hub.recorder.history = Slow()
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "1")
        last = (await recv_json(ws))["offset"]
    for n in range(2, 6):
        await publish(memory_app, acc, str(n))

    async def more() -> None:
        for n in range(6, 26):
            await publish(memory_app, acc, str(n))
            await asyncio.sleep(0.005)

    async with memory_app.ws(account=acc, params={"since": last}) as ws:
        task = asyncio.create_task(more())
        report = await recv_json(ws)
        assert report["recovery"]["recovered"] is True
        got = await tags_until(ws, "25")
        await task
        await assert_silent(ws)
    assert got == [str(n) for n in range(2, 26)]


async def test_a_history_that_never_answers_bounds_since(
    memory_app: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen history: the reconnect answers recovered false after the bound, then live."""
    from luna_sender.bus.history import MemoryHistory, Offset
    from luna_sender.delivery import recorder

    class Frozen(MemoryHistory):
        async def since(self, channel: str, offset: Offset) -> Any:
            await asyncio.sleep(3600)

    monkeypatch.setattr(recorder, "SINCE_WAIT", 0.3)
    memory_app.app[CTX].hub.recorder.history = Frozen()
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "1")
        last = (await recv_json(ws))["offset"]
    async with memory_app.ws(account=acc, params={"since": last}) as ws:
        await asyncio.sleep(0.05)
        await publish(memory_app, acc, "2")  # held while the read hangs, then sent
        assert await recv_json(ws, 3) == {"recovery": {"recovered": False, "replayed": 0}}
        assert (await recv_json(ws))["event"]["user_data"] == "2"


async def test_poison_on_a_recovering_only_channel_is_counted_and_skipped(
    memory_app: LiveApp,
) -> None:
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await memory_app.app[CTX].bus.publish(channel(acc), b"not json")
        await publish(memory_app, acc, "after")
        assert (await recv_json(ws))["event"]["user_data"] == "after"
    async with memory_app.session.get(memory_app.url("/metrics")) as resp:
        assert 'bus_poison_messages_total{kind="face"} 1.0' in await resp.text()
