"""The bus reader's fast path (bus/feed.py): replies taken from the transport through hiredis.

Messages read past redis-py must reach the hub in the order Redis sent them, interleaved with
the replies redis-py still handles (subscribe confirmations, the PING barrier of ``flush``), so a
burst read in one socket read behaves exactly as replies read one by one. Every test runs on a
real redis-server, once with the fast path and once with it switched off, and compares.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from luna_sender.bus import dialect
from luna_sender.bus.feed import Feed
from luna_sender.bus.redis import RedisBus

from .helpers import RedisServer

BURST = 400


@pytest.fixture(params=["fast", "redis-py"])
def path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "redis-py":  # the reader's own fallback: redis-py reads every reply
        monkeypatch.setattr(dialect, "hiredis_parser", lambda _pubsub: None)
    return str(request.param)


async def _burst(url: str, channels: list[str], tag: str) -> list[tuple[str, bytes]]:
    """BURST messages over ``channels`` in one write, so the reader gets them in few reads."""
    sent = [(channels[i % len(channels)], f"{tag}-{i}".encode()) for i in range(BURST)]
    client = aioredis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for channel, data in sent:
                pipe.publish(channel, data)
            await pipe.execute()
    finally:
        await client.aclose()
    return sent


async def test_burst_order_subscriptions_and_flush_barrier(
    redis_server: RedisServer, path: str
) -> None:
    got: list[tuple[str, bytes]] = []
    bus = RedisBus(redis_server.url)
    await bus.start(lambda channel, data: got.append((channel, data)))
    try:
        await bus.subscribe("reader:a")
        await bus.subscribe("reader:b")
        if path == "fast":  # the path under test is really taken on a plain connection
            assert dialect.hiredis_parser(bus._pubsub) is not None  # type: ignore[arg-type]
        assert _feeding(bus) == (path == "fast")
        first = await _burst(redis_server.url, ["reader:a", "reader:b", "reader:x"], "one")
        # Subscription changes answered between messages still reach the bookkeeping...
        await bus.subscribe("reader:c")
        await bus.unsubscribe("reader:b")
        for _ in range(200):  # the reconciler task sends the UNSUBSCRIBE
            if bus.subs.diff() == (set(), set()) and "reader:b" not in bus.subs.inflight:
                break
            await asyncio.sleep(0.01)
        await bus.flush(5.0)  # ...and its reply is in once the PING after it is answered
        assert bus.subs.live("reader:c") and "reader:b" not in bus.subs.confirmed
        second = await _burst(redis_server.url, ["reader:a", "reader:b", "reader:c"], "two")
        await bus.flush(5.0)  # the barrier is answered after every message sent before it
        expected = [m for m in first if m[0] != "reader:x"]
        expected += [m for m in second if m[0] != "reader:b"]
        assert got == expected
        assert all(type(channel) is str for channel, _ in got)
    finally:
        await bus.stop()


async def test_a_failing_handler_loses_only_its_own_message(
    redis_server: RedisServer, path: str
) -> None:
    got: list[bytes] = []

    def handler(_channel: str, data: bytes) -> None:
        if data.endswith(b"7"):
            raise RuntimeError("hub bug")
        got.append(data)

    bus = RedisBus(redis_server.url)
    await bus.start(handler)
    try:
        await bus.subscribe("reader:fail")
        sent = await _burst(redis_server.url, ["reader:fail"], "f")
        await bus.flush(5.0)
        assert got == [data for _, data in sent if not data.endswith(b"7")]
        assert bus.connected
    finally:
        await bus.stop()


async def test_reader_survives_client_kill_mid_stream(
    private_redis: RedisServer, path: str
) -> None:
    """A connection cut while buffered replies are drained: reconnect, resubscribe, deliver."""
    got: list[bytes] = []
    bus = RedisBus(private_redis.url)
    reconnected = asyncio.Event()
    bus.observe(reconnected=reconnected.set, repaired=lambda *_: None)
    await bus.start(lambda _channel, data: got.append(data))
    admin = aioredis.from_url(private_redis.url)
    try:
        await bus.subscribe("reader:k")
        await _burst(private_redis.url, ["reader:k"], "before")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await asyncio.wait_for(reconnected.wait(), 10)
        for _ in range(200):
            if bus.connected and bus.subs.live("reader:k"):
                break
            await asyncio.sleep(0.025)
        assert bus.connected and bus.subs.live("reader:k")
        got.clear()
        sent = await _burst(private_redis.url, ["reader:k"], "after")
        await bus.flush(5.0)
        assert got == [data for _, data in sent]
    finally:
        await admin.aclose()
        await bus.stop()


def _feeding(bus: RedisBus) -> bool:
    """Whether the bus's pub/sub bytes go through feed.py (the transport's protocol is a Feed)."""
    connection: Any = bus._pubsub.connection  # type: ignore[union-attr]
    return isinstance(connection._writer.transport.get_protocol(), Feed)


@pytest.mark.parametrize("kind", ["unix", "tls"])
async def test_unix_socket_and_tls_connections_read_alike(kind: str, path: str) -> None:
    """The fast path takes the bytes from whatever transport redis-py opened (a unix socket,
    a TLS session); order and subscriptions as over plain TCP."""
    server = RedisServer(transport=kind)
    server.start()
    url = server.url
    try:
        got: list[tuple[str, bytes]] = []
        bus = RedisBus(url)
        await bus.start(lambda channel, data: got.append((channel, data)))
        try:
            await bus.subscribe("reader:u")
            await bus.subscribe("reader:v")
            assert _feeding(bus) == (path == "fast")
            sent = await _burst(url, ["reader:u", "reader:v", "reader:w"], kind)
            await bus.flush(5.0)
            assert got == [m for m in sent if m[0] != "reader:w"]
        finally:
            await bus.stop()
    finally:
        server.close()
