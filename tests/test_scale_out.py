"""Scale-out on Redis's own machinery: Sentinel failover and Redis Cluster, real processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest
import redis

from .ha import ClusterSetup, SentinelSetup, running
from .helpers import Service, account, face_event, face_message, recv_json
from .test_faults_bus import publish_body

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    with running(SentinelSetup()) as setup:
        yield setup


@pytest.fixture
def cluster_setup() -> Iterator[ClusterSetup]:
    with running(ClusterSetup()) as setup:
        yield setup


async def _publish_until_received(
    publish: object, ws: aiohttp.ClientWebSocketResponse, deadline: float
) -> float:
    """Publish a fresh event every 100 ms until one arrives; returns when it did."""
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            await publish(n)  # type: ignore[operator]
        except Exception:
            pass
        try:
            await recv_json(ws, 0.1)
            return time.monotonic()
        except TimeoutError:
            continue
    raise AssertionError("no event received before the deadline")


async def _promoted(
    setup: SentinelSetup, old_port: int, acc: str
) -> tuple[float, Callable[[int], Awaitable[None]]]:
    """Once the sentinels name a new master: when, and a producer publishing event ``n`` there."""
    new_master = redis.Redis(port=await setup.new_master(old_port))

    async def publish(n: int) -> None:
        new_master.publish(f"luna-sender:{acc}", face_message([face_event(n=n)]))

    return time.monotonic(), publish


async def test_sentinel_failover_keeps_sockets(sentinel_setup: SentinelSetup) -> None:
    acc = account()
    one = Service("--redis-url", sentinel_setup.url)
    two = Service("--redis-url", sentinel_setup.url)
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Luna-Account-Id": acc}
            w1 = await session.ws_connect(one.ws_url + "/ws", headers=headers)
            w2 = await session.ws_connect(two.ws_url + "/ws", headers=headers)
            body = {
                "events": [face_event()],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            }
            async with session.post(one.url + "/publish", json=body, headers=headers) as resp:
                assert resp.status == 204
            await recv_json(w1)
            await recv_json(w2)

            old_port = sentinel_setup.current_master_port()
            sentinel_setup.master.kill()
            promoted, publish = await _promoted(sentinel_setup, old_port, acc)
            got1 = await _publish_until_received(publish, w1, promoted + 20)
            got2 = await _publish_until_received(publish, w2, promoted + 20)
            print(
                f"sentinel: delivery resumed {got1 - promoted:.2f}s / {got2 - promoted:.2f}s "
                "after promotion"
            )
            assert not w1.closed and not w2.closed
            # The publish route follows the new master too.
            async with session.post(two.url + "/publish", json=body, headers=headers) as resp:
                assert resp.status == 204
            await w1.close()
            await w2.close()
    finally:
        assert one.terminate() == 0
        assert two.terminate() == 0


async def test_a_frozen_sentinel_master_is_left_once_failed_over(
    sentinel_setup: SentinelSetup,
) -> None:
    """A master frozen (SIGSTOP, a hung VM) breaks no connection: the sentinels promote its
    replica and producers publish there, while the subscription waited on the old master until
    it woke (deaf for the whole freeze before). Now it asks the sentinels once it has heard
    nothing for 2 s and reconnects to the new master; the frozen one is still frozen."""
    acc = account()
    svc = Service("--redis-url", sentinel_setup.url)
    master = sentinel_setup.master
    assert master.proc is not None
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": acc})
            old = redis.Redis(port=sentinel_setup.current_master_port())
            old.publish(f"luna-sender:{acc}", face_message([face_event(n=0)]))
            await recv_json(ws)
            old_port = sentinel_setup.current_master_port()
            master.proc.send_signal(signal.SIGSTOP)
            try:
                promoted, publish = await _promoted(sentinel_setup, old_port, acc)
                got = await _publish_until_received(publish, ws, promoted + 15)
                print(f"sentinel freeze: delivery resumed {got - promoted:.2f}s after promotion")
                assert master.proc.poll() is None  # still frozen: not its waking that did it
            finally:
                master.proc.send_signal(signal.SIGCONT)
            assert not ws.closed
            await ws.close()
        assert "no longer the master" in svc.log()
    finally:
        assert svc.terminate() == 0


async def test_a_master_woken_after_its_failover_is_left_at_once(
    sentinel_setup: SentinelSetup,
) -> None:
    """A master frozen just until its replica is promoted answers again as a master until the
    sentinels demote it (~10 s): the subscription stayed there, deaf to the producers on the
    new master, and the publish route's pooled connections published there, 204 for events
    nobody on the real master heard (an outside pass: ~195 events per instance a failover)."""
    acc = account()
    channel = f"luna-sender:{acc}"
    svc = Service("--redis-url", sentinel_setup.url)
    master = sentinel_setup.master
    assert master.proc is not None
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Luna-Account-Id": acc}
            ws = await session.ws_connect(svc.ws_url + "/ws", headers=headers)
            rec = await session.ws_connect(
                svc.ws_url + "/ws", headers=headers, params={"recover": "true"}
            )
            body = publish_body(0)

            async def post() -> int:
                async with session.post(svc.url + "/publish", json=body, headers=headers) as r:
                    return r.status

            assert await asyncio.gather(*(post() for _ in range(8))) == [204] * 8  # a pool
            for _ in range(8):
                await recv_json(ws)
                await recv_json(rec)
            old_port = sentinel_setup.current_master_port()
            master.proc.send_signal(signal.SIGSTOP)
            try:
                promoted, publish = await _promoted(sentinel_setup, old_port, acc)
            finally:
                master.proc.send_signal(signal.SIGCONT)  # awake, and still a master for a while
            assert redis.Redis(port=old_port).role()[0] == b"master"
            got = await _publish_until_received(publish, ws, promoted + 4)
            print(f"woken old master: delivery resumed {got - promoted:.2f}s after promotion")
            heard = redis.Redis(port=sentinel_setup.current_master_port()).pubsub()
            heard.subscribe(channel)
            assert heard.get_message(timeout=1)["type"] == "subscribe"
            statuses = [await post() for _ in range(5)]
            assert 204 in statuses, statuses
            reached = [heard.get_message(timeout=1) for _ in range(statuses.count(204))]
            assert all(m is not None and m["type"] == "message" for m in reached), reached
            assert redis.Redis(port=old_port).role()[0] == b"master", "demoted already"
            # The history follows too: what is recorded now survives the old master's demotion.
            cut = await rec.receive(timeout=10)  # the subscription moved: a cut
            assert cut.type == aiohttp.WSMsgType.CLOSE and cut.data == 1012, cut
            rec = await session.ws_connect(
                svc.ws_url + "/ws", headers=headers, params={"recover": "true"}
            )
            for n in range(100, 105):
                await publish(n)
            offsets = [(await recv_json(rec))["offset"] for _ in range(5)]
            assert all(offsets), offsets
            deadline = time.monotonic() + 30
            while redis.Redis(port=old_port).role()[0] == b"master":
                assert time.monotonic() < deadline, "the sentinels never demoted the old master"
                await asyncio.sleep(0.2)
            resumed = await session.ws_connect(
                svc.ws_url + "/ws", headers=headers, params={"since": offsets[0]}
            )
            replay = [await recv_json(resumed)]
            while len(replay) < 5:
                try:
                    replay.append(await recv_json(resumed, 2))
                except TimeoutError:
                    break
            assert replay[0]["recovery"]["recovered"] is True, replay[0]
            assert [f["offset"] for f in replay[1:]] == offsets[1:]
            await ws.close()
    finally:
        assert svc.terminate() == 0


async def test_cluster_any_node_reaches_every_instance(cluster_setup: ClusterSetup) -> None:
    acc = account()
    services = [Service("--redis-url", cluster_setup.url) for _ in range(3)]
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Luna-Account-Id": acc}
            sockets = [
                await session.ws_connect(s.ws_url + "/ws", headers=headers) for s in services
            ]
            for node in cluster_setup.nodes:
                node.client().publish(
                    f"luna-sender:{acc}", face_message([face_event(node=node.port)])
                )
                for ws in sockets:
                    assert (await recv_json(ws))["event"]["node"] == node.port
            # The publish route works in cluster mode.
            body = {
                "events": [face_event(src="route")],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            }
            async with session.post(
                services[0].url + "/publish", json=body, headers=headers
            ) as resp:
                assert resp.status == 204
            for ws in sockets:
                assert (await recv_json(ws))["event"]["src"] == "route"

            # Losing one node loses no subscriber: each instance moves to another node.
            cluster_setup.nodes[0].kill()
            survivor = cluster_setup.nodes[1].client()

            async def publish(n: int) -> None:
                survivor.publish(f"luna-sender:{acc}", face_message([face_event(n=n)]))

            deadline = time.monotonic() + 20
            for ws in sockets:
                await _publish_until_received(publish, ws, deadline)
                assert not ws.closed
            for ws in sockets:
                await ws.close()
    finally:
        for svc in services:
            assert svc.terminate() == 0


async def test_cluster_sharded_pubsub(cluster_setup: ClusterSetup) -> None:
    from redis.cluster import ClusterNode, RedisCluster

    accounts = [account() for _ in range(4)]  # channels hash to different shards
    url = cluster_setup.url + "?sharded=1"
    services = [Service("--redis-url", url) for _ in range(2)]
    producer = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster_setup.nodes]
    )
    try:
        async with aiohttp.ClientSession() as session:
            sockets = {
                (i, acc): await session.ws_connect(
                    svc.ws_url + "/ws", headers={"Luna-Account-Id": acc}
                )
                for i, svc in enumerate(services)
                for acc in accounts
            }
            for acc in accounts:
                producer.spublish(f"luna-sender:{acc}", face_message([face_event(acc=acc)]))
            for (_i, acc), ws in sockets.items():
                assert (await recv_json(ws))["event"]["acc"] == acc
            # The publish route publishes with SPUBLISH in sharded mode.
            body = {
                "events": [face_event(src="route")],
                "handler_id": "h",
                "event_create_time": "2026-01-01T00:00:00Z",
                "event_end_time": "2026-01-01T00:00:00Z",
            }
            async with session.post(
                services[1].url + "/publish", json=body, headers={"Luna-Account-Id": accounts[0]}
            ) as resp:
                assert resp.status == 204
            for i in range(2):
                assert (await recv_json(sockets[(i, accounts[0])]))["event"]["src"] == "route"
            # Only channels with local subscribers are subscribed on each shard.
            channels = set()
            for node in cluster_setup.nodes:
                channels |= {
                    c.decode() for c in node.client().execute_command("PUBSUB SHARDCHANNELS")
                }
            assert {f"luna-sender:{a}" for a in accounts} <= channels
            for ws in sockets.values():
                await ws.close()
    finally:
        producer.close()
        for svc in services:
            assert svc.terminate() == 0


async def test_instance_only_receives_accounts_it_serves(redis_server) -> None:
    """Per-account subscriptions: ingress follows local subscribers, not the whole platform."""
    served, other = account(), account()
    svc = Service("--redis-url", redis_server.url)
    producer = redis.Redis(port=redis_server.port)
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(svc.ws_url + "/ws", headers={"Luna-Account-Id": served})
            body = face_message([face_event(pad="x" * 5000)])
            for _ in range(50):
                producer.publish(f"luna-sender:{served}", body)
                producer.publish(f"luna-sender:{other}", body)
            for _ in range(50):
                await recv_json(ws)
            async with session.get(svc.url + "/metrics") as resp:
                metrics = await resp.text()
            assert 'events_received_total{kind="face"} 50.0' in metrics
            await ws.close()
            # Once the last socket of the account closes, its channel is dropped.
            deadline = time.monotonic() + 5
            while producer.pubsub_numsub(f"luna-sender:{served}")[0][1] != 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        producer.close()
        assert svc.terminate() == 0
