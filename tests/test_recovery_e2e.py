"""Missed-event recovery end to end (#18): real sockets, the real service, a real redis-server.

The promise under test is docs/recovery.md's: with ``since`` a reconnecting socket gets
``{"recovery": ...}``, then every missed event matching its filters in bus order, then live
events, none twice; an offset it cannot honour answers ``recovered: false`` and goes live.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from luna_sender.web.context import CTX

from .conftest import LiveApp
from .helpers import RedisServer, account, assert_silent, face_event, face_message, recv_json


def channel(acc: str) -> str:
    return f"luna-sender:{acc}"


async def publish(app: LiveApp, acc: str, *tags: str, source: str = "cam-1") -> None:
    events = [face_event(user_data=tag, source=source) for tag in tags]
    await app.app[CTX].bus.publish(channel(acc), face_message(events))


def general(n: int, event_type: str = "t") -> bytes:
    return orjson.dumps(
        {
            "event": {"n": n},
            "event_type": event_type,
            "account_id": None,
            "event_create_time": "2026-11-23T10:00:00+00:00",
            "event_end_time": "2026-11-23T10:00:01+00:00",
        }
    )


async def frames(ws: Any, count: int, timeout: float = 5.0) -> list[Any]:
    return [await recv_json(ws, timeout) for _ in range(count)]


async def tags_until(ws: Any, last: str, timeout: float = 10.0) -> list[str]:
    """user_data of every event frame up to and including ``last``."""
    seen: list[str] = []
    while not seen or seen[-1] != last:
        got = await recv_json(ws, timeout)
        assert "recovery" not in got, got
        seen.append(got["event"]["user_data"])
    return seen


async def test_recover_adds_offset_and_plain_envelopes_are_byte_identical(
    memory_app: LiveApp,
) -> None:
    acc = account()
    async with (
        memory_app.ws(account=acc) as plain,
        memory_app.ws("/2/ws", account=acc, params={"recover": "true"}) as rec,
        memory_app.ws(account=acc, params={"recover": "0"}) as off,
    ):
        await publish(memory_app, acc, "a", "b")
        for _ in range(2):
            raw_plain = (await plain.receive()).data
            raw_off = (await off.receive()).data
            raw_rec = (await rec.receive()).data
            assert raw_off == raw_plain
            assert "offset" not in orjson.loads(raw_plain)
            offset = orjson.loads(raw_rec)["offset"]
            assert raw_rec == raw_plain[:-1] + ',"offset":"' + offset + '"}'


async def test_bad_recover_value_is_a_bad_query_and_unknown_params_stay_rejected(
    memory_app: LiveApp,
) -> None:
    cases = (
        ({"recover": "yes"}, "recover"),
        ({"recover": "True"}, "recover"),
        ({"recovr": "1"}, "recovr"),
    )
    for params, name in cases:
        async with memory_app.session.get(
            memory_app.url("/ws"), params=params, headers={"Luna-Account-Id": account()}
        ) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error_code"] == 12012 and name in body["desc"] + body["detail"]


@pytest.mark.parametrize("since", ["garbage", "", "0a0a0a0a0a0a.1-5", "x" * 5000])
async def test_unrecognised_since_is_recovered_false_then_live(
    memory_app: LiveApp, since: str
) -> None:
    acc = account()
    async with memory_app.ws(account=acc, params={"since": since}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
        await publish(memory_app, acc, "live")
        got = await recv_json(ws)
        assert got["event"]["user_data"] == "live" and "offset" in got


async def resume_case(app: LiveApp, other: LiveApp, acc: str) -> None:
    """Events missed while away arrive filtered, in order, then live ones, once each."""
    async with app.ws(account=acc, params={"recover": "true", "sources": "cam-1"}) as ws:
        await publish(app, acc, "1", "2")
        got = await frames(ws, 2)
        last = got[-1]["offset"]
    # Away: the account stays subscribed and recorded on ``app`` (the linger).
    await publish(app, acc, "3")
    await publish(app, acc, "x", source="cam-2")  # not this socket's
    await publish(app, acc, "4", "5")
    await asyncio.sleep(0.2)
    async with other.ws(account=acc, params={"since": last, "sources": "cam-1"}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 3}}
        replayed = await frames(ws, 3)
        assert [f["event"]["user_data"] for f in replayed] == ["3", "4", "5"]
        await publish(other, acc, "6")
        assert (await recv_json(ws))["event"]["user_data"] == "6"
        await assert_silent(ws)


async def test_resume_same_instance_memory(memory_app: LiveApp) -> None:
    await resume_case(memory_app, memory_app, account())


async def test_resume_same_instance_redis(redis_app: LiveApp) -> None:
    await resume_case(redis_app, redis_app, account())


async def test_resume_on_a_second_instance_sharing_redis(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    one = await live_app_factory(redis_url=redis_server.url)
    two = await live_app_factory(redis_url=redis_server.url)
    await resume_case(one, two, account())


async def test_resume_inside_a_face_message(memory_app: LiveApp) -> None:
    """A connection cut between two events of one message resumes at the next one."""
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "a", "b", "c")
        first = await recv_json(ws)
    async with memory_app.ws(account=acc, params={"since": first["offset"]}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 2}}
        assert [f["event"]["user_data"] for f in await frames(ws, 2)] == ["b", "c"]


async def test_general_events_resume(redis_app: LiveApp) -> None:
    bus = redis_app.app[CTX].bus
    chan = "luna-sender-general-events"
    async with redis_app.ws("/ws/general", params={"recover": "true", "event_type": "t"}) as ws:
        await bus.publish(chan, general(1))
        last = (await recv_json(ws))["offset"]
    await bus.publish(chan, general(2))
    await bus.publish(chan, general(3, "other"))
    await bus.publish(chan, general(4))
    await asyncio.sleep(0.2)
    params = {"since": last, "event_type": "t"}
    async with redis_app.ws("/1/ws/general", params=params) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": True, "replayed": 2}}
        assert [f["event"]["n"] for f in await frames(ws, 2)] == [2, 4]


async def test_expired_offset_is_recovered_false(live_app_factory: Any) -> None:
    app = await live_app_factory(history={"size": 3})
    acc = account()
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "0")
        last = (await recv_json(ws))["offset"]
    for n in range(1, 6):
        await publish(app, acc, str(n))
    async with app.ws(account=acc, params={"since": last}) as ws:
        assert await recv_json(ws) == {"recovery": {"recovered": False, "replayed": 0}}
        await publish(app, acc, "live")
        assert (await recv_json(ws))["event"]["user_data"] == "live"


async def test_redis_restart_between_disconnect_and_reconnect(
    live_app_factory: Any, private_redis: RedisServer
) -> None:
    """The promise: a Redis without persistence lost the history -> recovered false, then
    live (the new history has a new epoch, so the old offset is never mistaken)."""
    app = await live_app_factory(redis_url=private_redis.url)
    acc = account()
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "1")
        last = (await recv_json(ws))["offset"]
    private_redis.restart()
    await asyncio.sleep(1.5)  # the bus resubscribes
    async with app.ws(account=acc, params={"since": last}) as ws:
        assert await recv_json(ws, 10) == {"recovery": {"recovered": False, "replayed": 0}}
        for _ in range(50):  # the bus may still be reconnecting
            try:
                await publish(app, acc, "live")
                break
            except Exception:
                await asyncio.sleep(0.2)
        got = await recv_json(ws, 10)
        assert got["event"]["user_data"] == "live" and "offset" in got


async def test_seam_under_continuous_publishing(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """Events published all through disconnect, reconnect and replay arrive once, in order."""
    one = await live_app_factory(redis_url=redis_server.url)
    two = await live_app_factory(redis_url=redis_server.url)
    acc = account()
    stop = asyncio.Event()
    published: list[str] = []

    async def publisher() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            published.append(str(n))
            await publish(one, acc, str(n))
            await asyncio.sleep(0.002)

    received: list[str] = []
    async with one.ws(account=acc, params={"recover": "true"}) as ws:
        task = asyncio.create_task(publisher())
        while len(received) < 20:
            got = await recv_json(ws)
            received.append(got["event"]["user_data"])
            last = got["offset"]
    await asyncio.sleep(0.1)
    for target in (two, one):  # to another instance, then back
        async with target.ws(account=acc, params={"since": last}) as ws:
            report = await recv_json(ws)
            assert report["recovery"]["recovered"] is True
            count = 0
            while count < report["recovery"]["replayed"] + 30:
                got = await recv_json(ws)
                received.append(got["event"]["user_data"])
                last = got["offset"]
                count += 1
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert received == [str(n) for n in range(1, len(received) + 1)]


async def test_metrics_count_recoveries(memory_app: LiveApp) -> None:
    acc = account()
    async with memory_app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(memory_app, acc, "1")
        last = (await recv_json(ws))["offset"]
    await publish(memory_app, acc, "2")
    async with memory_app.ws(account=acc, params={"since": last}) as ws:
        await frames(ws, 2)
    async with memory_app.ws(account=acc, params={"since": "nope"}) as ws:
        await recv_json(ws)
    async with memory_app.session.get(memory_app.url("/metrics")) as resp:
        text = await resp.text()
    assert 'recoveries_total{outcome="recovered"} 1.0' in text
    assert 'recoveries_total{outcome="not_recovered"} 1.0' in text
    assert "recovery_replayed_events_total 1.0" in text
    assert "history_events" in text


async def test_account_stays_subscribed_for_the_window_then_leaves(live_app_factory: Any) -> None:
    app = await live_app_factory(history={"ttl": 1.0})
    hub = app.app[CTX].hub
    acc = account()
    base = hub.subscribed_channel_count()
    async with app.ws(account=acc, params={"recover": "true"}) as ws:
        await publish(app, acc, "1")
        await recv_json(ws)
    await asyncio.sleep(0.1)
    assert hub.subscribed_channel_count() == base + 1  # lingers: still recorded
    assert channel(acc) in hub.recorder.channels
    for _ in range(40):
        await asyncio.sleep(0.1)
        if hub.subscribed_channel_count() == base:
            break
    assert hub.subscribed_channel_count() == base
    assert channel(acc) not in hub.recorder.channels


async def test_many_sockets_cut_at_once_resume_elsewhere_without_loss_or_duplicate(
    live_app_factory: Any, redis_server: RedisServer
) -> None:
    """40 recovering sockets over 4 accounts lose their TCP connections at once while events
    flow; each reconnects with since to the other instance: every event once, in order."""
    one = await live_app_factory(redis_url=redis_server.url)
    two = await live_app_factory(redis_url=redis_server.url)
    accounts = [account() for _ in range(4)]
    total = 60

    async def publisher() -> None:
        for n in range(1, total + 1):
            for acc in accounts:
                await publish(one, acc, str(n))
            await asyncio.sleep(0.01)

    async def client(acc: str, ready: asyncio.Event) -> list[str]:
        seen: list[str] = []
        last = None
        target = one
        while not seen or seen[-1] != str(total):
            params = {"recover": "true"} if last is None else {"since": last}
            async with target.ws(account=acc, params=params) as ws:
                ready.set()
                while not seen or seen[-1] != str(total):
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type.name != "TEXT":
                        break  # cut: reconnect elsewhere
                    got = orjson.loads(msg.data)
                    if "recovery" in got:
                        assert got["recovery"]["recovered"] is True, got
                        continue
                    seen.append(got["event"]["user_data"])
                    last = got["offset"]
            target = two
        return seen

    readies = [asyncio.Event() for _ in range(40)]
    clients = [asyncio.create_task(client(accounts[i % 4], readies[i])) for i in range(40)]
    for ready in readies:
        await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.2)
    pub = asyncio.create_task(publisher())
    await asyncio.sleep(0.2)
    for conn in list(one.app[CTX].hub.connections):
        conn.transport.abort()
    results = await asyncio.wait_for(asyncio.gather(*clients), 60)
    await pub
    expected = [str(n) for n in range(1, total + 1)]
    assert all(seen == expected for seen in results)
    async with two.session.get(two.url("/metrics")) as resp:
        assert 'recoveries_total{outcome="recovered"} 40.0' in await resp.text()
