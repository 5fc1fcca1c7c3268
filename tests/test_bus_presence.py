"""The bus connection's presence name (bus/presence.py), as Redis counts it.

The recovery history believes a recorder's registration only while Redis counts a subscriber of
the name it registered under, so the name must be live exactly while the subscription it stands
for has heard everything: gone with the connection, never back after it, and renewed when the
self-check finds a channel unsubscribed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from luna_sender.bus.redis import RedisBus

from .helpers import RedisServer


async def _count(admin: aioredis.Redis, name: str) -> int:
    return int((await admin.pubsub_numsub(name))[0][1])


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


def _live(admin: aioredis.Redis, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _count(admin, name) == 1

    return check


async def test_the_name_lives_with_its_connection_and_never_comes_back(
    private_redis: RedisServer,
) -> None:
    bus = RedisBus(private_redis.url)
    reconnected = asyncio.Event()
    bus.observe(reconnected=reconnected.set, repaired=lambda *_: None)
    await bus.start(lambda _c, _d: None)
    admin = aioredis.from_url(private_redis.url)
    try:
        await bus.subscribe("presence:a")
        first = bus.announcer.name
        assert first is not None
        assert await _until(_live(admin, first))
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert await _count(admin, first) == 0  # gone with the connection, at once
        await asyncio.wait_for(reconnected.wait(), 10)
        second = bus.announcer.name
        assert second is not None and second != first
        assert await _until(_live(admin, second))
        await asyncio.sleep(0.3)  # a later resubscription of the old name would show by now
        assert await _count(admin, first) == 0
    finally:
        await admin.aclose()
        await bus.stop()


async def test_a_repair_renews_the_name(private_redis: RedisServer) -> None:
    """A wanted channel found unsubscribed (here: unsubscribed behind the bus's back) heard
    nothing meanwhile: the name that vouched for the connection is released for a new one."""
    bus = RedisBus(private_redis.url)
    repaired = asyncio.Event()
    bus.observe(reconnected=lambda: None, repaired=lambda *_: repaired.set())
    await bus.start(lambda _c, _d: None)
    admin = aioredis.from_url(private_redis.url)
    try:
        await bus.subscribe("presence:r")
        first = bus.announcer.name
        assert first is not None
        pubsub = bus._pubsub
        assert pubsub is not None
        await pubsub.execute_command("UNSUBSCRIBE", "presence:r")  # drift, as Redis sees it
        await asyncio.wait_for(repaired.wait(), 10)
        second = bus.announcer.name
        assert second is not None and second != first
        assert await _until(_live(admin, second))
        assert await _count(admin, first) == 0
        for _ in range(250):  # and the channel itself is subscribed again
            if bus.subs.live("presence:r"):
                break
            await asyncio.sleep(0.02)
        assert bus.subs.live("presence:r")
    finally:
        await admin.aclose()
        await bus.stop()


async def test_a_flush_whose_connection_dies_returns(private_redis: RedisServer) -> None:
    """The shutdown's flush waits for a PING; when Redis vanished under it the wait was
    cancelled, and the CancelledError escaped the SIGTERM stop: a traceback and exit 1 (an
    outside pass, 2 of 35 stops). It returns now, as for any other failed flush."""
    bus = RedisBus(private_redis.url)
    await bus.start(lambda _c, _d: None)
    try:
        await bus.subscribe("presence:f")
        assert private_redis.proc is not None
        private_redis.proc.send_signal(signal.SIGSTOP)  # the PING goes unanswered
        flushing = asyncio.create_task(bus.flush(5.0))
        await asyncio.sleep(0.3)
        private_redis.proc.send_signal(signal.SIGKILL)  # and then the connection dies
        await asyncio.wait_for(flushing, 10)  # returns; raised CancelledError before
    finally:
        await bus.stop()
