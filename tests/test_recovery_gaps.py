"""Gaps in recording are visible (#18 follow-up): ``since`` never answers ``recovered: true``
across a stretch nobody recorded, and conflicting ``recover`` values are a bad query."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import redis.asyncio

from luna_sender.bus.history import MemoryHistory, Offset
from luna_sender.delivery import pipe
from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import (
    RedisServer,
    Service,
    account,
    assert_silent,
    face_event,
    publish_face,
    recv_json,
)
from .test_recovery_e2e import channel, publish


async def test_conflicting_repeated_recover_is_a_bad_query(memory_app: LiveApp) -> None:
    for params in (
        [("recover", "1"), ("recover", "0")],
        [("recover", "true"), ("recover", "false")],
    ):
        async with memory_app.session.get(
            memory_app.url("/ws"), params=params, headers={"Luna-Account-Id": account()}
        ) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error_code"] == 12012 and "recover" in body["desc"] + body["detail"]


async def test_identical_repeated_recover_is_accepted(memory_app: LiveApp) -> None:
    params = [("recover", "1"), ("recover", "true")]
    async with memory_app.ws(account=account(), params=params):
        pass


async def test_events_nobody_recorded_are_reported_not_hidden(redis_server: RedisServer) -> None:
    """F1: B has the socket, B stops (SIGTERM), events go through A (which records nothing for
    the account), B restarts: resuming on B is recovered false, then live works."""
    a = Service("--redis-url", redis_server.url)
    b = Service("--redis-url", redis_server.url)
    acc = account()
    headers = {"Luna-Account-Id": acc}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                b.ws_url + "/ws", headers=headers, params={"recover": "true"}
            ) as ws:
                await publish_face(session, a.url, acc, [face_event(user_data="1")])
                last = (await recv_json(ws))["offset"]
            client = redis.asyncio.from_url(redis_server.url)
            recorders = f"luna-sender:history:{{{channel(acc)}}}:r"
            try:  # B recorded; a graceful stop deregisters it (no waiting for its expiry)
                assert await client.zcard(recorders) == 1
                assert b.terminate() == 0
                assert await client.zcard(recorders) == 0
            finally:
                await client.aclose()
            await publish_face(session, a.url, acc, [face_event(user_data="lost")])
            b = Service("--redis-url", redis_server.url, port=b.port)
            async with session.ws_connect(
                b.ws_url + "/ws", headers=headers, params={"since": last}
            ) as ws:
                assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
                await publish_face(session, a.url, acc, [face_event(user_data="live")])
                assert (await recv_json(ws))["event"]["user_data"] == "live"
                await assert_silent(ws)
    finally:
        a.close()
        b.close()


async def test_a_hole_left_by_the_breaker_is_marked(
    memory_app: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F1b: appends fail for a moment: offsets before the hole are recovered false, offsets
    after the marker the next append wrote are recovered true."""
    monkeypatch.setattr(pipe, "COOLDOWN", 0.1)

    class Flaky(MemoryHistory):
        down = False

        def append_nowait(self, channel: str, data: bytes) -> asyncio.Future[Offset]:
            if self.down:
                raise ConnectionError("history down")
            return super().append_nowait(channel, data)

    history = Flaky()
    memory_app.app[CTX].hub.recorder.history = history
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "1")
        before = (await recv_json(ws))["offset"]
        history.down = True
        await publish(memory_app, acc, "2")
        assert "offset" not in await recv_json(ws)
        history.down = False
        await asyncio.sleep(0.2)  # the breaker closes
        await publish(memory_app, acc, "3")
        after = (await recv_json(ws))["offset"]
    await publish(memory_app, acc, "4")
    async with memory_app.ws(account=acc, params={"since": before}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
    async with memory_app.ws(account=acc, params={"since": after}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 1}}
        assert (await recv_json(ws))["event"]["user_data"] == "4"


async def test_no_marker_while_another_instance_records(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """A second instance joining and leaving a continuously recorded channel marks nothing."""
    one = await live_app_factory(redis_url=redis_server.url)
    two = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    async with one.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(one, acc, "1")
        first = (await recv_json(ws))["offset"]
        async with two.ws(account=acc, params={"recover": "true"}) as other:
            await publish(one, acc, "2")
            await recv_json(other)
        await publish(two, acc, "3")
        await two.app[CTX].hub.recorder.history.release(channel(acc))  # two stops recording
        await publish(one, acc, "4")
        assert [(await recv_json(ws))["event"]["user_data"] for _ in range(3)] == ["2", "3", "4"]
    for app in (one, two):
        async with app.ws(account=acc, params={"since": first}) as ws:
            assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 3}}
            got = [(await recv_json(ws))["event"]["user_data"] for _ in range(3)]
            assert got == ["2", "3", "4"]


async def test_two_different_since_values_resume_nowhere(memory_app: LiveApp) -> None:
    """``since=a&since=b`` names no one place: recovered false (never an error), whichever order;
    the same offset twice still resumes."""
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "0")
        last = (await recv_json(ws))["offset"]
    await publish(memory_app, acc, "1")
    for params in ([("since", "junk"), ("since", last)], [("since", last), ("since", "junk")]):
        async with memory_app.ws(account=acc, params=params) as ws:
            assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
    async with memory_app.ws(account=acc, params=[("since", last), ("since", last)]) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 1}}
        assert (await recv_json(ws))["event"]["user_data"] == "1"
