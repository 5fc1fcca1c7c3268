"""One loop turn's bus messages go out as one write per socket (hub._drain, Group.send_batch):
what each socket receives, and in which order, must be exactly what separate writes gave."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import redis.asyncio as aioredis

from luna_sender.delivery.groups import Group

from .conftest import LiveApp
from .helpers import account, assert_silent, face_event, face_message, metric_sum, recv_json


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Frames per send_batch call: proves the batched path ran, not only that order held."""
    sizes: list[int] = []
    original = Group.send_batch

    def spy(self: Group, frames: list[bytes]) -> list[int]:
        sizes.append(len(frames))
        return original(self, frames)

    monkeypatch.setattr(Group, "send_batch", spy)
    return sizes


async def _user_data(ws: Any, n: int) -> list[str]:
    return [(await recv_json(ws))["event"]["user_data"] for _ in range(n)]


async def test_one_turn_of_events_arrives_in_bus_order(
    redis_app: LiveApp, redis_server: Any, batch_sizes: list[int]
) -> None:
    acc = account()
    channel = f"luna-sender:{acc}"
    r = aioredis.from_url(redis_server.url)
    n = 40
    async with (
        redis_app.ws(account=acc) as all1,
        redis_app.ws(account=acc) as all2,
        redis_app.ws(account=acc, params={"sources": "a"}) as only_a,
    ):
        # One pipeline: Redis forwards the messages back to back and the reader takes them in
        # one turn. A poison message in the middle is skipped without losing its neighbours.
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            source = "a" if i % 3 == 0 else "b"
            pipe.publish(channel, face_message([face_event(source=source, user_data=str(i))]))
            if i == n // 2:
                pipe.publish(channel, b"{not json")
        await pipe.execute()
        everything = [str(i) for i in range(n)]
        assert await _user_data(all1, n) == everything
        assert await _user_data(all2, n) == everything
        from_a = [str(i) for i in range(n) if i % 3 == 0]
        assert await _user_data(only_a, len(from_a)) == from_a
        for ws in (all1, all2, only_a):
            await assert_silent(ws)
        async with redis_app.session.get(redis_app.url("/metrics")) as resp:
            text = await resp.text()
    await r.aclose()
    assert max(batch_sizes) > 1, batch_sizes
    # Counted per socket and frame, as when each frame was its own write.
    assert metric_sum(text, "events_delivered_total") == 2 * n + len(from_a)
    assert metric_sum(text, "bus_poison_messages_total") == 1


async def test_batch_near_the_cap_is_judged_frame_by_frame(
    live_app_factory: Any, redis_server: Any, batch_sizes: list[int]
) -> None:
    """A socket that stopped reading is evicted when a frame finds the cap exceeded, as
    before; its batch neighbour that reads gets every event."""
    cap = 256 * 1024
    app = await live_app_factory(
        redis_url=redis_server.url,
        ws={"queue_max_bytes": cap, "socket_send_buffer": 16 * 1024},
        limits={"bus_message_max_bytes": cap, "publish_body_max_bytes": cap},
    )
    acc = account()
    channel = f"luna-sender:{acc}"
    r = aioredis.from_url(redis_server.url)
    pad = "x" * 20_000
    n = 8  # one burst stays under the cap: a reader that drains between bursts keeps up
    async with app.ws(account=acc) as reader, app.ws(account=acc) as ws_stuck:
        # The stuck client never reads: its receive buffer fills, then the server's queue.
        sock = ws_stuck._response.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ws_stuck._response.connection.transport.pause_reading()
        evicted = 0.0
        for _ in range(60):
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                pipe.publish(channel, face_message([face_event(user_data=str(i), tags=[pad])]))
            await pipe.execute()
            assert await _user_data(reader, n) == [str(i) for i in range(n)]
            async with app.session.get(app.url("/metrics")) as resp:
                text = await resp.text()
            evicted = metric_sum(text, 'ws_closed_total{reason="slow_consumer"}')
            if evicted:
                break
        assert evicted == 1
    await r.aclose()
    assert max(batch_sizes) > 1, batch_sizes


async def test_a_groups_sockets_are_written_in_the_order_they_subscribed(
    memory_app: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First subscribed, first written, and a socket that joins later goes last: the fan-out
    walks its sockets in the order they were allocated (docs/reliability.md)."""
    from luna_sender.delivery.connection import Connection
    from luna_sender.web.context import CTX

    hub = memory_app.app[CTX].hub
    written: list[Connection] = []
    original = Connection.send

    def spy(self: Connection, frame: bytes) -> bool:
        written.append(self)
        return original(self, frame)

    monkeypatch.setattr(Connection, "send", spy)
    acc = account()
    joined: list[Connection] = []
    sockets: list[Any] = []
    contexts: list[Any] = []

    async def join() -> None:
        before = set(hub.connections)
        context = memory_app.ws(account=acc)
        sockets.append(await context.__aenter__())
        contexts.append(context)
        (new,) = set(hub.connections) - before
        joined.append(new)

    async def publish(user_data: str) -> list[Connection]:
        written.clear()
        await hub.bus.publish(f"luna-sender:{acc}", face_message([face_event(user_data=user_data)]))
        for ws in sockets:
            if not ws.closed:
                assert (await recv_json(ws))["event"]["user_data"] == user_data
        return list(written)

    try:
        for _ in range(8):
            await join()
        assert await publish("first") == joined
        await contexts[2].__aexit__(None, None, None)
        while joined[2] in hub.connections:
            await asyncio.sleep(0.01)
        del joined[2]
        await join()
        assert await publish("second") == joined
    finally:
        for context, ws in zip(contexts, sockets, strict=True):
            if not ws.closed:
                await context.__aexit__(None, None, None)
