"""Deliveries to recovering sockets are counted like plain ones, once each; replays are not
deliveries (#18, docs/metrics.md "Recovery"). Real sockets, a real redis-server, the plugin
loaded by dotted path like any other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from luna_sender.plugins.host import BusEvent

from .conftest import LiveApp
from .helpers import RedisServer, account, face_event, metric_sum, recv_json

PLUGIN = "tests.test_recovery_counts:Counting"
CAM = {"sources": "cam-1"}


class Counting:
    """Every notice the plugin host hands out, as (hook, delivered)."""

    seen: list[tuple[str, int]] = []

    def event_received(self, event: BusEvent) -> None:
        Counting.seen.append(("received", event.delivered))

    def event_delivered(self, event: BusEvent) -> None:
        Counting.seen.append(("delivered", event.delivered))


async def publish(app: LiveApp, acc: str, *tags: str) -> None:
    body = {
        "events": [face_event(user_data=tag) for tag in tags],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with app.session.post(
        app.url("/publish"), json=body, headers={"Luna-Account-Id": acc}
    ) as resp:
        assert resp.status == 204, await resp.text()


async def counts(app: LiveApp) -> tuple[float, float, float]:
    async with app.session.get(app.url("/metrics")) as resp:
        text = await resp.text()
    return (
        metric_sum(text, "events_delivered_total"),
        metric_sum(text, "event_delivery_seconds_count"),
        metric_sum(text, "recovery_replayed_events_total"),
    )


async def notices(count: int) -> list[tuple[str, int]]:
    """The plugin's notices once ``count`` arrived, and nothing more for a moment."""
    for _ in range(100):
        if len(Counting.seen) >= count:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    seen = list(Counting.seen)
    Counting.seen.clear()
    return seen


@pytest.fixture
async def app(live_app_factory: Callable[..., Any], redis_server: RedisServer) -> LiveApp:
    Counting.seen.clear()
    made: LiveApp = await live_app_factory(redis_url=redis_server.url, plugins=[PLUGIN])
    return made


async def test_live_events_to_recovering_sockets_count_once(app: LiveApp) -> None:
    acc = account()
    async with app.ws(account=acc, params={"recover": "true", **CAM}) as rec:
        before = await counts(app)
        await publish(app, acc, "a", "b")  # one bus message, two events
        got = [await recv_json(rec) for _ in range(2)]
        assert [e["event"]["user_data"] for e in got] == ["a", "b"] and "offset" in got[0]
        assert await notices(2) == [("received", 2), ("delivered", 2)]
        after = await counts(app)
        assert (after[0] - before[0], after[1] - before[1]) == (2, 1)

        # A plain socket too: still one notice and one latency observation per bus message.
        async with app.ws(account=acc, params=CAM) as plain:
            before = after
            await publish(app, acc, "c")
            assert (await recv_json(plain))["event"]["user_data"] == "c"
            assert (await recv_json(rec))["event"]["user_data"] == "c"
            assert await notices(2) == [("received", 2), ("delivered", 2)]
            after = await counts(app)
            assert (after[0] - before[0], after[1] - before[1]) == (2, 1)

        # Nobody matches (another source): received, not delivered, nothing counted.
        before = after
        await publish_other_source(app, acc)
        assert await notices(1) == [("received", 0)]
        after = await counts(app)
        assert (after[0] - before[0], after[1] - before[1]) == (0, 0)
        offset = got[0]["offset"]

    # A replay is not a delivery: counted by recovery_replayed_events_total only, no notice.
    before = await counts(app)
    async with app.ws(account=acc, params={"since": offset, **CAM}) as back:
        assert await recv_json(back) == {"recovery": {"recovered": True, "replayed": 2}}
        assert [(await recv_json(back))["event"]["user_data"] for _ in range(2)] == ["b", "c"]
        assert await notices(0) == []
        after = await counts(app)
        assert [a - b for a, b in zip(after, before, strict=True)] == [0, 0, 2]
        await publish(app, acc, "d")  # and live again afterwards: counted
        assert (await recv_json(back))["event"]["user_data"] == "d"
        assert await notices(2) == [("received", 1), ("delivered", 1)]
        assert (await counts(app))[0] - after[0] == 1


async def publish_other_source(app: LiveApp, acc: str) -> None:
    """A message whose only event no socket here wants (they filter on cam-1 below)."""
    body = {
        "events": [face_event(user_data="x", source="cam-2")],
        "handler_id": "h",
        "event_create_time": "2026-01-01T00:00:00Z",
        "event_end_time": "2026-01-01T00:00:00Z",
    }
    async with app.session.post(
        app.url("/publish"), json=body, headers={"Luna-Account-Id": acc}
    ) as resp:
        assert resp.status == 204
